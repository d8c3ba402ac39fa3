#include "core/quant_types.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "core/dtype.h"

namespace sf {

namespace {

size_t n_groups(size_t cols, size_t group) { return (cols + group - 1) / group; }

float load_f32(const uint8_t* p) { float v; std::memcpy(&v, p, 4); return v; }
uint16_t load_u16(const uint8_t* p) { uint16_t v; std::memcpy(&v, p, 2); return v; }
void store_f32(uint8_t* p, float v) { std::memcpy(p, &v, 4); }
void store_u16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

// ---- f32 ----
size_t f32_bytes(size_t cols, size_t) { return cols * 4; }
void f32_quant(const float* x, size_t cols, size_t, uint8_t* out) { std::memcpy(out, x, cols * 4); }
void f32_dequant(const uint8_t* r, size_t cols, size_t, float* out) { std::memcpy(out, r, cols * 4); }
float f32_dot(const uint8_t* r, const float* x, size_t cols, size_t) {
  const float* w = reinterpret_cast<const float*>(r);  // tensors are 64-byte aligned, rows 4-byte
  float s = 0;
  for (size_t i = 0; i < cols; ++i) s += w[i] * x[i];
  return s;
}

// ---- f16 / bf16 ----
size_t half_bytes(size_t cols, size_t) { return cols * 2; }
// One implementation for both 16-bit float types, parameterised by the conversions.
template <uint16_t (*Encode)(float), float (*Decode)(uint16_t)>
struct Half16 {
  static void quant(const float* x, size_t cols, size_t, uint8_t* out) {
    for (size_t i = 0; i < cols; ++i) store_u16(out + 2 * i, Encode(x[i]));
  }
  static void dequant(const uint8_t* r, size_t cols, size_t, float* out) {
    for (size_t i = 0; i < cols; ++i) out[i] = Decode(load_u16(r + 2 * i));
  }
  static float dot(const uint8_t* r, const float* x, size_t cols, size_t) {
    float s = 0;
    for (size_t i = 0; i < cols; ++i) s += Decode(load_u16(r + 2 * i)) * x[i];
    return s;
  }
};
using F16 = Half16<f32_to_f16, f16_to_f32_fast>;
using BF16 = Half16<f32_to_bf16, bf16_to_f32>;

// ---- int8: one f32 scale per row, then cols int8 codes in [-127, 127] ----
size_t i8_bytes(size_t cols, size_t) { return 4 + cols; }
void i8_quant(const float* x, size_t cols, size_t, uint8_t* out) {
  float amax = 0;
  for (size_t i = 0; i < cols; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float d = amax / 127.0f;
  const float id = d > 0 ? 1.0f / d : 0.0f;
  store_f32(out, d);
  for (size_t i = 0; i < cols; ++i)
    out[4 + i] = uint8_t(int8_t(std::clamp(std::nearbyint(x[i] * id), -127.0f, 127.0f)));
}
void i8_dequant(const uint8_t* r, size_t cols, size_t, float* out) {
  const float d = load_f32(r);
  for (size_t i = 0; i < cols; ++i) out[i] = d * float(int8_t(r[4 + i]));
}
float i8_dot(const uint8_t* r, const float* x, size_t cols, size_t) {
  const int8_t* q = reinterpret_cast<const int8_t*>(r + 4);
  float s = 0;
  for (size_t i = 0; i < cols; ++i) s += float(q[i]) * x[i];
  return s * load_f32(r);
}

// ---- int4, group-wise. Row: G f16 scales, [G f16 minimums if asym], then ceil(cols/2) bytes of
// 4-bit codes, element 2j in the low nibble of byte j. The last group of a row may be shorter. ----
uint8_t nibble(const uint8_t* codes, size_t i) { return (codes[i >> 1] >> ((i & 1) * 4)) & 15; }
void put_nibble(uint8_t* codes, size_t i, uint8_t v) {
  codes[i >> 1] = uint8_t(codes[i >> 1] | (v << ((i & 1) * 4)));
}

size_t q4s_bytes(size_t cols, size_t group) { return n_groups(cols, group) * 2 + (cols + 1) / 2; }
size_t q4a_bytes(size_t cols, size_t group) { return n_groups(cols, group) * 4 + (cols + 1) / 2; }

uint32_t float_bits(float v) { uint32_t b; std::memcpy(&b, &v, 4); return b; }

// The value of largest magnitude, sign kept (the first of equal magnitudes; NaN ignored; 0 for a
// group of zeros). Magnitudes compare as the integers their bits are (NaN's bits made 0), a loop
// that vectorizes; a second pass finds the first element of that magnitude.
float signed_absmax(const float* x, size_t n) {
  uint32_t amax = 0;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t m = float_bits(x[i]) & 0x7fffffffu;
    amax = std::max(amax, m & (0u - uint32_t(m <= 0x7f800000u)));  // masks, not branches
  }
  if (amax == 0) return 0;
  size_t i = 0;
  while ((float_bits(x[i]) & 0x7fffffffu) != amax) ++i;
  return x[i];
}

// Symmetric int4 codes, one per byte, of x[0..n) / d (id = 1/d): round(v) clamped to [-8, 7], plus
// 8, rounding half to even as std::nearbyint does in the default rounding mode. For |v| < 2^22,
// v + 1.5 x 2^23 has no fraction bits and its low mantissa bits are round(v) + 2^22; larger
// magnitudes (and inf) clamp by their sign, NaN (kept by --allow-non-finite) gets code 0. All in
// integer selects, so the loop vectorizes.
void q4s_codes(const float* x, size_t n, float id, uint8_t* out) {
  constexpr float kRound = 12582912.0f;
  for (size_t i = 0; i < n; ++i) {
    const float v = x[i] * id;
    const uint32_t vb = float_bits(v), mag = vb & 0x7fffffffu;
    const int32_t k = std::min(std::max(int32_t(float_bits(v + kRound) & 0x7fffffu) - 0x400000, -8), 7);
    const int32_t big = -int32_t(mag >= 0x4a800000u), nan = -int32_t(mag > 0x7f800000u);  // masks
    const int32_t clamped = 7 - 15 * int32_t(vb >> 31);  // |v| >= 2^22: 7, or -8 when negative
    const int32_t code = (((k & ~big) | (clamped & big)) & ~nan) | (-8 & nan);
    out[i] = uint8_t(code + 8);
  }
}

void q4s_quant(const float* x, size_t cols, size_t group, uint8_t* out) {
  const size_t G = n_groups(cols, group);
  uint8_t* codes = out + G * 2;
  std::memset(codes, 0, (cols + 1) / 2);
  for (size_t g = 0; g < G; ++g) {
    const size_t b = g * group, e = std::min(cols, b + group);
    const float m = signed_absmax(x + b, e - b);  // maps to code -8 exactly
    const uint16_t dh = f32_to_f16(m / -8.0f);
    store_u16(out + 2 * g, dh);
    const float d = f16_to_f32(dh);
    const float id = d != 0 ? 1.0f / d : 0.0f;
    // 64 codes at a time, then packed two to a byte. Chunks keep the group's parity: an odd start
    // (only with an odd group size) shares bytes with the neighbouring groups, nibble by nibble.
    uint8_t tmp[64];
    for (size_t c = b; c < e; c += 64) {
      const size_t k = std::min<size_t>(64, e - c);
      q4s_codes(x + c, k, id, tmp);
      if (c % 2) {
        for (size_t j = 0; j < k; ++j) put_nibble(codes, c + j, tmp[j]);
        continue;
      }
      for (size_t j = 0; j + 1 < k; j += 2) codes[(c + j) >> 1] = uint8_t(tmp[j] | tmp[j + 1] << 4);
      if (k % 2) put_nibble(codes, c + k - 1, tmp[k - 1]);
    }
  }
}
void q4s_dequant(const uint8_t* r, size_t cols, size_t group, float* out) {
  const size_t G = n_groups(cols, group);
  const uint8_t* codes = r + G * 2;
  for (size_t g = 0; g < G; ++g) {  // one scale per group, not a division per element
    const size_t b = g * group, e = std::min(cols, b + group);
    const float d = f16_to_f32_fast(load_u16(r + 2 * g));
    size_t i = b;
    if (b % 2 == 0)  // whole bytes: two elements each
      for (; i + 1 < e; i += 2) {
        const uint8_t byte = codes[i >> 1];
        out[i] = d * float(int(byte & 15) - 8);
        out[i + 1] = d * float(int(byte >> 4) - 8);
      }
    for (; i < e; ++i) out[i] = d * float(int(nibble(codes, i)) - 8);
  }
}
float q4s_dot(const uint8_t* r, const float* x, size_t cols, size_t group) {
  const size_t G = n_groups(cols, group);
  const uint8_t* codes = r + G * 2;
  float s = 0;
  for (size_t g = 0; g < G; ++g) {
    const size_t b = g * group, e = std::min(cols, b + group);
    float acc = 0;
    for (size_t i = b; i < e; ++i) acc += float(int(nibble(codes, i)) - 8) * x[i];
    s += f16_to_f32_fast(load_u16(r + 2 * g)) * acc;
  }
  return s;
}

void q4a_quant(const float* x, size_t cols, size_t group, uint8_t* out) {
  const size_t G = n_groups(cols, group);
  uint8_t* codes = out + G * 4;
  std::memset(codes, 0, (cols + 1) / 2);
  for (size_t g = 0; g < G; ++g) {
    const size_t b = g * group, e = std::min(cols, b + group);
    float lo = x[b], hi = x[b];
    for (size_t i = b; i < e; ++i) { lo = std::min(lo, x[i]); hi = std::max(hi, x[i]); }
    const uint16_t dh = f32_to_f16((hi - lo) / 15.0f), mh = f32_to_f16(lo);
    store_u16(out + 2 * g, dh);
    store_u16(out + 2 * G + 2 * g, mh);
    const float d = f16_to_f32(dh), mn = f16_to_f32(mh);
    const float id = d != 0 ? 1.0f / d : 0.0f;
    for (size_t i = b; i < e; ++i)
      put_nibble(codes, i, uint8_t(std::clamp(std::nearbyint((x[i] - mn) * id), 0.0f, 15.0f)));
  }
}
void q4a_dequant(const uint8_t* r, size_t cols, size_t group, float* out) {
  const size_t G = n_groups(cols, group);
  const uint8_t* codes = r + G * 4;
  for (size_t i = 0; i < cols; ++i) {
    const size_t g = i / group;
    out[i] = f16_to_f32_fast(load_u16(r + 2 * g)) * float(nibble(codes, i)) + f16_to_f32_fast(load_u16(r + 2 * G + 2 * g));
  }
}
float q4a_dot(const uint8_t* r, const float* x, size_t cols, size_t group) {
  const size_t G = n_groups(cols, group);
  const uint8_t* codes = r + G * 4;
  float s = 0;
  for (size_t g = 0; g < G; ++g) {
    const size_t b = g * group, e = std::min(cols, b + group);
    float acc = 0, xs = 0;
    for (size_t i = b; i < e; ++i) { acc += float(nibble(codes, i)) * x[i]; xs += x[i]; }
    s += f16_to_f32_fast(load_u16(r + 2 * g)) * acc + f16_to_f32_fast(load_u16(r + 2 * G + 2 * g)) * xs;
  }
  return s;
}

// Scale groups and their rescaling (QTypeTraits::rescale_group): f16 fields at `at`, rounded.
void scale_f16(uint8_t* at, float f) { store_u16(at, f32_to_f16(f16_to_f32(load_u16(at)) * f)); }
size_t i8_width(size_t cols, size_t) { return cols; }
void i8_rescale(uint8_t* r, size_t, size_t, size_t, float f) { store_f32(r, load_f32(r) * f); }
size_t q4_width(size_t, size_t group) { return group; }
void q4s_rescale(uint8_t* r, size_t, size_t, size_t g, float f) { scale_f16(r + 2 * g, f); }
void q4a_rescale(uint8_t* r, size_t cols, size_t group, size_t g, float f) {
  scale_f16(r + 2 * g, f);
  scale_f16(r + 2 * n_groups(cols, group) + 2 * g, f);
}

// ---- ggml-compatible blocks of 32: a row is ceil(cols/32) blocks; a last block past the row's
// end is quantized as if padded with zeros (ggml itself needs cols % 32 == 0, where the bytes are
// identical to its reference quantizer's). ----
constexpr size_t kBlock = 32;
size_t n_blocks(size_t cols) { return (cols + kBlock - 1) / kBlock; }
// One block of x starting at b, zero-padded past cols.
void load_block(const float* x, size_t cols, size_t b, float* out) {
  for (size_t j = 0; j < kBlock; ++j) out[j] = b + j < cols ? x[b + j] : 0.0f;
}

// q8_0: f16 scale d, then 32 int8 codes; value = d * code. ggml's quantize_row_q8_0_ref: d =
// amax/127 rounded to f16, codes rounded half away from zero with the unrounded 1/d.
size_t q80_bytes(size_t cols, size_t) { return n_blocks(cols) * 34; }
void q80_quant(const float* x, size_t cols, size_t, uint8_t* out) {
  float v[kBlock];
  for (size_t bl = 0; bl < n_blocks(cols); ++bl, out += 34) {
    load_block(x, cols, bl * kBlock, v);
    float amax = 0;
    for (float e : v) amax = std::max(amax, std::fabs(e));
    const float d = amax / 127.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    store_u16(out, f32_to_f16(d));
    for (size_t j = 0; j < kBlock; ++j) out[2 + j] = uint8_t(int8_t(std::round(v[j] * id)));
  }
}
void q80_dequant(const uint8_t* r, size_t cols, size_t, float* out) {
  for (size_t i = 0; i < cols; ++i) {
    const uint8_t* blk = r + (i / kBlock) * 34;
    out[i] = f16_to_f32_fast(load_u16(blk)) * float(int8_t(blk[2 + i % kBlock]));
  }
}
float q80_dot(const uint8_t* r, const float* x, size_t cols, size_t) {
  float s = 0;
  for (size_t bl = 0; bl < n_blocks(cols); ++bl, r += 34) {
    float acc = 0;
    for (size_t j = 0; j < kBlock && bl * kBlock + j < cols; ++j) acc += float(int8_t(r[2 + j])) * x[bl * kBlock + j];
    s += f16_to_f32_fast(load_u16(r)) * acc;
  }
  return s;
}

// q4_0: f16 scale d, then 16 bytes; byte j holds element j in its low nibble and element j + 16 in
// its high one; value = d * (code - 8). ggml's quantize_row_q4_0_ref: d = (the value of largest
// magnitude, sign kept) / -8, code = min(15, trunc(x/d + 8.5)).
size_t q40_bytes(size_t cols, size_t) { return n_blocks(cols) * 18; }
void q40_quant(const float* x, size_t cols, size_t, uint8_t* out) {
  float v[kBlock];
  for (size_t bl = 0; bl < n_blocks(cols); ++bl, out += 18) {
    load_block(x, cols, bl * kBlock, v);
    float amax = 0, m = 0;
    for (float e : v)
      if (amax < std::fabs(e)) { amax = std::fabs(e); m = e; }
    const float d = m / -8.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    store_u16(out, f32_to_f16(d));
    for (size_t j = 0; j < kBlock / 2; ++j) {
      const int lo = std::min(15, int(int8_t(v[j] * id + 8.5f)));
      const int hi = std::min(15, int(int8_t(v[j + 16] * id + 8.5f)));
      out[2 + j] = uint8_t(lo | (hi << 4));
    }
  }
}
int q40_code(const uint8_t* blk, size_t j) {
  return j < 16 ? (blk[2 + j] & 15) - 8 : (blk[2 + j - 16] >> 4) - 8;
}
void q40_dequant(const uint8_t* r, size_t cols, size_t, float* out) {
  for (size_t i = 0; i < cols; ++i) {
    const uint8_t* blk = r + (i / kBlock) * 18;
    out[i] = f16_to_f32_fast(load_u16(blk)) * float(q40_code(blk, i % kBlock));
  }
}
float q40_dot(const uint8_t* r, const float* x, size_t cols, size_t) {
  float s = 0;
  for (size_t bl = 0; bl < n_blocks(cols); ++bl, r += 18) {
    float acc = 0;
    for (size_t j = 0; j < kBlock && bl * kBlock + j < cols; ++j) acc += float(q40_code(r, j)) * x[bl * kBlock + j];
    s += f16_to_f32_fast(load_u16(r)) * acc;
  }
  return s;
}

size_t block_width(size_t, size_t) { return kBlock; }
void q80_rescale(uint8_t* r, size_t, size_t, size_t g, float f) { scale_f16(r + 34 * g, f); }
void q40_rescale(uint8_t* r, size_t, size_t, size_t g, float f) { scale_f16(r + 18 * g, f); }

constexpr std::array<QTypeTraits, 8> kTraits = {{
    {QType::F32, "f32", false, f32_bytes, f32_quant, f32_dequant, f32_dot, nullptr, nullptr},
    {QType::F16, "f16", false, half_bytes, F16::quant, F16::dequant, F16::dot, nullptr, nullptr},
    {QType::BF16, "bf16", false, half_bytes, BF16::quant, BF16::dequant, BF16::dot, nullptr, nullptr},
    {QType::Int8, "int8", false, i8_bytes, i8_quant, i8_dequant, i8_dot, i8_width, i8_rescale},
    {QType::Int4Sym, "int4_sym", true, q4s_bytes, q4s_quant, q4s_dequant, q4s_dot, q4_width, q4s_rescale},
    {QType::Int4Asym, "int4_asym", true, q4a_bytes, q4a_quant, q4a_dequant, q4a_dot, q4_width, q4a_rescale},
    {QType::Q8_0, "q8_0", false, q80_bytes, q80_quant, q80_dequant, q80_dot, block_width, q80_rescale},
    {QType::Q4_0, "q4_0", false, q40_bytes, q40_quant, q40_dequant, q40_dot, block_width, q40_rescale},
}};

}  // namespace

const QTypeTraits& qtype_traits(QType t) { return kTraits[static_cast<size_t>(t)]; }

std::optional<QType> qtype_from_name(std::string_view name) {
  for (const auto& t : kTraits)
    if (name == t.name) return t.type;
  return std::nullopt;
}

}  // namespace sf
