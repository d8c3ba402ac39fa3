#pragma once
// Every file shardforge reads is opened through InputFile. It opens without blocking and accepts
// only regular files on a real file system: a FIFO would hang open() forever, and devices, sockets,
// /proc and /sys entries (which claim to be regular files of size 0) are not data.
// Reads go through pread(), which reports a file truncated under us as a short read, where a
// memory map would fault (SIGBUS).
#include <cstddef>
#include <cstdint>
#include <string>

namespace sf {

class InputFile {
 public:
  explicit InputFile(const std::string& path);  // throws Error naming the file
  ~InputFile();
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  const std::string& path() const { return path_; }
  int fd() const { return fd_; }
  uint64_t size() const { return size_; }  // as it was when opened
  // Reads exactly n bytes at offset; throws Error if the file no longer holds them.
  void read_at(uint64_t offset, void* dst, size_t n) const;
  // Hands the descriptor to a caller that will close it (libzip's zip_fdopen).
  int release();

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

}  // namespace sf
