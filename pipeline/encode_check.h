#pragma once
// The checks every encoded tensor passes, whichever stage encoded it (quantize's round-to-nearest,
// a calibration stage's encode_calibrated): NaN or Inf input is refused unless allowed, and a row
// of finite values that decodes to inf or nan holds a value the type cannot represent (f16 past
// 65504, an int4 group whose f16 scale overflows).
#include <atomic>
#include <cstddef>
#include <string>

#include "core/quant_types.h"
#include "core/thread_pool.h"
#include "pipeline/unit.h"
#include "quantizers/scheme.h"

namespace sf {

// An exponent test on the bits, OR-ed over the row without a branch, which vectorizes.
bool all_finite(const float* x, size_t n);

enum class RowCheck { Ok, NonFinite, Unrepresentable };
// One row: its f32 input x and its encoding; `back` has room for cols floats (the decoding).
// Non-finite input is NonFinite unless allowed (then it is not checked further).
RowCheck check_row(const float* x, const uint8_t* encoded, size_t cols, const QTypeTraits& tr, size_t group,
                   float* back, bool allow_non_finite);

// Tracks the lowest failing row of each kind across threads (the first whatever the split), and
// refuses, naming the source, the tensor and the element.
class RowFailures {
 public:
  void note(RowCheck c, size_t row);
  bool stop_chunk(RowCheck c) const { return c == RowCheck::NonFinite; }
  // Throws for the first failing row (non-finite input first); `t` holds values and encoded.
  void refuse_any(const UnitTensor& t, const Scheme& s, const std::string& source) const;

 private:
  std::atomic<size_t> non_finite_{SIZE_MAX}, unrepresentable_{SIZE_MAX};
};

// Refuses t.values when they hold NaN or Inf, naming the first such element; returns otherwise.
void refuse_non_finite_values(const UnitTensor& t, const std::string& source);

// Checks an encoding a stage made as a whole (t.values and t.encoded, with scheme s) row by row
// over the pool, as the quantize stage checks its own.
void check_encoding(const UnitTensor& t, const Scheme& s, const std::string& source, ThreadPool& pool,
                    bool allow_non_finite);

}  // namespace sf
