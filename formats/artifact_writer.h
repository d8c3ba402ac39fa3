#pragma once
// Writes an artifact directory safely: everything goes into a temporary sibling directory
// (OUT.partial-PID), every file is hashed as it is written, manifest.json is written last, the
// result is read back with the artifact reader, and only then is the directory renamed into place
// atomically: without --force only if OUT does not exist (renameat2 RENAME_NOREPLACE), with --force
// by exchanging it with an existing artifact (RENAME_EXCHANGE). A run that dies midway leaves no
// directory with a manifest; nothing the writer did not create is ever deleted.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sf {

using json = nlohmann::json;

struct OutputTarget {
  std::string dir;
  bool force = false;                // replace an existing artifact (never anything else)
  std::vector<std::string> inputs;   // what the conversion reads: OUT may not be or contain any
};

class ArtifactWriter {
 public:
  // Checks the target (docs/cli.md "convert"), handles stale OUT.partial-PID siblings, creates ours.
  explicit ArtifactWriter(const OutputTarget& target);
  ~ArtifactWriter();  // removes the files it wrote and its temporary directory unless commit() succeeded
  ArtifactWriter(const ArtifactWriter&) = delete;
  ArtifactWriter& operator=(const ArtifactWriter&) = delete;

  void write_file(const std::string& name, const std::vector<uint8_t>& bytes);
  void copy_file(const std::string& name, const std::string& src_path);
  // Adds "files" and manifest_sha256, writes manifest.json, reads the artifact back, renames into
  // place. Returns the manifest as written.
  json commit(json manifest);
  const std::string& out_dir() const { return out_; }

 private:
  void write_all(const std::string& name, const void* data, size_t n);
  void put_in_place();
  std::string out_, tmp_;
  bool force_;
  std::vector<std::string> written_;  // names in tmp_: the only files the destructor removes
  json files_ = json::array();
  bool created_ = false, committed_ = false;
};

}  // namespace sf
