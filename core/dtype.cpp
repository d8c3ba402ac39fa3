#include "core/dtype.h"

#include <array>
#include <cmath>
#include <vector>

namespace sf {

namespace {
constexpr std::array<DTypeInfo, 10> kTypes = {{
    {DType::F32, "f32", "FloatStorage", 4},
    {DType::F16, "f16", "HalfStorage", 2},
    {DType::BF16, "bf16", "BFloat16Storage", 2},
    {DType::F64, "f64", "DoubleStorage", 8},
    {DType::I64, "i64", "LongStorage", 8},
    {DType::I32, "i32", "IntStorage", 4},
    {DType::I16, "i16", "ShortStorage", 2},
    {DType::I8, "i8", "CharStorage", 1},
    {DType::U8, "u8", "ByteStorage", 1},
    {DType::Bool, "bool", "BoolStorage", 1},
}};

template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}
}  // namespace

const DTypeInfo& dtype_info(DType t) { return kTypes[static_cast<size_t>(t)]; }

std::optional<DType> dtype_from_torch_storage(std::string_view storage_class) {
  for (const auto& info : kTypes)
    if (storage_class == info.torch_storage) return info.type;
  return std::nullopt;
}

uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) return uint16_t(sign | (x > 0x7f800000u ? 0x7e00u : 0x7c00u));
  if (x >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds past 65504: infinity
  if (x < 0x38800000u) {                                   // result is subnormal (or zero)
    if (x < 0x33000000u) return uint16_t(sign);            // below half the smallest subnormal
    const uint32_t mant = (x & 0x7fffffu) | 0x800000u;
    const uint32_t drop = uint32_t(126 - int(x >> 23));  // 14..24 bits fall below 2^-24
    uint32_t h = mant >> drop;
    const uint32_t rem = mant & ((1u << drop) - 1);
    const uint32_t half = 1u << (drop - 1);
    if (rem > half || (rem == half && (h & 1))) ++h;
    return uint16_t(sign | h);
  }
  uint32_t h = ((x - 0x38000000u) >> 13);
  const uint32_t rem = x & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) ++h;
  return uint16_t(sign | h);
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ffu;
  uint32_t out;
  if (exp == 0) {
    if (mant == 0) {
      out = sign;
    } else {  // subnormal: normalise
      exp = 113;
      while (!(mant & 0x400u)) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      out = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    out = sign | 0x7f800000u | (mant << 13);
  } else {
    out = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &out, 4);
  return f;
}

uint16_t f32_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40u);  // quiet NaN
  const uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);
  return uint16_t((x + rounding) >> 16);
}

namespace {
const std::vector<float> g_f16_table = [] {
  std::vector<float> t(65536);
  for (uint32_t i = 0; i < 65536; ++i) t[i] = f16_to_f32(uint16_t(i));
  return t;
}();
}  // namespace
const float* const detail::f16_table = g_f16_table.data();

void convert_to_f32(DType t, const uint8_t* src, size_t n, float* dst) {
  switch (t) {
    case DType::F32: std::memcpy(dst, src, n * 4); break;
    case DType::F16: for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(load<uint16_t>(src + 2 * i)); break;
    case DType::BF16: for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load<uint16_t>(src + 2 * i)); break;
    case DType::F64: for (size_t i = 0; i < n; ++i) dst[i] = float(load<double>(src + 8 * i)); break;
    case DType::I64: for (size_t i = 0; i < n; ++i) dst[i] = float(load<int64_t>(src + 8 * i)); break;
    case DType::I32: for (size_t i = 0; i < n; ++i) dst[i] = float(load<int32_t>(src + 4 * i)); break;
    case DType::I16: for (size_t i = 0; i < n; ++i) dst[i] = float(load<int16_t>(src + 2 * i)); break;
    case DType::I8: for (size_t i = 0; i < n; ++i) dst[i] = float(int8_t(src[i])); break;
    case DType::U8: for (size_t i = 0; i < n; ++i) dst[i] = float(src[i]); break;
    case DType::Bool: for (size_t i = 0; i < n; ++i) dst[i] = src[i] ? 1.0f : 0.0f; break;
  }
}

}  // namespace sf
