#pragma once
// Writes an artifact directory safely: everything goes into a temporary sibling directory, every
// file is hashed as it is written, manifest.json is written last, and only then is the directory
// renamed into place. A run that dies midway leaves no directory with a manifest.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sf {

using json = nlohmann::json;

class ArtifactWriter {
 public:
  ArtifactWriter(std::string out_dir, bool force);
  ~ArtifactWriter();  // removes the temporary directory unless commit() succeeded
  ArtifactWriter(const ArtifactWriter&) = delete;
  ArtifactWriter& operator=(const ArtifactWriter&) = delete;

  void write_file(const std::string& name, const std::vector<uint8_t>& bytes);
  void copy_file(const std::string& name, const std::string& src_path);
  // Adds "files" (path, bytes, sha256 of every file) to the manifest, writes it, renames into place.
  json commit(json manifest);  // returns the manifest as written
  const std::string& out_dir() const { return out_; }

 private:
  std::string out_, tmp_;
  json files_ = json::array();
  bool committed_ = false;
};

}  // namespace sf
