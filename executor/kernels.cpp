#include "executor/kernels.h"

#include <cmath>
#include <vector>

namespace sf::kernels {

namespace {
// Below this many weights a matrix-vector product is faster on one thread than split up.
constexpr size_t kParallelMin = 1 << 16;
}  // namespace

void matvec(const TensorView& w, const float* x, float* y, ThreadPool* pool) {
  const auto& tr = qtype_traits(w.type);
  const size_t cols = size_t(w.cols());
  auto rows = [&](size_t b, size_t e) {
    for (size_t r = b; r < e; ++r) y[r] = tr.dot_row(w.row(int64_t(r)), x, cols, w.group);
  };
  const size_t n = size_t(w.rows());
  if (pool && pool->size() > 1 && n * cols >= kParallelMin)
    pool->parallel_for(n, rows);
  else
    rows(0, n);
}

void dequantize_row(const TensorView& w, int64_t row, float* out) {
  qtype_traits(w.type).dequantize_row(w.row(row), size_t(w.cols()), w.group, out);
}

void rmsnorm(const float* x, const TensorView& weight, double eps, size_t n, float* out) {
  double ss = 0;
  for (size_t i = 0; i < n; ++i) ss += double(x[i]) * x[i];
  const float inv = float(1.0 / std::sqrt(ss / double(n) + eps));
  if (weight.type == QType::F32) {  // the default for norms: use the mapped values directly
    const float* w = reinterpret_cast<const float*>(weight.data);
    for (size_t i = 0; i < n; ++i) out[i] = x[i] * inv * w[i];
    return;
  }
  thread_local std::vector<float> w;
  w.resize(n);
  qtype_traits(weight.type).dequantize_row(weight.data, n, weight.group, w.data());
  for (size_t i = 0; i < n; ++i) out[i] = x[i] * inv * w[i];
}

void rope(float* v, int64_t heads, int64_t head_dim, int64_t rope_dims, double theta, int64_t pos) {
  for (int64_t i = 0; i < rope_dims / 2; ++i) {
    const double freq = std::pow(theta, -double(2 * i) / double(rope_dims));
    const double angle = double(pos) * freq;
    const float c = float(std::cos(angle)), s = float(std::sin(angle));
    for (int64_t h = 0; h < heads; ++h) {
      float* p = v + h * head_dim + 2 * i;
      const float a = p[0], b = p[1];
      p[0] = a * c - b * s;
      p[1] = a * s + b * c;
    }
  }
}

}  // namespace sf::kernels
