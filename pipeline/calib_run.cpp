#include "pipeline/calib_run.h"

#include <algorithm>

#include "core/error.h"
#include "pipeline/awq_fold.h"

namespace sf {

TensorView f32_view(const UnitTensor& t) {
  TensorView v;
  v.name = t.spec.name;
  v.type = QType::F32;
  v.shape = t.spec.shape;
  v.data = reinterpret_cast<const uint8_t*>(t.values.data());
  v.nbytes = t.values.size() * sizeof(float);
  v.row_bytes = size_t(t.spec.shape.back()) * sizeof(float);
  return v;
}

TensorView encoded_view(const UnitTensor& t) {
  TensorView v;
  v.name = t.spec.name;
  v.type = t.encoded.type;
  v.group = t.encoded.group;
  v.shape = t.encoded.shape;
  v.data = t.encoded.data.data();
  v.nbytes = t.encoded.data.size();
  v.row_bytes = t.encoded.row_bytes();
  return v;
}

RowCapture::RowCapture(const bool (&wanted)[kLinearInputs]) { std::copy(wanted, wanted + kLinearInputs, wanted_); }

void RowCapture::input(LinearInput where, const float* x, size_t rows, size_t cols) {
  const size_t g = size_t(where);
  if (wanted_[g]) rows_[g].insert(rows_[g].end(), x, x + rows * cols);
}

void RowCapture::residual_base(LinearInput where, const float* x, size_t rows, size_t cols) {
  const size_t g = size_t(where);
  if (wanted_[g]) bases_[g].insert(bases_[g].end(), x, x + rows * cols);
}

void RowCapture::clear() {
  for (auto& r : rows_) r.clear();
  for (auto& b : bases_) b.clear();
}

StatsTap::StatsTap(const ModelDesc& d, const CalibMethodInfo& m, size_t total_rows, ThreadPool& pool,
                   const bool (&wanted)[kLinearInputs], bool with_cross, bool with_drift)
    : pool_(pool), stride_(std::max<size_t>(1, total_rows / kAwqSampleRows)), drift_(with_cross && with_drift) {
  std::copy(wanted, wanted + kLinearInputs, wanted_);
  for (size_t g = 0; g < kLinearInputs; ++g) {
    if (!wanted_[g]) continue;
    const size_t width = group_width(d, LinearInput(g));
    stats[g].reset(width, m.needs_gram || with_cross, 0, with_cross);
    if (m.needs_sample) sampler_[g].reset(width, false, kAwqSampleRows);
  }
}

StatsTap::StatsTap(const ModelDesc& d, bool with_gram, ThreadPool& pool) : pool_(pool), stride_(1) {
  std::fill(wanted_, wanted_ + kLinearInputs, true);
  for (size_t g = 0; g < kLinearInputs; ++g) stats[g].reset(group_width(d, LinearInput(g)), with_gram, 0);
}

void StatsTap::pair_with(const RowCapture* ref) {
  ref_ = ref;
  std::fill(ref_used_, ref_used_ + kLinearInputs, 0);
  std::fill(base_used_, base_used_ + kLinearInputs, 0);
}

void StatsTap::residual_base(LinearInput where, const float* x, size_t rows, size_t cols) {
  const size_t g = size_t(where);
  if (!drift_ || !wanted_[g]) return;
  const std::vector<float>* r = ref_ ? &ref_->bases(where) : nullptr;
  if (!r || r->size() < (base_used_[g] + rows) * cols || last_in_[g].size() != rows * stats[g].channels)
    fail("calibration: the reference run saw fewer rows than the quantized run");
  delta_.resize(rows * cols);
  const float* rb = r->data() + base_used_[g] * cols;
  for (size_t i = 0; i < rows * cols; ++i) delta_[i] = rb[i] - x[i];
  stats[g].add_residual(delta_.data(), last_in_[g].data(), rows, cols, &pool_);
  base_used_[g] += rows;
}

void StatsTap::input(LinearInput where, const float* x, size_t rows, size_t cols) {
  const size_t g = size_t(where);
  if (!wanted_[g]) return;
  if (stats[g].with_cross) {
    // Both runs cover the same sequences in the same calls, so the k-th rows seen here are the
    // k-th rows the reference run captured.
    const std::vector<float>* r = ref_ ? &ref_->rows(where) : nullptr;
    if (!r || r->size() < (ref_used_[g] + rows) * cols)
      fail("calibration: the reference run saw fewer rows than the quantized run");
    stats[g].add_pair(x, r->data() + ref_used_[g] * cols, rows, &pool_);
    ref_used_[g] += rows;
    if (drift_) last_in_[g].assign(x, x + rows * cols);
  } else {
    stats[g].add(x, rows, &pool_);
  }
  if (sampler_[g].max_sample_rows > 0)
    for (size_t r = 0; r < rows; ++r, ++seen_[g])
      if (seen_[g] % stride_ == 0) sampler_[g].add(x + r * cols, 1, nullptr);
}

void StatsTap::finish() {
  for (size_t g = 0; g < kLinearInputs; ++g) {
    stats[g].sample = std::move(sampler_[g].sample);
    stats[g].sample_rows = sampler_[g].sample_rows;
    stats[g].max_sample_rows = sampler_[g].max_sample_rows;
  }
}

void decoded_row(const UnitTensor& t, const Scheme* s, size_t r, std::vector<float>& row,
                 std::vector<uint8_t>& bytes) {
  const size_t cols = size_t(t.spec.shape.back());
  const float* x = &t.values[r * cols];
  row.assign(x, x + cols);
  if (!s || s->type == QType::F32) return;
  const auto& tr = qtype_traits(s->type);
  bytes.resize(tr.row_bytes(cols, s->group));
  tr.quantize_row(x, cols, s->group, bytes.data());
  tr.dequantize_row(bytes.data(), cols, s->group, row.data());
}

}  // namespace sf
