#pragma once
// Read-only memory map of a whole file. release() hands pages back to the kernel so streaming
// through a large checkpoint keeps the resident set at about one unit.
#include <cstddef>
#include <cstdint>
#include <string>

namespace sf {

class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Drops the resident pages covering [offset, offset+n); the bytes stay readable (refaulted on use).
  void release(size_t offset, size_t n) const;
  // Same, but only the pages lying wholly inside the range.
  void release_inner(size_t offset, size_t n) const;

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace sf
