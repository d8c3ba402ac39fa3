#include "formats/artifact_readers.h"

#include "core/error.h"
#include "core/fs_util.h"
#include "formats/gguf/gguf_model.h"
#include "formats/hdf5/hdf5_model.h"
#include "formats/manifest.h"
#include "formats/zip_bundle.h"

namespace sf {

namespace {

bool has_manifest(const std::string& path) { return file_exists(path + "/" + kManifestName); }
Artifact open_directory(const std::string& path) { return Artifact(path); }

// A GGUF file has no checksums of its own: intact means it opens (every tensor inside the file,
// shapes and metadata consistent with the family).
std::vector<std::string> verify_gguf(const std::string& path) {
  try {
    open_gguf_model(path);
  } catch (const Error& e) {
    return {e.message()};
  }
  return {};
}

}  // namespace

const std::vector<ArtifactReader>& artifact_readers() {
  static const std::vector<ArtifactReader> table = {
      {"gguf", "a GGUF v3 file (shardforge's or llama.cpp's)", is_gguf_file, open_gguf_model, verify_gguf},
      {"hdf5", "an HDF5 file from convert --format hdf5", is_hdf5_file, open_hdf5_model, verify_hdf5},
      {"zip", "a zip bundle of an artifact (--format zip, shardforge pack)", is_zip_bundle, open_zip_bundle,
       verify_zip_bundle},
      // An ONNX export directory is refused by open (shardforge does not run it) and its graphs are
      // checked by verify.
      {"shards", "an artifact directory: manifest.json, .shard files, embedding rows", has_manifest, open_directory,
       verify_artifact},
  };
  return table;
}

const ArtifactReader& reader_for(const std::string& path) {
  for (const auto& r : artifact_readers())
    if (r.recognises(path)) return r;
  return artifact_readers().back();
}

bool is_artifact(const std::string& path) {
  for (const auto& r : artifact_readers())
    if (r.recognises(path)) return true;
  return false;
}

Artifact open_model(const std::string& path) { return reader_for(path).open(path); }

}  // namespace sf
