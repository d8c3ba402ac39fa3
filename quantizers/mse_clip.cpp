// mse: per group, the clipping range that minimises the weight error weighted by how strongly each
// input channel is driven (the diagonal of the layer's Hessian), trading a few clipped outliers for
// a finer step on everything else.
#include <algorithm>
#include <cmath>

#include "quantizers/calib_methods.h"

namespace sf {

std::vector<double> channel_importance(const InputStats& stats, size_t cols) {
  std::vector<double> imp(cols, 1.0);
  if (stats.tokens == 0 || stats.sum_sq.size() != cols) return imp;
  double mean = 0;
  for (size_t j = 0; j < cols; ++j) mean += imp[j] = stats.sum_sq[j] / double(stats.tokens);
  mean /= double(std::max<size_t>(cols, 1));
  if (!(mean > 0) || !std::isfinite(mean)) return std::vector<double>(cols, 1.0);
  const double floor = mean * 1e-6;
  for (auto& v : imp) v = std::isfinite(v) ? std::max(v, floor) : mean;
  return imp;
}

std::vector<float> clip_ratios(const CalibParams& params) {
  const double lo = std::clamp(params.min_clip, 1e-3, 1.0);
  const int steps = std::max(params.clip_steps, 1);
  std::vector<float> r{1.0f};
  for (int k = 1; k < steps; ++k) r.push_back(float(1.0 - (1.0 - lo) * k / (steps - 1)));
  return r;
}

namespace {

double group_error(const QuantGrid& grid, const float* w, const double* imp, size_t n, const GroupParams& p) {
  double e = 0;
  for (size_t j = 0; j < n; ++j) {
    const double d = double(w[j]) - double(grid.quantize(w[j], p));
    e += imp[j] * d * d;
  }
  return e;
}

}  // namespace

GroupParams mse_fit_group(const QuantGrid& grid, const float* w, const double* imp, size_t n,
                          const std::vector<float>& ratios, double* err) {
  const GroupRange range = QuantGrid::range_of(w, n);
  GroupParams best = grid.fit_range(range, 1.0f);
  double best_err = group_error(grid, w, imp, n, best);
  auto consider = [&](const GroupParams& p) {
    const double e = group_error(grid, w, imp, n, p);
    if (e < best_err) { best_err = e; best = p; }  // strict: ties keep the larger ratio
  };
  for (size_t k = 1; k < ratios.size(); ++k) {
    const float c = ratios[k];
    consider(grid.fit_range(range, c));
    if (grid.asymmetric()) {  // one tail may hold the outliers: cut it alone
      consider(grid.fit_asym(range, 1.0f - c, 0.0f));
      consider(grid.fit_asym(range, 0.0f, 1.0f - c));
    }
  }
  if (err) *err = best_err;
  return best;
}

std::vector<uint8_t> encode_mse(const QuantGrid& grid, const float* w, size_t rows, const std::vector<double>& imp,
                                const CalibParams& params, ThreadPool& pool) {
  const size_t cols = grid.cols(), rb = grid.row_bytes(), G = grid.groups();
  const std::vector<float> ratios = clip_ratios(params);
  std::vector<uint8_t> out(rows * rb, 0);
  pool.parallel_for(rows, [&](size_t r0, size_t r1) {
    std::vector<GroupParams> ps(G);
    std::vector<int> codes(cols);
    for (size_t r = r0; r < r1; ++r) {
      const float* row = w + r * cols;
      for (size_t g = 0; g < G; ++g) {
        const size_t b = grid.group_begin(g), e = grid.group_end(g);
        ps[g] = mse_fit_group(grid, row + b, imp.data() + b, e - b, ratios);
        for (size_t j = b; j < e; ++j) codes[j] = grid.code(row[j], ps[g]);
      }
      grid.pack_row(ps.data(), codes.data(), &out[r * rb]);
    }
  });
  return out;
}

}  // namespace sf
