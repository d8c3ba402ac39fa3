#include "quantizers/quant_grid.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "core/error.h"

namespace sf {

namespace {

constexpr size_t kGgmlBlock = 32;

float f16_round(float v) { return f16_to_f32(f32_to_f16(v)); }
void store_u16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }
void put_nibble(uint8_t* codes, size_t i, int v) { codes[i >> 1] = uint8_t(codes[i >> 1] | (v << ((i & 1) * 4))); }

}  // namespace

bool QuantGrid::supports(QType t) {
  switch (t) {
    case QType::Int8: case QType::Int4Sym: case QType::Int4Asym: case QType::Q8_0: case QType::Q4_0: return true;
    default: return false;
  }
}

QuantGrid::QuantGrid(const Scheme& scheme, size_t cols) : type_(scheme.type), cols_(cols) {
  if (!supports(type_)) fail(std::string("quantization grid: ") + qtype_traits(type_).name + " has no integer grid");
  switch (type_) {
    case QType::Int8: glen_ = cols; break;
    case QType::Int4Sym: case QType::Int4Asym: glen_ = scheme.group; break;
    default: glen_ = kGgmlBlock; break;
  }
  if (glen_ == 0) glen_ = 1;  // an empty int8 row, or a scheme without a group: no division by zero
}

// As core/quant_types.cpp finds them: the first value of largest magnitude (NaN never wins), and
// the extremes by std::min / std::max from the first value.
GroupRange QuantGrid::range_of(const float* v, size_t n) {
  GroupRange r;
  if (n == 0) return r;
  r.lo = r.hi = v[0];
  for (size_t i = 0; i < n; ++i) {
    if (r.amax < std::fabs(v[i])) { r.amax = std::fabs(v[i]); r.signed_max = v[i]; }
    r.lo = std::min(r.lo, v[i]);
    r.hi = std::max(r.hi, v[i]);
  }
  return r;
}

GroupParams QuantGrid::fit_range(const GroupRange& r, float clip) const {
  GroupParams p;
  switch (type_) {
    case QType::Int8: {  // f32 scale, codes +-127
      p.scale = r.amax * clip / 127.0f;
      p.inv = p.scale > 0 ? 1.0f / p.scale : 0.0f;
      break;
    }
    case QType::Int4Sym: {  // the (clipped) largest magnitude maps to code -8
      p.scale = f16_round(r.signed_max * clip / -8.0f);
      p.inv = p.scale != 0 ? 1.0f / p.scale : 0.0f;
      break;
    }
    case QType::Int4Asym: {
      const float cut = (1.0f - clip) * 0.5f;
      return fit_asym(r, cut, cut);
    }
    case QType::Q8_0: {  // codes from the unrounded scale, as ggml's reference does
      const float d = r.amax * clip / 127.0f;
      p.scale = f16_round(d);
      p.inv = d != 0 ? 1.0f / d : 0.0f;
      break;
    }
    case QType::Q4_0: {
      const float d = r.signed_max * clip / -8.0f;
      p.scale = f16_round(d);
      p.inv = d != 0 ? 1.0f / d : 0.0f;
      break;
    }
    default: break;
  }
  return p;
}

GroupParams QuantGrid::fit_asym(const GroupRange& r, float cut_lo, float cut_hi) const {
  const float width = r.hi - r.lo;
  // Cuts of exactly 0 keep the extremes bit for bit (round-to-nearest's range).
  const float lo = cut_lo > 0 ? r.lo + cut_lo * width : r.lo;
  const float hi = cut_hi > 0 ? r.hi - cut_hi * width : r.hi;
  GroupParams p;
  p.scale = f16_round((hi - lo) / 15.0f);
  p.min = f16_round(lo);
  p.inv = p.scale != 0 ? 1.0f / p.scale : 0.0f;
  return p;
}

int QuantGrid::code(float x, const GroupParams& p) const {
  switch (type_) {
    case QType::Int8: {
      const float v = std::nearbyint(x * p.inv);
      return std::isnan(v) ? 0 : int(std::clamp(v, -127.0f, 127.0f));
    }
    case QType::Int4Sym: {  // stored as code + 8; NaN gets 0 as quant_types.cpp does
      const float v = std::nearbyint(x * p.inv);
      return std::isnan(v) ? 0 : int(std::clamp(v, -8.0f, 7.0f)) + 8;
    }
    case QType::Int4Asym: {
      const float v = std::nearbyint((x - p.min) * p.inv);
      return std::isnan(v) ? 0 : int(std::clamp(v, 0.0f, 15.0f));
    }
    case QType::Q8_0: {  // round half away from zero
      const float v = std::round(x * p.inv);
      return std::isnan(v) ? 0 : int(std::clamp(v, -127.0f, 127.0f));
    }
    case QType::Q4_0: {  // ggml: trunc(x/d + 8.5), at most 15; stored as code + 8
      const float v = x * p.inv + 8.5f;
      return std::isnan(v) ? 0 : int(std::clamp(v, 0.0f, 15.0f));
    }
    default: return 0;
  }
}

float QuantGrid::decode(int c, const GroupParams& p) const {
  switch (type_) {
    case QType::Int8: case QType::Q8_0: return p.scale * float(c);
    case QType::Int4Sym: case QType::Q4_0: return p.scale * float(c - 8);
    case QType::Int4Asym: return p.scale * float(c) + p.min;
    default: return 0;
  }
}

size_t QuantGrid::row_bytes() const { return qtype_traits(type_).row_bytes(cols_, glen_); }

void QuantGrid::pack_row(const GroupParams* params, const int* codes, uint8_t* out) const {
  const size_t G = groups();
  switch (type_) {
    case QType::Int8:
      std::memcpy(out, &params[0].scale, 4);
      for (size_t i = 0; i < cols_; ++i) out[4 + i] = uint8_t(int8_t(codes[i]));
      break;
    case QType::Int4Sym: case QType::Int4Asym: {
      const bool asym = type_ == QType::Int4Asym;
      uint8_t* nib = out + G * (asym ? 4 : 2);
      std::memset(nib, 0, (cols_ + 1) / 2);
      for (size_t g = 0; g < G; ++g) {
        store_u16(out + 2 * g, f32_to_f16(params[g].scale));
        if (asym) store_u16(out + 2 * G + 2 * g, f32_to_f16(params[g].min));
      }
      for (size_t i = 0; i < cols_; ++i) put_nibble(nib, i, codes[i]);
      break;
    }
    case QType::Q8_0: case QType::Q4_0: {
      const bool q8 = type_ == QType::Q8_0;
      const size_t bytes = q8 ? 34 : 18;
      for (size_t g = 0; g < G; ++g, out += bytes) {
        store_u16(out, f32_to_f16(params[g].scale));
        int c[kGgmlBlock];
        const int pad = code(0.0f, params[g]);  // past the row's end: zeros, as the reference pads
        for (size_t j = 0; j < kGgmlBlock; ++j) c[j] = g * kGgmlBlock + j < cols_ ? codes[g * kGgmlBlock + j] : pad;
        if (q8)
          for (size_t j = 0; j < kGgmlBlock; ++j) out[2 + j] = uint8_t(int8_t(c[j]));
        else
          for (size_t j = 0; j < kGgmlBlock / 2; ++j) out[2 + j] = uint8_t(c[j] | (c[j + 16] << 4));
      }
      break;
    }
    default: break;
  }
}

}  // namespace sf
