#pragma once
// SHA-256 (FIPS 180-4), incremental, for artifact checksums. Computed by OpenSSL's libcrypto, which
// uses the CPU's SHA extensions where there are any (several times the speed of portable code).
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX, kept out of every includer

namespace sf {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t n);
  // Ends the hash: call once, after the last update.
  std::array<uint8_t, 32> digest();
  std::string hex_digest();

 private:
  evp_md_ctx_st* ctx_;
};

std::string sha256_hex(const void* data, size_t n);
// Streams the file through read() so hashing a large checkpoint does not grow the resident set.
// A caller hashing on another thread may give `stop`: once it is set the hash ends early and ""
// is returned (the caller is abandoning the work).
std::string sha256_file(const std::string& path, const std::atomic<bool>* stop = nullptr);

}  // namespace sf
