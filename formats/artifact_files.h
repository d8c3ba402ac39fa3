#pragma once
// Where an artifact's files live: a directory, or a zip bundle (formats/zip_bundle.h). Artifact
// reads the manifest, the embedding rows, the .shard files and the vocabulary map through this, as
// byte ranges kept alive by whoever holds them, so one reader serves both: a bundle hands out
// ranges of its one map (nothing is extracted), a directory maps each file.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

namespace sf {

// A file's bytes; `keep` owns the memory they live in.
struct FileBytes {
  const uint8_t* data = nullptr;
  size_t size = 0;
  std::shared_ptr<const void> keep;
};

class ArtifactFiles {
 public:
  virtual ~ArtifactFiles() = default;
  // The artifact as the user named it.
  virtual const std::string& where() const = 0;
  // manifest.json, parsed and checked (formats/manifest.h read_manifest).
  virtual nlohmann::json manifest() const = 0;
  // How messages name one of its files: DIR/NAME, or FILE.zip:NAME.
  virtual std::string path_of(const std::string& name) const = 0;
  // The file's size without reading it, and the file mapped; both throw Error naming path_of(name)
  // when it is missing or not a regular file.
  virtual uint64_t size(const std::string& name) const = 0;
  virtual FileBytes map(const std::string& name) const = 0;
  // A path on disk holding the file, for readers that open files by name (the tokenizers). A
  // bundle writes it to a private temporary directory, removed with this object.
  virtual std::string local_path(const std::string& name) const = 0;
};

// The files of an artifact directory.
class DirectoryFiles : public ArtifactFiles {
 public:
  explicit DirectoryFiles(std::string dir) : dir_(std::move(dir)) {}
  const std::string& where() const override { return dir_; }
  nlohmann::json manifest() const override;
  std::string path_of(const std::string& name) const override { return dir_ + "/" + name; }
  uint64_t size(const std::string& name) const override;
  FileBytes map(const std::string& name) const override;
  std::string local_path(const std::string& name) const override { return path_of(name); }

 private:
  std::string dir_;
};

}  // namespace sf
