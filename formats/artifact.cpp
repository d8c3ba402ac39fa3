#include "formats/artifact.h"

#include <filesystem>
#include <set>

#include "core/error.h"
#include "core/fs_util.h"
#include "core/input_file.h"
#include "core/json_util.h"
#include "core/sha256.h"
#include "formats/manifest.h"
#include "formats/onnx/onnx_writer.h"

namespace sf {

namespace fs = std::filesystem;

namespace {

// The manifest's vocab_map entry and its file (docs/format.md): the map must keep exactly the
// model's rows, and the bytes parsed must have the sha256 the manifest gives (the one `files`
// lists): a map that is not the one written would send tokens to other rows without a word.
VocabMap read_vocab_map(const ArtifactFiles& files, const json& m, const ModelDesc& desc) {
  const std::string mpath = files.path_of(kManifestName);
  const json& e = m["vocab_map"];  // an object with a plain file name: checked by read_manifest
  const std::string name = e.at("file").get<std::string>();
  const int64_t old_size = json_int(e, "old_vocab_size", mpath + ": vocab_map", 1, kMaxMappedVocab);
  const int64_t kept = json_int(e, "kept", mpath + ": vocab_map", 1, old_size);
  if (kept != desc.vocab_size)
    fail_file(mpath, "vocab_map keeps " + std::to_string(kept) + " ids but the model has " +
                         std::to_string(desc.vocab_size));
  bool listed = false;
  for (const auto& f : m.value("files", json::array()))
    if (f.is_object() && f.value("path", json()) == json(name))
      listed = f.value("sha256", json()) == e.value("sha256", json());
  if (!listed) fail_file(mpath, "vocab_map's file and sha256 are not the ones listed in files");
  const std::string path = files.path_of(name);
  // The size is checked before the file is read, so a lying manifest allocates nothing.
  if (files.size(name) != uint64_t(old_size) * 4)
    fail_file(path, "is not " + std::to_string(uint64_t(old_size) * 4) + " bytes (" + std::to_string(old_size) +
                        " ids, as the manifest says)");
  const FileBytes b = files.map(name);
  const std::string bytes(reinterpret_cast<const char*>(b.data), b.size);
  if (sha256_hex(bytes.data(), bytes.size()) != e.value("sha256", json()))
    fail_file(path, "sha256 differs from the manifest (the artifact's vocabulary map was changed)");
  return VocabMap::parse(bytes, old_size, kept, path);
}

}  // namespace

Artifact::Artifact(const std::string& dir) : Artifact(std::make_shared<const DirectoryFiles>(dir)) {}

Artifact::Artifact(std::shared_ptr<const ArtifactFiles> files) : dir_(files->where()), files_(files) {
  const ArtifactFiles& fs = *files_;
  const std::string& dir = dir_;
  const std::string mpath = fs.path_of(kManifestName);
  manifest_ = fs.manifest();
  if (manifest_.contains("onnx") && !manifest_.contains("units"))
    fail_file(dir, "is an ONNX export (--format onnx): run its model.onnx with an ONNX runtime; shardforge runs the "
                   "artifacts of --format shards and GGUF files",
              ErrorKind::Unsupported);
  try {
    try {
      desc_ = ModelDesc::from_json(manifest_.at("model"));
    } catch (const Error& e) {
      fail_file(mpath, e.message());
    }
    const json& units = manifest_.at("units");
    const json& emb = units.at("embedding");
    const std::string efile = fs.path_of(emb.at("file").get<std::string>());
    embedding_ = fs.map(emb.at("file").get<std::string>());
    const auto type = qtype_from_name(emb.at("type").get<std::string>());
    if (!type) fail_file(mpath, "embedding has unknown type");
    const size_t group = emb.contains("group") ? size_t(json_int(emb, "group", mpath, 0, 1 << 30)) : 0;
    views_["embed.weight"] = make_view(efile, "embed.weight", *type, group, json_int_list(emb, "shape", mpath),
                                       embedding_.data, embedding_.size);
    // Loaders that seek to one token's row use this number: it must be the one the type implies.
    if (json_int(emb, "row_bytes", mpath, 0) != int64_t(views_["embed.weight"].row_bytes))
      fail_file(mpath, "units.embedding.row_bytes disagrees with the embedding's type and width");
    // Each shard file with the canonical tensors its unit must hold: exactly those, so a manifest
    // whose settings contradict the tensors (biases it says do not exist, a norm kind without the
    // norm's bias) is refused instead of run with part of its weights ignored.
    std::vector<std::pair<std::string, std::vector<TensorSpec>>> files;
    for (const auto& b : units.at("blocks"))
      files.emplace_back(b.get<std::string>(), unit_tensors(desc_, UnitKind::Block, int64_t(files.size())));
    if (int64_t(files.size()) != desc_.n_layers)
      fail_file(mpath, "lists " + std::to_string(files.size()) + " blocks for a model with " +
                           std::to_string(desc_.n_layers) + " layers");
    files.emplace_back(units.at("head").get<std::string>(), unit_tensors(desc_, UnitKind::Head, 0));
    // The learned position table (without it, the check below names the missing embed.pos.weight).
    if (units.contains("positions")) {
      if (desc_.positional != PositionalKind::Learned)
        fail_file(mpath, "units.positions is listed but the model has no learned positions");
      std::vector<TensorSpec> pos;
      for (auto& t : unit_tensors(desc_, UnitKind::Embedding, 0))
        if (t.role == TensorRole::PositionEmbedding) pos.push_back(t);
      files.emplace_back(units.at("positions").get<std::string>(), pos);
    }
    for (const auto& [f, specs] : files) {
      const FileBytes b = fs.map(f);
      shards_.push_back(std::make_unique<ShardFile>(fs.path_of(f), b.data, b.size, b.keep));
      std::set<std::string> expected;
      for (const auto& t : specs) expected.insert(t.name);
      for (const auto& t : shards_.back()->tensors()) {
        if (!expected.count(t.name))
          fail_file(fs.path_of(f), "holds tensor " + t.name + ", which this unit of the model the manifest " +
                                       "describes does not have (settings and tensors disagree)");
        views_[t.name] = t;
      }
    }
    read_tokenizer_entry(mpath);
    if (manifest_.contains("vocab_map"))
      vocab_map_ = std::make_shared<const VocabMap>(read_vocab_map(fs, manifest_, desc_));
  } catch (const json::exception& e) {
    fail_file(mpath, std::string("malformed manifest: ") + e.what());
  }
  check_tensors();
}

Artifact::Artifact(std::string path, json manifest, ModelDesc desc, std::map<std::string, TensorView> views,
                   std::shared_ptr<const void> keep, ArtifactTokenizer tokenizer,
                   std::shared_ptr<const VocabMap> vocab_map)
    : dir_(std::move(path)), manifest_(std::move(manifest)), desc_(std::move(desc)), tokenizer_(std::move(tokenizer)),
      views_(std::move(views)), vocab_map_(std::move(vocab_map)), keep_(std::move(keep)) {
  check_tensors();
}

// Every canonical tensor must be present with the shape the hyper-parameters imply.
void Artifact::check_tensors() const {
  for (const auto& spec : all_tensors(desc_)) {
    auto it = views_.find(spec.name);
    if (it == views_.end()) fail_file(dir_, "artifact lacks tensor " + spec.name);
    if (it->second.shape != spec.shape) fail_file(dir_, "tensor " + spec.name + " has the wrong shape");
  }
}

const TensorView& Artifact::tensor(const std::string& canonical) const {
  auto it = views_.find(canonical);
  if (it == views_.end()) fail_file(dir_, "artifact lacks tensor " + canonical);
  return it->second;
}

// read_manifest has checked the shape of the entry and its file names.
void Artifact::read_tokenizer_entry(const std::string& mpath) {
  if (!manifest_.contains("tokenizer") || manifest_["tokenizer"].is_null()) return;
  const json& t = manifest_["tokenizer"];
  if (!t.contains("kind") || !t["kind"].is_string() || t["kind"].get<std::string>().empty())
    fail_file(mpath, "tokenizer.kind is not a name");
  std::map<std::string, json> listed;
  for (const auto& f : manifest_.value("files", json::array()))
    if (f.is_object() && f.contains("path") && f["path"].is_string()) listed[f["path"].get<std::string>()] = f.value("sha256", json());
  for (const auto& f : t["files"]) {
    const std::string name = f["name"].get<std::string>();
    const json sha = f.value("sha256", json());
    const auto it = listed.find(name);
    if (!sha.is_string() || it == listed.end() || it->second != sha)
      fail_file(mpath, "tokenizer file " + name + " is not listed in files with the same sha256");
    tokenizer_.paths.push_back(files_->local_path(name));
    tokenizer_.sha256.push_back(sha.get<std::string>());
  }
  tokenizer_.kind = t["kind"].get<std::string>();
}

uint64_t Artifact::file_bytes() const {
  uint64_t n = 0;
  for (const auto& f : manifest_.value("files", json::array()))
    if (f.is_object() && f.contains("bytes") && f["bytes"].is_number_unsigned()) n += f["bytes"].get<uint64_t>();
  return n;
}

std::vector<std::string> verify_artifact(const std::string& dir) {
  std::vector<std::string> problems;
  json m;
  try {
    m = read_manifest(dir);
  } catch (const Error& e) {
    return {e.message()};
  }
  std::set<std::string> listed = {kManifestName};
  if (!m.contains("files") || !m["files"].is_array()) return {dir + "/manifest.json: has no file list"};
  for (const auto& f : m["files"]) {
    const std::string name = f["path"].get<std::string>(), path = dir + "/" + name;  // checked by read_manifest
    listed.insert(name);
    std::error_code ec;
    if (!fs::exists(fs::symlink_status(path, ec))) {
      problems.push_back(path + ": missing");
      continue;
    }
    uint64_t size = 0;
    try {
      size = InputFile(path).size();  // a FIFO, device or /proc entry is named as such, never opened blocking
    } catch (const Error& e) {
      problems.push_back(e.message());
      continue;
    }
    const bool listed_size = f.contains("bytes") && f["bytes"].is_number_unsigned();
    if (!listed_size || size != f["bytes"].get<uint64_t>()) {
      problems.push_back(path + ": size " + std::to_string(size) + " differs from the manifest's " +
                         (listed_size ? f["bytes"].dump() : std::string("(none)")));
      continue;
    }
    try {
      if (!f.contains("sha256") || f["sha256"] != json(sha256_file(path))) problems.push_back(path + ": sha256 differs from the manifest");
    } catch (const Error& e) {
      problems.push_back(e.message());
    }
  }
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (!listed.count(e.path().filename().string()))
      problems.push_back(e.path().string() + ": not listed in the manifest");
  if (problems.empty()) {
    try {
      if (m.contains("onnx")) check_onnx_output(dir);  // graphs parse, weights inside the data file
      else Artifact a(dir);
    } catch (const Error& e) {
      problems.push_back(e.message());
    }
  }
  return problems;
}

}  // namespace sf
