// The HDF5 container writer: each unit's group and datasets are written as the unit arrives (memory:
// one unit), the tokenizer files and vocab_map.bin as byte datasets, and the manifest as root
// attributes last. The file is created exclusively as OUT.partial-PID, closed, read back with the
// HDF5 reader (every checksum), and renamed into place by OutputFile's rules.
#include "formats/hdf5/hdf5_writer.h"

#include <filesystem>

#include "core/error.h"
#include "core/fs_util.h"
#include "core/sha256.h"
#include "formats/hdf5/hdf5_layout.h"
#include "formats/hdf5/hdf5_model.h"
#include "formats/hdf5/hdf5_util.h"
#include "formats/manifest.h"
#include "formats/output_file.h"

namespace sf {

namespace {

using h5::Id;

constexpr OutputFileKind kHdf5Output = {"HDF5", "hdf5", is_hdf5_file};
constexpr uint64_t kMaxSideFileBytes = uint64_t(64) << 20;  // the tokenizers' own limit

// Creation properties shared by every object: no timestamps, so the same input gives the same bytes.
Id untimed(hid_t cls) {
  Id p(H5Pcreate(cls), H5Pclose);
  H5Pset_obj_track_times(p, false);
  return p;
}

class Hdf5Writer : public FormatWriter {
 public:
  explicit Hdf5Writer(const OutputTarget& target) : out_(target, kHdf5Output) {
    h5::silence_library();
    path_ = out_.temp_path();
    Id fcpl = untimed(H5P_FILE_CREATE);
    Id fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
    // The 1.8 object format: attributes over 64 KiB (a long manifest) go to dense storage.
    H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18);
    // Closing the file closes anything still open in it, so the close that writes the metadata is final.
    H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
    file_ = h5::check(H5Fcreate(path_.c_str(), H5F_ACC_EXCL, fcpl, fapl), H5Fclose, path_, "cannot create the HDF5 file");
  }

  const char* format_name() const override { return "hdf5"; }

  void write_unit(const EncodedUnit& u) override {
    const std::string name = h5::unit_group_name(u.kind, u.index);
    Id group;
    if (u.kind == UnitKind::Block) {
      if (blocks_.get() < 0) blocks_ = make_group(file_, h5::kBlocksGroup);
      group = make_group(blocks_, name);
      units_["blocks"].push_back(std::string("/") + h5::kBlocksGroup + "/" + name);
    } else {
      group = make_group(file_, name);
      units_[name] = "/" + name;
    }
    for (const auto& t : u.tensors) {
      write_tensor(group, t);
      bytes_ += t.data.size();
      params_ += t.rows() * t.cols();
    }
  }

  void add_file(const std::string& name, const std::string& src_path) override {
    files_.emplace_back(name, read_file(src_path, kMaxSideFileBytes));
  }
  void add_bytes(const std::string& name, const std::string& bytes) override { files_.emplace_back(name, bytes); }

  json finish(json manifest) override {
    json listed = json::array();
    if (!files_.empty()) {
      Id group = make_group(file_, h5::kFilesGroup);
      for (const auto& [name, bytes] : files_) {
        const std::string sha = sha256_hex(bytes.data(), bytes.size());
        Id d = write_dataset(group, name, h5::Elem::U8, {hsize_t(bytes.size())}, bytes.data());
        h5::put_string(d, "sha256", sha, path_);
        listed.push_back({{"path", name}, {"bytes", bytes.size()}, {"sha256", sha}});
      }
    }
    manifest["units"] = units_;
    manifest["files"] = listed;
    manifest["summary"] = {{"parameters", params_}, {"tensor_bytes", bytes_},
                           {"bits_per_weight", params_ ? 8.0 * double(bytes_) / double(params_) : 0.0}};
    manifest = seal_manifest(std::move(manifest));
    // The manifest whole, then each of its fields: strings and integers as themselves, the rest as
    // JSON text, for tools that read attributes one by one.
    h5::put_string(file_, "manifest", manifest.dump(), path_);
    for (const auto& [key, value] : manifest.items()) {
      if (value.is_string()) h5::put_string(file_, key.c_str(), value.get<std::string>(), path_);
      else if (value.is_number_integer()) h5::put_int(file_, key.c_str(), value.get<int64_t>(), path_);
      else h5::put_string(file_, key.c_str(), value.dump(), path_);
    }
    blocks_.close();
    if (!file_.close()) h5::fail_h5(path_, "cannot finish writing the HDF5 file (disk full?)");
    out_.commit([](const std::string& written) { check_hdf5_file(written); });
    // As convert reports it (like GGUF's): the one file written. The stored manifest lists /files.
    manifest["files"] = json::array({{{"path", std::filesystem::path(out_.path()).filename().string()},
                                      {"bytes", std::filesystem::file_size(out_.path())}}});
    return manifest;
  }

 private:
  Id make_group(hid_t parent, const std::string& name) {
    Id gcpl = untimed(H5P_GROUP_CREATE);
    return h5::check(H5Gcreate2(parent, name.c_str(), H5P_DEFAULT, gcpl, H5P_DEFAULT), H5Gclose, path_,
                     "cannot create group " + name);
  }

  // A dataset of `dims` elements of `elem`, chunked by rows (about 1 MiB a chunk), no filters.
  Id write_dataset(hid_t group, const std::string& name, h5::Elem elem, const std::vector<hsize_t>& dims,
                   const void* data) {
    Id dcpl = untimed(H5P_DATASET_CREATE);
    size_t row_bytes = h5::elem_size(elem);
    for (size_t i = 1; i < dims.size(); ++i) row_bytes *= size_t(dims[i]);
    std::vector<hsize_t> chunk = dims;
    chunk[0] = h5::chunk_rows(dims[0], row_bytes);
    if (dims[0] > 0) H5Pset_chunk(dcpl, int(chunk.size()), chunk.data());
    H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);
    Id space(H5Screate_simple(int(dims.size()), dims.data(), nullptr), H5Sclose);
    Id type = h5::elem_type(elem);
    Id d = h5::check(H5Dcreate2(group, name.c_str(), type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT), H5Dclose, path_,
                     "cannot create dataset " + name);
    if (dims[0] > 0) h5::check(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), path_, "cannot write " + name + " (disk full?)");
    return d;
  }

  void write_tensor(hid_t group, const EncodedTensor& t) {
    const auto& traits = qtype_traits(t.type);
    const size_t rows = size_t(t.rows()), row_bytes = t.row_bytes();
    for (const auto& part : h5::row_parts(t.type, size_t(t.cols()), t.group)) {
      const std::vector<uint8_t> bytes = part.first == 0 && part.pieces == 1 && part.piece_bytes == row_bytes
                                             ? t.data
                                             : h5::split_part(t.data.data(), rows, row_bytes, part);
      Id d = write_dataset(group, t.name + part.suffix, part.elem, h5::part_dims(t.type, part, t.shape), bytes.data());
      h5::put_string(d, "sha256", sha256_hex(bytes.data(), bytes.size()), path_);
      if (!part.suffix.empty()) continue;
      h5::put_string(d, "type", traits.name, path_);
      h5::put_ints(d, "shape", t.shape, path_);
      if (traits.grouped) h5::put_int(d, "group", int64_t(t.group), path_);
      h5::put_int(d, "row_bytes", int64_t(row_bytes), path_);
      h5::put_string(d, "tensor_sha256", sha256_hex(t.data.data(), t.data.size()), path_);
    }
  }

  OutputFile out_;
  std::string path_;
  Id file_, blocks_;
  json units_ = {{"blocks", json::array()}};
  std::vector<std::pair<std::string, std::string>> files_;
  uint64_t bytes_ = 0;
  int64_t params_ = 0;
};

}  // namespace

std::unique_ptr<FormatWriter> make_hdf5_writer(const OutputTarget& target, const ModelDesc&) {
  return std::make_unique<Hdf5Writer>(target);
}

}  // namespace sf
