#include "validators/reference_logits.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "core/checked.h"
#include "core/error.h"

namespace sf {

namespace {
// pread / pwrite may move fewer bytes than asked; loop until done.
template <typename Io, typename Ptr>
void full_io(Io io, int fd, Ptr p, size_t n, off_t at, const std::string& where, const char* what) {
  while (n > 0) {
    const ssize_t k = io(fd, p, n, at);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) fail_file(where, std::string(what) + " failed: " + (k < 0 ? std::strerror(errno) : "end of file"));
    p += k;
    n -= size_t(k);
    at += k;
  }
}
}  // namespace

ReferenceLogits::ReferenceLogits(const std::string& dir, size_t positions, size_t vocab)
    : positions_(positions), vocab_(vocab) {
  const std::string what = "reference logits (" + std::to_string(positions) + " positions)";
  const uint64_t bytes = checked_mul(checked_mul(uint64_t(positions), uint64_t(vocab), what), uint64_t(sizeof(float)), what);
  std::string tmpl = dir + "/shardforge-reference-logits.XXXXXX";
  fd_ = ::mkstemp(tmpl.data());
  if (fd_ < 0) fail_file(tmpl, "cannot create a temporary file: " + std::string(std::strerror(errno)));
  where_ = tmpl;
  ::unlink(tmpl.c_str());
  // Reserve the space now: a full disk should stop compare before the reference is evaluated, not
  // after. Filesystems without fallocate just skip the reservation.
  const int err = ::posix_fallocate(fd_, 0, off_t(bytes));
  if (err != 0 && err != EOPNOTSUPP && err != EINVAL) {
    ::close(fd_);
    fd_ = -1;
    fail_file(dir, "cannot reserve " + std::to_string(bytes) + " bytes for the reference logits: " +
                       std::strerror(err));
  }
}

ReferenceLogits::~ReferenceLogits() {
  if (fd_ >= 0) ::close(fd_);
}

void ReferenceLogits::write(size_t slot, const float* logits) const {
  if (slot >= positions_) fail_file(where_, "slot out of range");
  full_io(::pwrite, fd_, reinterpret_cast<const char*>(logits), vocab_ * sizeof(float),
          off_t(slot * vocab_ * sizeof(float)), where_, "write (disk full?)");
}

void ReferenceLogits::read(size_t slot, float* dst) const {
  if (slot >= positions_) fail_file(where_, "slot out of range");
  full_io(::pread, fd_, reinterpret_cast<char*>(dst), vocab_ * sizeof(float), off_t(slot * vocab_ * sizeof(float)),
          where_, "read");
}

}  // namespace sf
