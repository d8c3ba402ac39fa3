#include "pipeline/encode_check.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "core/error.h"

namespace sf {

namespace {

// Where element i of a tensor is, for messages: "row 3, column 7" (or "element 7" of a vector).
std::string position(const TensorSpec& spec, size_t i) {
  if (spec.shape.size() < 2) return "element " + std::to_string(i);
  const size_t cols = size_t(spec.shape.back());
  return "row " + std::to_string(i / cols) + ", column " + std::to_string(i % cols);
}

std::string number(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", double(v));
  return buf;
}

// Lowers `slot` to `v` if smaller: the first failing row whatever the thread split.
void keep_min(std::atomic<size_t>& slot, size_t v) {
  size_t cur = slot.load();
  while (v < cur && !slot.compare_exchange_weak(cur, v)) {}
}

// NaN or Inf in a checkpoint is damage (a diverged run, a bad merge): refuse it by default,
// naming the first such element of the first row that holds one.
[[noreturn]] void refuse_non_finite(const UnitTensor& t, size_t row, size_t cols, const std::string& source) {
  size_t i = row * cols;
  while (std::isfinite(t.values[i])) ++i;
  fail_file(source, "tensor " + t.spec.name + " holds " + number(t.values[i]) + " at " + position(t.spec, i) +
                        "; non-finite weights are refused (convert --allow-non-finite keeps them)");
}

[[noreturn]] void refuse_unrepresentable(const UnitTensor& t, const Scheme& s, size_t row, size_t cols,
                                         const std::string& source) {
  size_t worst = row * cols;
  for (size_t i = row * cols; i < (row + 1) * cols; ++i)
    if (std::fabs(t.values[i]) > std::fabs(t.values[worst])) worst = i;
  const std::string alternative = s.type == QType::BF16 ? "f32" : "bf16";
  fail_file(source, "tensor " + t.spec.name + " holds " + number(t.values[worst]) + " at " + position(t.spec, worst) +
                        ", which " + s.name() + " cannot represent (it decodes to inf or nan); use " +
                        (s.type == QType::BF16 ? "f32" : "bf16 or f32") + " for it, e.g. --tensor-quant '" +
                        t.spec.name + "=" + alternative + "'");
}

}  // namespace

bool all_finite(const float* x, size_t n) {
  uint32_t non_finite = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &x[i], 4);
    non_finite |= uint32_t((bits & 0x7f800000u) == 0x7f800000u);
  }
  return non_finite == 0;
}

RowCheck check_row(const float* x, const uint8_t* encoded, size_t cols, const QTypeTraits& tr, size_t group,
                   float* back, bool allow_non_finite) {
  const bool finite = all_finite(x, cols);
  if (!finite) return allow_non_finite ? RowCheck::Ok : RowCheck::NonFinite;
  tr.dequantize_row(encoded, cols, group, back);
  return all_finite(back, cols) ? RowCheck::Ok : RowCheck::Unrepresentable;
}

void RowFailures::note(RowCheck c, size_t row) {
  if (c == RowCheck::NonFinite) keep_min(non_finite_, row);
  if (c == RowCheck::Unrepresentable) keep_min(unrepresentable_, row);
}

void RowFailures::refuse_any(const UnitTensor& t, const Scheme& s, const std::string& source) const {
  const size_t cols = size_t(t.spec.shape.back());
  if (non_finite_.load() != SIZE_MAX) refuse_non_finite(t, non_finite_.load(), cols, source);
  if (unrepresentable_.load() != SIZE_MAX) refuse_unrepresentable(t, s, unrepresentable_.load(), cols, source);
}

void refuse_non_finite_values(const UnitTensor& t, const std::string& source) {
  const size_t cols = size_t(t.spec.shape.back()), rows = t.values.size() / cols;
  for (size_t r = 0; r < rows; ++r)
    if (!all_finite(&t.values[r * cols], cols)) refuse_non_finite(t, r, cols, source);
}

void check_encoding(const UnitTensor& t, const Scheme& s, const std::string& source, ThreadPool& pool,
                    bool allow_non_finite) {
  const EncodedTensor& e = t.encoded;
  const size_t rows = size_t(e.rows()), cols = size_t(e.cols()), rb = e.row_bytes();
  const auto& tr = qtype_traits(s.type);
  RowFailures failures;
  pool.parallel_for(rows, [&](size_t b, size_t end) {
    std::vector<float> back(cols);
    for (size_t r = b; r < end; ++r) {
      const RowCheck c = check_row(&t.values[r * cols], &e.data[r * rb], cols, tr, s.group, back.data(),
                                   allow_non_finite);
      failures.note(c, r);
      if (failures.stop_chunk(c)) return;  // the rows after it in this chunk cannot be reported first
    }
  });
  failures.refuse_any(t, s, source);
}

}  // namespace sf
