#include "formats/temp_files.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "core/error.h"

namespace sf {

namespace {
std::string temp_dir() {
  const char* tmp = std::getenv("TMPDIR");
  return tmp && *tmp ? tmp : "/tmp";
}
}  // namespace

PrivateTempFiles::~PrivateTempFiles() {
  for (const auto& p : paths_) ::unlink(p.c_str());
  if (!dir_.empty()) ::rmdir(dir_.c_str());
}

std::string PrivateTempFiles::add(const std::string& name, const void* data, size_t n) {
  if (dir_.empty()) {
    std::string pattern = temp_dir() + "/shardforge-" + what_ + "-XXXXXX";
    if (!::mkdtemp(pattern.data()))
      fail_file(pattern, "cannot create a temporary directory for the " + what_ + "'s tokenizer");
    dir_ = pattern;
  }
  const std::string path = dir_ + "/" + name;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) fail_file(path, "cannot create (the same file named twice?)");
  paths_.push_back(path);
  const auto* p = static_cast<const char*>(data);
  size_t left = n;
  while (left > 0) {
    const ssize_t w = ::write(fd, p, left);
    if (w <= 0) break;
    p += w, left -= size_t(w);
  }
  ::close(fd);
  if (left != 0) fail_file(path, "cannot write the " + what_ + "'s tokenizer file (disk full?)");
  return path;
}

MappedTempStore::MappedTempStore(std::string what) : what_(std::move(what)) {}

MappedTempStore::~MappedTempStore() {
  if (base_) ::munmap(base_, size_t(size_));
  if (fd_ >= 0) ::close(fd_);
}

uint64_t MappedTempStore::append(const void* data, size_t n) {
  if (base_) fail("MappedTempStore: append after map");
  if (fd_ < 0) {  // made on the first block, so a reader that keeps nothing creates no file
    std::string pattern = temp_dir() + "/shardforge-" + what_ + "-tensors-XXXXXX";
    fd_ = ::mkostemp(pattern.data(), O_CLOEXEC);
    if (fd_ < 0) fail_file(pattern, "cannot create a temporary file for the " + what_ + "'s tensors");
    ::unlink(pattern.c_str());
  }
  const uint64_t at = (size_ + kAlign - 1) / kAlign * kAlign;
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t off = at;
  for (size_t left = n; left > 0;) {
    const ssize_t w = ::pwrite(fd_, p, left, off_t(off));
    if (w <= 0)
      fail_file(temp_dir(), "cannot write the " + what_ + "'s tensors to a temporary file (disk full?)");
    p += w, off += uint64_t(w), left -= size_t(w);
  }
  size_ = at + n;
  return at;
}

void MappedTempStore::map() {
  if (base_ || size_ == 0) return;
  void* m = ::mmap(nullptr, size_t(size_), PROT_READ, MAP_SHARED, fd_, 0);
  if (m == MAP_FAILED) fail_file(temp_dir(), "cannot map the temporary file of the " + what_ + "'s tensors");
  base_ = static_cast<uint8_t*>(m);
}

}  // namespace sf
