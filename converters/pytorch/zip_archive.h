#pragma once
// A read-only zip archive (torch.save's container). libzip opens, checks and inflates; entries
// stored uncompressed are also located in a memory map of the file so tensors read in place.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/mapped_file.h"

struct zip;

namespace sf {

struct ZipEntry {
  std::string name;
  uint64_t index = 0;
  uint64_t size = 0;            // uncompressed bytes
  bool stored = false;          // no compression: readable in place
  uint64_t data_offset = 0;     // file offset of the bytes, when stored
};

class ZipArchive {
 public:
  explicit ZipArchive(const std::string& path);
  ZipArchive(const ZipArchive&) = delete;
  ZipArchive& operator=(const ZipArchive&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(const std::string& name) const;
  std::vector<uint8_t> read(const ZipEntry& e) const;  // inflates through libzip
  const std::shared_ptr<MappedFile>& map() const { return map_; }

 private:
  void locate_stored_entries();
  std::string path_;
  struct Closer {
    void operator()(zip* z) const;
  };
  std::unique_ptr<zip, Closer> za_;  // freed even when the constructor throws
  std::shared_ptr<MappedFile> map_;
  std::vector<ZipEntry> entries_;
};

}  // namespace sf
