#include "quantizers/calibration.h"

#include <cmath>

#include "core/error.h"

namespace sf {

namespace {

const std::vector<CalibMethodInfo> kCalibMethods = {
    {CalibMethod::Mse, "mse", "per-group clipping range minimising the error weighted by the inputs' second moments",
     false, false},
    {CalibMethod::Awq, "awq", "activation-aware per-channel scaling folded into the op before, then mse clipping",
     false, true},
    {CalibMethod::Gptq, "gptq", "Hessian-based error compensation column by column (Cholesky, lazy batches)", true,
     false},
};

}  // namespace

const std::vector<CalibMethodInfo>& calib_methods() { return kCalibMethods; }

std::optional<CalibMethod> calib_method_from_name(std::string_view name) {
  for (const auto& m : kCalibMethods)
    if (name == m.name) return m.method;
  return std::nullopt;
}

const CalibMethodInfo& calib_method_info(CalibMethod m) {
  for (const auto& i : kCalibMethods)
    if (i.method == m) return i;
  fail("unknown calibration method");
}

void InputStats::reset(size_t n, bool gram_too, size_t max_sample) {
  channels = n;
  tokens = 0;
  sum_sq.assign(n, 0.0);
  sum_abs.assign(n, 0.0);
  with_gram = gram_too;
  gram.assign(gram_too ? n * n : 0, 0.0);
  max_sample_rows = max_sample;
  sample.clear();
  sample_rows = 0;
}

// STAND-IN (replaced by the calibration numerics work): serial sums.
void InputStats::add(const float* x, size_t rows, ThreadPool*) {
  for (size_t r = 0; r < rows; ++r) {
    const float* row = x + r * channels;
    for (size_t j = 0; j < channels; ++j) {
      sum_sq[j] += double(row[j]) * row[j];
      sum_abs[j] += std::fabs(double(row[j]));
    }
    if (with_gram)
      for (size_t i = 0; i < channels; ++i)
        for (size_t j = 0; j < channels; ++j) gram[i * channels + j] += double(row[i]) * row[j];
    if (sample_rows < max_sample_rows) {
      sample.insert(sample.end(), row, row + channels);
      ++sample_rows;
    }
  }
  tokens += rows;
}

// STAND-IN (replaced by the calibration numerics work): round-to-nearest for every method.
std::vector<uint8_t> encode_calibrated(CalibMethod, const std::string&, const float* w, size_t rows, size_t cols,
                                       const Scheme& scheme, const InputStats&, const CalibParams&, ThreadPool&,
                                       std::vector<std::string>&) {
  const auto& tr = qtype_traits(scheme.type);
  const size_t rb = tr.row_bytes(cols, scheme.group);
  std::vector<uint8_t> out(rows * rb, 0);
  for (size_t r = 0; r < rows; ++r) tr.quantize_row(w + r * cols, cols, scheme.group, &out[r * rb]);
  return out;
}

// STAND-IN (replaced by the calibration numerics work): no scaling.
std::vector<float> awq_search_scales(const std::vector<AwqLinear>&, size_t cols, const InputStats&,
                                     const CalibParams&, ThreadPool&) {
  return std::vector<float>(cols, 1.0f);
}

}  // namespace sf
