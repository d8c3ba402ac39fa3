#include "core/fs_util.h"

#include <sys/stat.h>

#include "core/error.h"
#include "core/input_file.h"

namespace sf {

std::string read_file(const std::string& path, uint64_t max_bytes) {
  const InputFile f(path);
  if (f.size() > max_bytes)
    fail_file(path, "is " + std::to_string(f.size()) + " bytes, more than the " + std::to_string(max_bytes) +
                        " allowed for this kind of file");
  std::string s(size_t(f.size()), '\0');
  f.read_at(0, s.data(), s.size());
  return s;
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool present(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace sf
