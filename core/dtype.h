#pragma once
// Source element types (what a checkpoint stores) and the float conversions between them.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace sf {

enum class DType : uint8_t { F32, F16, BF16, F64, I64, I32, I16, I8, U8, Bool };

struct DTypeInfo {
  DType type;
  const char* name;          // "f32"
  const char* torch_storage; // pickle global name of the typed storage, e.g. "FloatStorage"
  size_t size;
};

const DTypeInfo& dtype_info(DType t);
std::optional<DType> dtype_from_torch_storage(std::string_view storage_class);
inline size_t dtype_size(DType t) { return dtype_info(t).size; }
inline const char* dtype_name(DType t) { return dtype_info(t).name; }

// IEEE binary16 and bfloat16. Both directions round to nearest, ties to even; NaN stays NaN.
uint16_t f32_to_f16(float f);
float f16_to_f32(uint16_t h);
// The same as f16_to_f32, through a 256 KiB table filled at start-up: for kernels.
namespace detail { extern const float* const f16_table; }
inline float f16_to_f32_fast(uint16_t h) { return detail::f16_table[h]; }
uint16_t f32_to_bf16(float f);
inline float bf16_to_f32(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Converts n elements of type t starting at src (little-endian, possibly unaligned) to float.
void convert_to_f32(DType t, const uint8_t* src, size_t n, float* dst);

}  // namespace sf
