#include "core/sha256.h"

#include <openssl/evp.h>

#include <algorithm>
#include <new>
#include <vector>

#include "core/error.h"
#include "core/input_file.h"

namespace sf {

namespace {
// libcrypto fails only without memory or with a broken installation; neither is the user's input.
void check(int ok, const char* what) {
  if (ok != 1) fail(std::string("sha256: libcrypto's ") + what + " failed");
}
}  // namespace

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_) throw std::bad_alloc();
  if (EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1) {
    EVP_MD_CTX_free(ctx_);
    fail("sha256: libcrypto's EVP_DigestInit_ex failed");
  }
}

Sha256::~Sha256() { EVP_MD_CTX_free(ctx_); }

void Sha256::update(const void* data, size_t n) {
  if (n) check(EVP_DigestUpdate(ctx_, data, n), "EVP_DigestUpdate");
}

std::array<uint8_t, 32> Sha256::digest() {
  std::array<uint8_t, 32> out{};
  unsigned int len = 0;
  check(EVP_DigestFinal_ex(ctx_, out.data(), &len), "EVP_DigestFinal_ex");
  if (len != out.size()) fail("sha256: libcrypto returned a digest of " + std::to_string(len) + " bytes");
  return out;
}

std::string Sha256::hex_digest() {
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (uint8_t b : digest()) { s += hex[b >> 4]; s += hex[b & 15]; }
  return s;
}

std::string sha256_hex(const void* data, size_t n) {
  Sha256 h;
  h.update(data, n);
  return h.hex_digest();
}

std::string sha256_file(const std::string& path, const std::atomic<bool>* stop) {
  const InputFile f(path);
  Sha256 h;
  std::vector<uint8_t> buf(1 << 20);
  for (uint64_t off = 0; off < f.size(); off += buf.size()) {
    if (stop && stop->load(std::memory_order_relaxed)) return "";
    const size_t n = size_t(std::min<uint64_t>(buf.size(), f.size() - off));
    f.read_at(off, buf.data(), n);
    h.update(buf.data(), n);
  }
  return h.hex_digest();
}

}  // namespace sf
