#pragma once
// A read-only zip archive (torch.save's container, and the artifact bundle of --format zip), read without any memory map: every byte comes
// through pread (core/input_file.h), so a file truncated while it is read is an error, not SIGBUS.
//
// Two readers look at the archive and must agree. libzip (opened on the same descriptor) checks
// the archive and inflates compressed entries; our own walk of the central directory finds where
// each entry's bytes start, which libzip does not tell. The walk takes the one end-of-central-
// directory record whose comment ends exactly at the end of the file, checks every offset and
// length with overflow-proof arithmetic (core/checked.h), requires every entry's local header and
// data to lie before the central directory without overlapping another entry, and compares every
// record with libzip's (name, sizes, compression, count). Any disagreement refuses the file.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/input_file.h"

struct zip;

namespace sf {

struct ZipEntry {
  std::string name;
  uint64_t index = 0;
  uint64_t size = 0;            // uncompressed bytes
  uint64_t comp_size = 0;       // bytes in the file
  uint16_t method = 0;          // 0 stored, 8 deflated (others are refused when read)
  bool stored = false;          // no compression: readable in place
  uint64_t data_offset = 0;     // file offset of the (compressed) bytes
  uint64_t header_offset = 0;   // file offset of its local header
  uint8_t made_by_os = 0;       // high byte of "version made by" (3: Unix)
  uint32_t external_attributes = 0;  // on Unix, st_mode << 16 (a symbolic link: S_IFLNK)
};

class ZipArchive {
 public:
  // A deflated entry never inflates to more than about 1032 times its compressed size.
  static constexpr uint64_t kMaxDeflateRatio = 1032;

  explicit ZipArchive(const std::string& path);
  ZipArchive(const ZipArchive&) = delete;
  ZipArchive& operator=(const ZipArchive&) = delete;

  const std::string& path() const { return path_; }
  uint64_t file_size() const { return file_->size(); }
  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(const std::string& name) const;
  // The whole entry, inflated through libzip when compressed. Inflates in chunks, so an entry
  // whose data ends early fails before its declared size is allocated.
  std::vector<uint8_t> read(const ZipEntry& e) const;
  // n bytes at offset of a stored entry, straight from the file.
  void read_stored(const ZipEntry& e, uint64_t offset, void* dst, size_t n) const;
  const std::shared_ptr<InputFile>& file() const { return file_; }

 private:
  void walk_central_directory();
  std::string path_;
  std::shared_ptr<InputFile> file_;
  struct Closer {
    void operator()(zip* z) const;
  };
  std::unique_ptr<zip, Closer> za_;  // freed even when the constructor throws
  std::vector<ZipEntry> entries_;
};

}  // namespace sf
