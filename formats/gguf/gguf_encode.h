#pragma once
// Appends GGUF's little-endian encodings to a byte buffer: the header, metadata key/values and
// tensor infos (GGUF v3: strings are a u64 length and bytes; arrays a u32 element type, a u64
// count and the elements).
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "formats/gguf/gguf_types.h"

namespace sf::gguf {

class Encoder {
 public:
  std::vector<uint8_t>& bytes() { return b_; }

  template <class T>
  void raw(T v) {
    uint8_t tmp[sizeof(T)];
    std::memcpy(tmp, &v, sizeof(T));
    b_.insert(b_.end(), tmp, tmp + sizeof(T));
  }
  void str(const std::string& s) {
    raw<uint64_t>(s.size());
    b_.insert(b_.end(), s.begin(), s.end());
  }
  void key(const std::string& k, ValueType t) {
    str(k);
    raw<uint32_t>(uint32_t(t));
    ++kv_count_;
  }
  void kv_u32(const std::string& k, uint32_t v) { key(k, ValueType::U32), raw(v); }
  void kv_f32(const std::string& k, float v) { key(k, ValueType::F32), raw(v); }
  void kv_bool(const std::string& k, bool v) { key(k, ValueType::Bool), raw<uint8_t>(v ? 1 : 0); }
  void kv_str(const std::string& k, const std::string& v) { key(k, ValueType::String), str(v); }
  void kv_strs(const std::string& k, const std::vector<std::string>& v) {
    key(k, ValueType::Array), raw<uint32_t>(uint32_t(ValueType::String)), raw<uint64_t>(v.size());
    for (const auto& s : v) str(s);
  }
  template <class T>
  void kv_array(const std::string& k, ValueType elem, const std::vector<T>& v) {
    key(k, ValueType::Array), raw<uint32_t>(uint32_t(elem)), raw<uint64_t>(v.size());
    for (const T& x : v) raw(x);
  }
  void kv_bytes(const std::string& k, const std::string& bytes) {  // an array of u8
    key(k, ValueType::Array), raw<uint32_t>(uint32_t(ValueType::U8)), raw<uint64_t>(bytes.size());
    b_.insert(b_.end(), bytes.begin(), bytes.end());
  }
  uint64_t kv_count() const { return kv_count_; }

 private:
  std::vector<uint8_t> b_;
  uint64_t kv_count_ = 0;
};

inline uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

}  // namespace sf::gguf
