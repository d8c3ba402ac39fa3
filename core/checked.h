#pragma once
// Arithmetic on sizes and offsets read from files. Such numbers are chosen by whoever wrote the
// file, so `offset + size > total` can wrap around and pass; every reader checks ranges with
// these instead of writing the sum out.
#include <cstdint>
#include <string>

#include "core/error.h"

namespace sf {

// True when [offset, offset + length) lies inside [0, total), with no overflow possible.
constexpr bool range_within(uint64_t offset, uint64_t length, uint64_t total) {
  return offset <= total && length <= total - offset;
}

// a + b and a * b, or an Error "what: ... overflows" when the result does not fit in 64 bits.
inline uint64_t checked_add(uint64_t a, uint64_t b, const std::string& what) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r)) fail(what + ": size overflows 64 bits");
  return r;
}
inline uint64_t checked_mul(uint64_t a, uint64_t b, const std::string& what) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) fail(what + ": size overflows 64 bits");
  return r;
}
inline int64_t checked_add(int64_t a, int64_t b, const std::string& what) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) fail(what + ": value overflows 64 bits");
  return r;
}
inline int64_t checked_mul(int64_t a, int64_t b, const std::string& what) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) fail(what + ": value overflows 64 bits");
  return r;
}

}  // namespace sf
