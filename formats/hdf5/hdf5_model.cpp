#include "formats/hdf5/hdf5_model.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>

#include "core/checked.h"
#include "core/error.h"
#include "core/input_file.h"
#include "core/json_util.h"
#include "core/messages.h"
#include "core/sha256.h"
#include "formats/hdf5/hdf5_layout.h"
#include "formats/hdf5/hdf5_util.h"
#include "formats/manifest.h"
#include "formats/temp_files.h"
#include "formats/vocab_map.h"

namespace sf {

namespace fs = std::filesystem;
using h5::Id;

bool is_hdf5_file(const std::string& path) {
  static constexpr char kSignature[8] = {'\x89', 'H', 'D', 'F', '\r', '\n', '\x1a', '\n'};
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return false;
  char magic[8] = {};
  const bool yes = ::pread(fd, magic, 8, 0) == 8 && std::memcmp(magic, kSignature, 8) == 0;
  ::close(fd);
  return yes;
}

namespace {

constexpr size_t kMaxManifestBytes = size_t(16) << 20;
constexpr uint64_t kMaxStoredFileBytes = uint64_t(64) << 20;
constexpr size_t kMaxSideFiles = 8;

// What an opened container keeps alive: the reassembled tensors, in a mapped temporary file (so
// low-memory execution can release and re-read them, and opening takes one tensor's memory), and its
// tokenizer's files, written to a private temporary directory for the tokenizer readers (which read
// files).
struct Held {
  MappedTempStore tensors{"hdf5"};
  PrivateTempFiles files{"hdf5"};
};

// A tensor reassembled into Held::tensors, given its view once the store is mapped.
struct StoredTensor {
  std::string name;
  QType type;
  size_t group;
  std::vector<int64_t> shape;
  uint64_t offset, bytes;
};

class Reader {
 public:
  // hash: check every sha256 attribute; keep: hold the tensors for an Artifact (else each tensor is
  // freed once checked, so checking a file takes one tensor's memory).
  Reader(const std::string& path, bool hash, bool keep) : path_(path), hash_(hash), keep_(keep) {
    h5::silence_library();
    if (!is_hdf5_file(path)) fail_file(path, "is not an HDF5 file (bad signature)");
    size_ = InputFile(path).size();
    // Read-only needs no lock, and a file system without flock (some network mounts) must not stop it.
    Id fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
    H5Pset_file_locking(fapl, false, true);
    file_ = h5::check(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl), H5Fclose, path, "cannot open the HDF5 file");
    root_ = h5::check(H5Gopen2(file_, "/", H5P_DEFAULT), H5Gclose, path, "has no root group");
  }

  std::optional<Artifact> read() {
    read_manifest_attribute();
    auto held = std::make_shared<Held>();
    std::map<std::string, TensorView> views;
    std::set<std::string> root_names = {"embedding", "head"};
    Id blocks;
    if (desc_.n_layers > 0) {
      blocks = open_group(root_, h5::kBlocksGroup, "/");
      root_names.insert(h5::kBlocksGroup);
      expect_links(blocks, uint64_t(desc_.n_layers), std::string("/") + h5::kBlocksGroup);
    }
    json units = {{"blocks", json::array()}};
    for (const auto& [kind, index] : unit_order(desc_)) {
      const std::string name = h5::unit_group_name(kind, index);
      const bool block = kind == UnitKind::Block;
      const std::string where = block ? std::string("/") + h5::kBlocksGroup + "/" + name : "/" + name;
      Id g = open_group(block ? blocks.get() : root_.get(), name, where);
      if (block) units["blocks"].push_back(where);
      else units[name] = where;
      const std::vector<TensorSpec> specs = unit_tensors(desc_, kind, index);
      uint64_t datasets = 0;
      for (const auto& spec : specs) datasets += read_tensor(g, where, spec, *held);
      expect_links(g, datasets, where);
    }
    held->tensors.map();
    for (const auto& t : stored_)
      views[t.name] = make_view(path_, t.name, t.type, t.group, t.shape, held->tensors.at(t.offset), size_t(t.bytes));
    if (manifest_.value("units", json()) != units)
      fail_file(path_, "the manifest's units are not the groups the model's layout has");
    const json listed = manifest_.value("files", json::array());
    if (!listed.is_array() || listed.size() > kMaxSideFiles) fail_file(path_, "the manifest's files is not a short list");
    if (!listed.empty()) root_names.insert(h5::kFilesGroup);
    expect_links(root_, root_names.size(), "/");
    std::map<std::string, std::string> files = read_files(listed);
    ArtifactTokenizer tokenizer = extract_tokenizer(files, *held);
    std::shared_ptr<const VocabMap> map;
    if (manifest_.contains("vocab_map")) map = std::make_shared<const VocabMap>(read_vocab_map(files));
    json m = manifest_;
    m["container"] = "hdf5";
    m["files"] = json::array({{{"path", fs::path(path_).filename().string()}, {"bytes", size_}}});
    if (!keep_) return std::nullopt;
    return Artifact(path_, std::move(m), desc_, std::move(views), held, std::move(tokenizer), map);
  }

 private:
  // The manifest attribute: a shardforge manifest of this version, intact (manifest_sha256), with a
  // model description the executor can run.
  void read_manifest_attribute() {
    const auto text = h5::get_string(root_, "manifest", path_, kMaxManifestBytes);
    if (!text) fail_file(path_, "has no manifest attribute (not a shardforge HDF5 file)");
    manifest_ = parse_json(*text, path_ + ": manifest attribute");
    if (!manifest_.is_object() || manifest_.value("format", json()) != json(kArtifactFormat))
      fail_file(path_, "the manifest attribute is not a shardforge manifest");
    if (manifest_.value("format_version", json(0)) != json(kArtifactVersion))
      fail_file(path_, "artifact format version " + manifest_.value("format_version", json(0)).dump() +
                           " is not supported (this shardforge reads version " + std::to_string(kArtifactVersion) + ")");
    const json stored = manifest_.value(kManifestHashKey, json());
    json unsealed = manifest_;
    unsealed.erase(kManifestHashKey);
    if (!stored.is_string() || seal_manifest(unsealed)[kManifestHashKey] != stored)
      fail_file(path_, "manifest_sha256 is missing or differs from the manifest's content (edited or damaged)");
    try {
      desc_ = ModelDesc::from_json(manifest_.at("model"));
      desc_.validate();
    } catch (const Error& e) {
      fail_file(path_, "manifest: " + e.message());
    } catch (const json::exception& e) {
      fail_file(path_, std::string("manifest: ") + e.what());
    }
  }

  // The link `name` of `parent` must be a hard link (never soft or external: nothing is followed).
  void hard_link(hid_t parent, const std::string& name, const std::string& where) {
    const htri_t exists = H5Lexists(parent, name.c_str(), H5P_DEFAULT);
    if (exists <= 0) h5::fail_h5(path_, "lacks " + where);
    H5L_info_t info{};
    h5::check(H5Lget_info(parent, name.c_str(), &info, H5P_DEFAULT), path_, "cannot examine the link " + where);
    if (info.type != H5L_TYPE_HARD)
      fail_file(path_, where + " is " + (info.type == H5L_TYPE_SOFT ? "a soft" : info.type == H5L_TYPE_EXTERNAL ? "an external" : "a user-defined") +
                           " link; shardforge follows no links");
  }

  Id open_group(hid_t parent, const std::string& name, const std::string& where) {
    hard_link(parent, name, where);
    H5O_info_t info{};
    h5::check(H5Oget_info_by_name(parent, name.c_str(), &info, H5P_DEFAULT), path_, "cannot examine " + where);
    if (info.type != H5O_TYPE_GROUP) fail_file(path_, where + " is not a group");
    return h5::check(H5Gopen2(parent, name.c_str(), H5P_DEFAULT), H5Gclose, path_, "cannot open group " + where);
  }

  // A group holds exactly what the layout puts there: anything more is refused (never walked).
  void expect_links(hid_t group, uint64_t n, const std::string& where) {
    H5G_info_t info{};
    h5::check(H5Gget_info(group, &info), path_, "cannot examine group " + where);
    if (info.nlinks != n)
      fail_file(path_, "group " + where + " holds " + std::to_string(info.nlinks) + " links where the layout has " +
                           std::to_string(n));
  }

  // Opens dataset `name` of `group` and checks it is `elem` values of `dims`, stored plainly in
  // this file (no filters, no external or virtual storage), and that its bytes fit in what the file
  // has left to give; reads it.
  std::vector<uint8_t> read_dataset(hid_t group, const std::string& name, const std::string& where, h5::Elem elem,
                                    const std::vector<hsize_t>& dims) {
    const std::string what = where + "/" + name;
    hard_link(group, name, what);
    H5O_info_t oinfo{};
    h5::check(H5Oget_info_by_name(group, name.c_str(), &oinfo, H5P_DEFAULT), path_, "cannot examine " + what);
    if (oinfo.type != H5O_TYPE_DATASET) fail_file(path_, what + " is not a dataset");
    Id d = h5::check(H5Dopen2(group, name.c_str(), H5P_DEFAULT), H5Dclose, path_, "cannot open dataset " + what);
    Id type = h5::check(H5Dget_type(d), H5Tclose, path_, what + " has no type");
    Id want = h5::elem_type(elem);
    if (H5Tequal(type, want) <= 0) fail_file(path_, what + " does not have the element type its tensor's type needs");
    Id space = h5::check(H5Dget_space(d), H5Sclose, path_, what + " has no dataspace");
    const int rank = H5Sget_simple_extent_ndims(space);
    std::vector<hsize_t> got(rank > 0 && rank <= 2 ? size_t(rank) : 0);
    if (H5Sget_simple_extent_type(space) != H5S_SIMPLE || rank != int(dims.size()) ||
        H5Sget_simple_extent_dims(space, got.data(), nullptr) != rank || got != dims)
      fail_file(path_, what + " has other dimensions than the tensor's shape and type give");
    Id dcpl = h5::check(H5Dget_create_plist(d), H5Pclose, path_, "cannot examine " + what);
    if (H5Pget_nfilters(dcpl) != 0) fail_file(path_, what + " is filtered (compressed); shardforge stores no filters");
    if (H5Pget_external_count(dcpl) != 0) fail_file(path_, what + " keeps its data in external files; refused");
    const H5D_layout_t layout = H5Pget_layout(dcpl);
    if (layout != H5D_CONTIGUOUS && layout != H5D_CHUNKED && layout != H5D_COMPACT)
      fail_file(path_, what + " has a virtual or unknown storage layout; refused");
    uint64_t bytes = h5::elem_size(elem);
    for (hsize_t x : dims) bytes = checked_mul(bytes, uint64_t(x), path_ + ": " + what + " size");
    // Every byte of an unfiltered dataset is in the file: the sum over all datasets cannot exceed it.
    read_bytes_ = checked_add(read_bytes_, bytes, path_ + ": dataset sizes");
    if (read_bytes_ > size_) fail_file(path_, what + " needs more bytes than the file holds (lying dimensions?)");
    std::vector<uint8_t> out(static_cast<size_t>(bytes));
    if (bytes) h5::check(H5Dread(d, want, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()), path_, "cannot read " + what);
    if (hash_) {
      const auto sha = h5::get_string(d, "sha256", path_, 64);
      if (!sha || *sha != sha256_hex(out.data(), out.size())) fail_file(path_, what + ": sha256 differs from its attribute");
    }
    return out;
  }

  // Reassembles one canonical tensor from its datasets; returns how many datasets it has.
  uint64_t read_tensor(hid_t g, const std::string& where, const TensorSpec& spec, Held& held) {
    const std::string what = where + "/" + spec.name;
    hard_link(g, spec.name, what);
    Id d = h5::check(H5Oopen(g, spec.name.c_str(), H5P_DEFAULT), H5Oclose, path_, "cannot open " + what);
    const auto type_name = h5::get_string(d, "type", path_, 32);
    const auto type = type_name ? qtype_from_name(*type_name) : std::nullopt;
    if (!type) fail_file(path_, what + " has no storage type shardforge knows");
    const auto shape = h5::get_ints(d, "shape", path_, 2);
    if (!shape || *shape != spec.shape) fail_file(path_, what + "'s shape attribute is not the model's shape for it");
    const bool grouped = qtype_traits(*type).grouped;
    const auto group = h5::get_int(d, "group", path_);
    if (grouped != bool(group) || (group && (*group < 2 || *group % 2 || *group > (int64_t(1) << 30))))
      fail_file(path_, what + ": group size attribute missing, misplaced or not an even number from 2");
    const std::optional<std::string> tensor_sha = hash_ ? h5::get_string(d, "tensor_sha256", path_, 64) : std::nullopt;
    d.close();
    const size_t cols = size_t(spec.shape.back()), rows = spec.shape.size() == 2 ? size_t(spec.shape[0]) : 1;
    const size_t g_size = group ? size_t(*group) : 0;
    const size_t row_bytes = qtype_traits(*type).row_bytes(cols, g_size);
    const uint64_t total = checked_mul(uint64_t(rows), uint64_t(row_bytes), path_ + ": " + what + " size");
    if (total > size_) fail_file(path_, what + " would need more bytes than the file holds");
    const auto parts = h5::row_parts(*type, cols, g_size);
    std::vector<uint8_t> bytes(static_cast<size_t>(total));
    for (const auto& p : parts) {
      const std::vector<uint8_t> part =
          read_dataset(g, spec.name + p.suffix, where, p.elem, h5::part_dims(*type, p, spec.shape));
      h5::join_part(part.data(), rows, row_bytes, p, bytes.data());
    }
    if (hash_ && (!tensor_sha || *tensor_sha != sha256_hex(bytes.data(), bytes.size())))
      fail_file(path_, what + ": the reassembled tensor's sha256 differs from its tensor_sha256 attribute");
    make_view(path_, spec.name, *type, g_size, spec.shape, bytes.data(), bytes.size());  // checks it
    if (keep_)
      stored_.push_back({spec.name, *type, g_size, spec.shape, held.tensors.append(bytes.data(), bytes.size()),
                         uint64_t(bytes.size())});
    return parts.size();
  }

  // /files: each file the manifest lists, as a byte dataset with its size and sha256.
  std::map<std::string, std::string> read_files(const json& listed) {
    std::map<std::string, std::string> files;
    if (listed.empty()) return files;
    const std::string where = std::string("/") + h5::kFilesGroup;
    Id g = open_group(root_, h5::kFilesGroup, where);
    expect_links(g, listed.size(), where);
    for (const auto& f : listed) {
      if (!f.is_object()) fail_file(path_, "the manifest's files[] entry is not an object");
      const std::string name = check_artifact_file_name(f.value("path", json()), path_, "files[].path");
      const int64_t n = json_int(f, "bytes", path_ + ": files[]", 0, int64_t(kMaxStoredFileBytes));
      const bool keep_hash = hash_;
      hash_ = true;  // small, and tokenizers and the vocabulary map are always checked
      std::vector<uint8_t> b = read_dataset(g, name, where, h5::Elem::U8, {hsize_t(n)});
      hash_ = keep_hash;
      if (f.value("sha256", json()) != json(sha256_hex(b.data(), b.size())))
        fail_file(path_, where + "/" + name + ": sha256 differs from the manifest");
      if (!files.emplace(name, std::string(b.begin(), b.end())).second)
        fail_file(path_, "the manifest lists " + name + " twice");
    }
    return files;
  }

  ArtifactTokenizer extract_tokenizer(const std::map<std::string, std::string>& files, Held& held) {
    const json t = manifest_.value("tokenizer", json());
    if (t.is_null()) return {};
    if (!t.is_object() || !t.contains("kind") || !t["kind"].is_string() || !t.contains("files") ||
        !t["files"].is_array() || t["files"].empty() || t["files"].size() > 4)
      fail_file(path_, "the manifest's tokenizer entry is malformed");
    ArtifactTokenizer out;
    out.kind = t["kind"].get<std::string>();
    for (const auto& f : t["files"]) {
      if (!f.is_object()) fail_file(path_, "the manifest's tokenizer.files[] entry is not an object");
      const std::string name = check_artifact_file_name(f.value("name", json()), path_, "tokenizer.files[].name");
      const auto it = files.find(name);
      if (it == files.end() || f.value("sha256", json()) != json(sha256_hex(it->second.data(), it->second.size())))
        fail_file(path_, "tokenizer file " + name + " is not in /files with the manifest's sha256");
      const std::string p = held.files.add(name, it->second.data(), it->second.size());
      out.paths.push_back(p);
      out.sha256.push_back(f["sha256"].get<std::string>());
    }
    return out;
  }

  VocabMap read_vocab_map(const std::map<std::string, std::string>& files) {
    const json& e = manifest_["vocab_map"];
    if (!e.is_object()) fail_file(path_, "the manifest's vocab_map is not an object");
    const std::string name = check_artifact_file_name(e.value("file", json()), path_, "vocab_map.file");
    const int64_t old_size = json_int(e, "old_vocab_size", path_ + ": vocab_map", 1, kMaxMappedVocab);
    const int64_t kept = json_int(e, "kept", path_ + ": vocab_map", 1, old_size);
    if (kept != desc_.vocab_size)
      fail_file(path_, "vocab_map keeps " + std::to_string(kept) + " ids but the model has " + std::to_string(desc_.vocab_size));
    const auto it = files.find(name);
    if (it == files.end() || e.value("sha256", json()) != json(sha256_hex(it->second.data(), it->second.size())))
      fail_file(path_, "vocab_map's file is not in /files with the manifest's sha256");
    return VocabMap::parse(it->second, old_size, kept, path_ + ": /files/" + name);
  }

  std::string path_;
  bool hash_, keep_;
  uint64_t size_ = 0, read_bytes_ = 0;
  std::vector<StoredTensor> stored_;
  Id file_, root_;
  json manifest_;
  ModelDesc desc_;
};

}  // namespace

Artifact open_hdf5_model(const std::string& path) { return std::move(*Reader(path, false, true).read()); }

void check_hdf5_file(const std::string& path) { Reader(path, true, false).read(); }

std::vector<std::string> verify_hdf5(const std::string& path) {
  try {
    check_hdf5_file(path);
  } catch (const Error& e) {
    return {e.message()};
  }
  return {};
}

}  // namespace sf
