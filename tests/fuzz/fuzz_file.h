#pragma once
// Parsers that take a path get the fuzz input through a file (or a directory of files) in /dev/shm
// (or /tmp), named after the process so parallel fuzzers do not share one.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

// A scratch path for this process, removed when it exits normally (a crash leaves it for study).
inline std::string fuzz_scratch_path(const char* suffix) {
  static std::vector<std::string> made;
  if (made.empty())
    std::atexit([] {
      std::error_code ec;
      for (const auto& p : made) std::filesystem::remove_all(p, ec);
    });
  made.push_back(std::string(access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp") + "/sf-fuzz-" +
                 std::to_string(getpid()) + suffix);
  return made.back();
}

inline void fuzz_write(const std::string& path, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
}

inline std::string fuzz_input_file(const uint8_t* data, size_t size, const char* suffix) {
  static const std::string path = fuzz_scratch_path(suffix);
  fuzz_write(path, data, size);
  return path;
}

// A directory from one input, so a mutation can change any file of it or the set of files.
// Layout (tests/fuzz/make_seeds.py writes it): records of
//   u8 name length, name, u32 little-endian data length, data
// until the input ends; a length past the end takes what is left. Names other than plain
// [A-Za-z0-9._-] file names (no "/", not "." or "..") are skipped, and at most 16 files written.
inline std::string fuzz_input_dir(const uint8_t* data, size_t size) {
  static const std::string dir = fuzz_scratch_path("-dir");
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  std::filesystem::create_directory(dir, ec);
  size_t pos = 0;
  for (int files = 0; files < 16 && pos < size; ++files) {
    const size_t name_len = data[pos++];
    if (name_len > size - pos) break;
    std::string name(reinterpret_cast<const char*>(data + pos), name_len);
    pos += name_len;
    uint32_t len = 0;
    if (size - pos < 4) break;
    std::memcpy(&len, data + pos, 4);  // little-endian hosts only, like the formats themselves
    pos += 4;
    const size_t n = len < size - pos ? len : size - pos;
    const bool plain = !name.empty() && name != "." && name != ".." &&
                       name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") ==
                           std::string::npos;
    if (plain) fuzz_write(dir + "/" + name, data + pos, n);
    pos += n;
  }
  return dir;
}
