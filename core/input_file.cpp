#include "core/input_file.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/checked.h"
#include "core/error.h"

namespace sf {

namespace {
const char* file_kind(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  return "not a regular file";
}
}  // namespace

InputFile::InputFile(const std::string& path) : path_(path) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
  fd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd_ < 0) fail_file(path, std::string("cannot open: ") + std::strerror(errno), ErrorKind::IO);
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    const int e = errno;
    ::close(fd_);
    fail_file(path, std::string("cannot stat: ") + std::strerror(e), ErrorKind::IO);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd_);
    fail_file(path, std::string("is ") + file_kind(st.st_mode) + ", not a regular file");
  }
  struct statfs fs {};
  if (::fstatfs(fd_, &fs) == 0 && (fs.f_type == PROC_SUPER_MAGIC || fs.f_type == SYSFS_MAGIC)) {
    ::close(fd_);
    fail_file(path, "is a /proc or /sys entry, not a regular file");
  }
  // Back to blocking reads: regular files never block anyway, and pread stays simple.
  const int flags = ::fcntl(fd_, F_GETFL);
  if (flags >= 0) ::fcntl(fd_, F_SETFL, flags & ~O_NONBLOCK);
  size_ = uint64_t(st.st_size);
}

InputFile::~InputFile() {
  if (fd_ >= 0) ::close(fd_);
}

int InputFile::release() {
  const int fd = fd_;
  fd_ = -1;
  return fd;
}

void InputFile::read_at(uint64_t offset, void* dst, size_t n) const {
  if (!range_within(offset, n, size_))
    fail_file(path_, "read of " + std::to_string(n) + " bytes at offset " + std::to_string(offset) +
                         " lies past the end of the file (" + std::to_string(size_) + " bytes)");
  auto* p = static_cast<uint8_t*>(dst);
  while (n > 0) {
    const ssize_t got = ::pread(fd_, p, n, off_t(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      fail_file(path_, std::string("read error: ") + std::strerror(errno), ErrorKind::IO);
    }
    if (got == 0) fail_file(path_, "file is shorter than when it was opened (truncated while being read?)");
    p += got;
    n -= size_t(got);
    offset += uint64_t(got);
  }
}

}  // namespace sf
