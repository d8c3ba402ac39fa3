#include "pipeline/calib_run.h"

#include <algorithm>

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

StatsTap::StatsTap(const ModelDesc& d, const CalibMethodInfo& m, size_t total_rows, ThreadPool& pool)
    : pool_(pool), stride_(std::max<size_t>(1, total_rows / kAwqSampleRows)) {
  for (size_t g = 0; g < kLinearInputs; ++g) {
    const size_t width = group_width(d, LinearInput(g));
    stats[g].reset(width, m.needs_gram, 0);
    if (m.needs_sample) sampler_[g].reset(width, false, kAwqSampleRows);
  }
}

StatsTap::StatsTap(const ModelDesc& d, bool with_gram, ThreadPool& pool) : pool_(pool), stride_(1) {
  for (size_t g = 0; g < kLinearInputs; ++g) stats[g].reset(group_width(d, LinearInput(g)), with_gram, 0);
}

void StatsTap::input(LinearInput where, const float* x, size_t rows, size_t cols) {
  const size_t g = size_t(where);
  stats[g].add(x, rows, &pool_);
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
