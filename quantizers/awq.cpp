// AWQ (Lin et al., 2023): channels with large activations matter most, so scale their weight
// columns up by s before quantizing (and the input down by s, folded into the op before), which
// gives them a finer grid relative to their size. s = m^alpha from the channels' mean magnitude m,
// alpha chosen by the quantized group's output error on the sample rows.
#include <Eigen/Dense>
#include <algorithm>
#include <cmath>

#include "quantizers/calib_methods.h"

namespace sf {

namespace {

using RowMajorF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
constexpr size_t kAwqRowChunk = 64;  // weight rows per task: fixed, so the sum's order is too
constexpr float kMinScale = 1e-4f, kMaxScale = 1e4f;

struct Task {
  size_t linear, r0, nr;
};

// Σ ||X (W - Q(W diag(s)) diag(1/s))ᵀ||² over the rows of one task.
double task_error(const AwqLinear& lin, const Task& t, size_t cols, const std::vector<float>& s,
                  const Eigen::Map<const RowMajorF>& X) {
  const auto& tr = qtype_traits(lin.scheme.type);
  const size_t rb = tr.row_bytes(cols, lin.scheme.group);
  std::vector<float> scaled(cols), deq(cols);
  std::vector<uint8_t> bytes(rb);
  RowMajorF D(Eigen::Index(t.nr), Eigen::Index(cols));
  for (size_t r = 0; r < t.nr; ++r) {
    const float* row = lin.w + (t.r0 + r) * cols;
    for (size_t j = 0; j < cols; ++j) scaled[j] = row[j] * s[j];
    tr.quantize_row(scaled.data(), cols, lin.scheme.group, bytes.data());
    tr.dequantize_row(bytes.data(), cols, lin.scheme.group, deq.data());
    for (size_t j = 0; j < cols; ++j) D(Eigen::Index(r), Eigen::Index(j)) = row[j] - deq[j] / s[j];
  }
  const Eigen::MatrixXf E = X * D.transpose();
  return E.cast<double>().squaredNorm();
}

}  // namespace

std::vector<float> awq_search_scales(const std::vector<AwqLinear>& linears, size_t cols, const InputStats& stats,
                                     const CalibParams& params, ThreadPool& pool) {
  std::vector<float> ones(cols, 1.0f);
  if (linears.empty() || cols == 0 || stats.tokens == 0 || stats.sample_rows == 0 || stats.sum_abs.size() != cols ||
      stats.sample.size() < stats.sample_rows * cols)
    return ones;
  std::vector<double> m(cols);
  double mmax = 0;
  for (size_t j = 0; j < cols; ++j) {
    m[j] = stats.sum_abs[j] / double(stats.tokens);
    if (std::isfinite(m[j])) mmax = std::max(mmax, m[j]);
  }
  if (!(mmax > 0)) return ones;
  for (auto& v : m) v = std::isfinite(v) ? std::max(v, mmax * 1e-6) : mmax;  // no zero to a power

  const Eigen::Map<const RowMajorF> X(stats.sample.data(), Eigen::Index(stats.sample_rows), Eigen::Index(cols));
  std::vector<Task> tasks;
  for (size_t l = 0; l < linears.size(); ++l)
    for (size_t r0 = 0; r0 < linears[l].rows; r0 += kAwqRowChunk)
      tasks.push_back({l, r0, std::min(kAwqRowChunk, linears[l].rows - r0)});

  auto error_of = [&](const std::vector<float>& s) {
    std::vector<double> errs(tasks.size());
    pool.parallel_for(tasks.size(), [&](size_t t0, size_t t1) {
      for (size_t t = t0; t < t1; ++t) errs[t] = task_error(linears[tasks[t].linear], tasks[t], cols, s, X);
    });
    double sum = 0;
    for (double e : errs) sum += e;  // in task order
    return sum;
  };

  std::vector<float> best = ones;
  double best_err = error_of(ones);  // alpha = 0: round-to-nearest
  const int grid = std::max(params.awq_grid, 1);
  std::vector<float> s(cols);
  for (int k = 1; k < grid; ++k) {
    const double alpha = double(k) / grid;
    double smax = 0, smin = INFINITY;
    std::vector<double> raw(cols);
    for (size_t j = 0; j < cols; ++j) {
      raw[j] = std::pow(m[j], alpha);
      smax = std::max(smax, raw[j]);
      smin = std::min(smin, raw[j]);
    }
    const double norm = std::sqrt(smax * smin);  // centres the scales around 1 on a log scale
    for (size_t j = 0; j < cols; ++j) s[j] = std::clamp(float(raw[j] / norm), kMinScale, kMaxScale);
    const double e = error_of(s);
    if (e < best_err) { best_err = e; best = s; }  // strict: ties keep the smaller exponent
  }
  return best;
}

}  // namespace sf
