#pragma once
// Reading an artifact (a directory, or a zip bundle of the same files): the manifest, and every tensor as a view into mapped files.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/mapped_file.h"
#include "core/model_desc.h"
#include "formats/artifact_files.h"
#include "formats/shard_file.h"
#include "formats/vocab_map.h"

namespace sf {

// The manifest's "tokenizer" entry: which kind, and its files in the kind's order (tokenizers/
// reads them). Each file is also listed in "files" with the same sha256, so verify checks it.
struct ArtifactTokenizer {
  std::string kind;  // empty when the artifact has none
  std::vector<std::string> paths;
  std::vector<std::string> sha256;
};

class Artifact {
 public:
  explicit Artifact(const std::string& dir);  // maps files and checks structure; no hashing
  // The same over any container of the artifact's files (a zip bundle: formats/zip_bundle.h).
  explicit Artifact(std::shared_ptr<const ArtifactFiles> files);
  // A model another reader mapped and validated (a GGUF file: formats/gguf/gguf_model.h; an HDF5
  // file's tensors reassembled into a mapped temporary file), under `path`: its manifest-like
  // description, and views into read-only file maps `keep` owns. Every canonical tensor must be
  // there with its shape, as for a directory. The views must be file maps, never memory the reader
  // filled: low-memory execution releases their pages and reads them again (executor/unit_stream.h).
  Artifact(std::string path, json manifest, ModelDesc desc, std::map<std::string, TensorView> views,
           std::shared_ptr<const void> keep, ArtifactTokenizer tokenizer = {},
           std::shared_ptr<const VocabMap> vocab_map = nullptr);

  const std::string& dir() const { return dir_; }
  const json& manifest() const { return manifest_; }
  const ModelDesc& desc() const { return desc_; }
  const TensorView& tensor(const std::string& canonical) const;
  bool has(const std::string& canonical) const { return views_.count(canonical) > 0; }
  const ArtifactTokenizer& tokenizer() const { return tokenizer_; }
  // The vocabulary map of a trimmed artifact (vocab_map.bin), or null: then the model's ids are the
  // tokenizer's.
  const VocabMap* vocab_map() const { return vocab_map_.get(); }
  uint64_t file_bytes() const;         // all files listed in the manifest

 private:
  void read_tokenizer_entry(const std::string& mpath);
  std::string dir_;
  json manifest_;
  ModelDesc desc_;
  ArtifactTokenizer tokenizer_;
  std::shared_ptr<const ArtifactFiles> files_;
  FileBytes embedding_;
  std::vector<std::unique_ptr<ShardFile>> shards_;
  std::map<std::string, TensorView> views_;
  std::shared_ptr<const VocabMap> vocab_map_;
  std::shared_ptr<const void> keep_;
  void check_tensors() const;
};

// Checks an artifact completely: manifest, presence, size and sha256 of every listed file, no
// unlisted files, and the structure of every shard. Returns the problems found (empty = good).
std::vector<std::string> verify_artifact(const std::string& dir);

}  // namespace sf
