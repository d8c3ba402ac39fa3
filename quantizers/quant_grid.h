#pragma once
// The quantization grid of an integer type, one group at a time: what the calibrated methods need
// to choose a group's parameters and codes themselves while still writing exactly the row layout
// of core/quant_types.cpp (docs/format.md). At clip 1 every step is the one round-to-nearest takes,
// so a row packed from fit() + code() is byte-identical to qtype_traits(t).quantize_row.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "quantizers/scheme.h"

namespace sf {

// A group's stored parameters. `scale` and `min` are the values the row stores (already rounded to
// f16 where the type stores f16), so decode() gives what the executor reads. `inv` is the inverse
// scale codes are computed with: 1/scale, except for q8_0 and q4_0 where ggml's reference uses the
// unrounded scale's inverse.
struct GroupParams {
  float scale = 0;
  float inv = 0;
  float min = 0;  // int4_asym only
};

// The range statistics of a group that fit() scales: computed once, then refitted per clip ratio.
struct GroupRange {
  float signed_max = 0;  // value of largest magnitude, sign kept (first of equals; NaN ignored)
  float amax = 0;        // its magnitude
  float lo = 0, hi = 0;  // extremes (int4_asym)
};

class QuantGrid {
 public:
  // For integer types only (int8, int4_sym, int4_asym, q8_0, q4_0); fails for float types.
  QuantGrid(const Scheme& scheme, size_t cols);
  static bool supports(QType t);

  QType type() const { return type_; }
  size_t cols() const { return cols_; }
  size_t group_len() const { return glen_; }  // int4: N, int8: the row, q4_0 / q8_0: 32
  size_t groups() const { return (cols_ + glen_ - 1) / glen_; }
  size_t group_begin(size_t g) const { return g * glen_; }
  size_t group_end(size_t g) const { return g * glen_ + glen_ < cols_ ? g * glen_ + glen_ : cols_; }
  bool asymmetric() const { return type_ == QType::Int4Asym; }

  static GroupRange range_of(const float* v, size_t n);
  // Parameters for the range scaled by clip: the largest magnitude times clip for the symmetric
  // types; for int4_asym [lo, hi] shrunk by clip about its centre (fit_asym).
  GroupParams fit_range(const GroupRange& r, float clip) const;
  // int4_asym: the range [lo + cut_lo (hi - lo), hi - cut_hi (hi - lo)]; cuts of 0 are [lo, hi].
  GroupParams fit_asym(const GroupRange& r, float cut_lo, float cut_hi) const;
  GroupParams fit(const float* v, size_t n, float clip) const { return fit_range(range_of(v, n), clip); }

  // The code round-to-nearest stores for x (clamped to the type's codes), and its value.
  int code(float x, const GroupParams& p) const;
  float decode(int code, const GroupParams& p) const;
  float quantize(float x, const GroupParams& p) const { return decode(code(x, p), p); }

  size_t row_bytes() const;
  // Writes one row from groups() parameters and cols() codes (as code() returns them).
  void pack_row(const GroupParams* params, const int* codes, uint8_t* out) const;

 private:
  QType type_;
  size_t cols_, glen_;
};

}  // namespace sf
