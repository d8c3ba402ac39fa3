#pragma once
// The zip bundle (--format zip, `shardforge pack`; docs/format.md "Zip bundle"): an artifact's
// files as the entries of one zip file, stored (never compressed), each entry's data starting at a
// multiple of 4096 bytes from the start of the file. The reader maps the file once and hands out
// each entry as a range of that map, so the executor reads every .shard in place, as from a
// directory. Opening checks the archive (core/zip_archive.h: libzip and our walk of the central
// directory must agree; no overlaps, nothing past the end) and then what a bundle must be: plain
// entry names, each once, regular files only, stored and aligned, exactly the files the manifest
// lists with the sizes it gives.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/mapped_file.h"
#include "formats/artifact.h"
#include "formats/artifact_files.h"
#include "formats/temp_files.h"

namespace sf {

inline constexpr uint64_t kBundleAlign = 4096;
// The extra field that pads each local header so the data after it is aligned: Android's zipalign
// id, whose data is a little-endian u16 alignment followed by zero bytes.
inline constexpr uint16_t kAlignExtraId = 0xD935;

// A regular file starting with a zip local header whose archive holds manifest.json. Cheap: the
// first entry's name (the writer puts manifest.json first), else libzip's directory. Never throws.
bool is_zip_bundle(const std::string& path);

class ZipBundleFiles : public ArtifactFiles {
 public:
  // Opens and checks the bundle; throws Error (one line naming the file and the entry).
  explicit ZipBundleFiles(const std::string& path);

  const std::string& where() const override { return path_; }
  nlohmann::json manifest() const override { return manifest_; }
  std::string path_of(const std::string& name) const override { return path_ + ":" + name; }
  uint64_t size(const std::string& name) const override { return entry(name).size; }
  FileBytes map(const std::string& name) const override;
  std::string local_path(const std::string& name) const override;

  struct Entry {
    std::string name;
    uint64_t offset = 0, size = 0;
  };
  const std::vector<Entry>& entries() const { return entries_; }  // in the archive's order

 private:
  const Entry& entry(const std::string& name) const;
  std::string path_;
  std::shared_ptr<MappedFile> map_;
  std::vector<Entry> entries_;
  std::map<std::string, size_t> by_name_;
  nlohmann::json manifest_;
  mutable std::unique_ptr<PrivateTempFiles> extracted_;
  mutable std::map<std::string, std::string> local_paths_;
};

// The bundle as an artifact (formats/artifact_readers.h opens any artifact).
Artifact open_zip_bundle(const std::string& path);
// verify: the checks of opening, every entry's sha256 against the manifest, then the artifact's
// structure. Every problem found (empty: intact); never throws for a damaged bundle.
std::vector<std::string> verify_zip_bundle(const std::string& path);

}  // namespace sf
