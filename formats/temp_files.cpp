#include "formats/temp_files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>

#include "core/error.h"

namespace sf {

PrivateTempFiles::~PrivateTempFiles() {
  for (const auto& p : paths_) ::unlink(p.c_str());
  if (!dir_.empty()) ::rmdir(dir_.c_str());
}

std::string PrivateTempFiles::add(const std::string& name, const void* data, size_t n) {
  if (dir_.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/shardforge-" + what_ + "-XXXXXX";
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

}  // namespace sf
