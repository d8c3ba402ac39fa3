#pragma once
// SHA-256 (FIPS 180-4), incremental, for artifact checksums.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace sf {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  std::array<uint8_t, 32> digest();
  std::string hex_digest();

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

std::string sha256_hex(const void* data, size_t n);
// Streams the file through read() so hashing a large checkpoint does not grow the resident set.
std::string sha256_file(const std::string& path);

}  // namespace sf
