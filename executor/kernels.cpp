#include "executor/kernels.h"

#include "core/error.h"
#include "executor/attend_simd.h"
#include "executor/matmul_simd.h"

#include <algorithm>
#include <string>
#include <cmath>
#include <vector>

namespace sf::kernels {

namespace {
// Below this many multiply-adds a product is faster on one thread than split up.
constexpr size_t kParallelMin = 1 << 16;

const float* f32_data(const TensorView& v) { return reinterpret_cast<const float*>(v.data); }

// The vector `v` decoded to f32 (norm weights and biases are f32 by default: no copy then).
const float* as_f32(const TensorView& v, std::vector<float>& buf) {
  if (v.type == QType::F32) return f32_data(v);
  buf.resize(size_t(v.cols()));
  qtype_traits(v.type).dequantize_row(v.data, buf.size(), v.group, buf.data());
  return buf.data();
}
}  // namespace

void matmul(const TensorView& w, const TensorView* bias, const float* x, size_t T, float* y, ThreadPool* pool) {
  std::vector<float> bias_buf;
  simd::matmul(w, bias ? as_f32(*bias, bias_buf) : nullptr, x, T, y, pool);
}

void matmul_many(const MatmulOut* outs, size_t n, const float* x, size_t T, ThreadPool* pool) {
  if (n > simd::kMaxProducts)
    fail("matmul_many: " + std::to_string(n) + " products, at most " + std::to_string(simd::kMaxProducts));
  std::vector<float> bias_buf[simd::kMaxProducts];
  simd::Product products[simd::kMaxProducts];
  for (size_t i = 0; i < n; ++i) {
    if (outs[i].w->cols() != outs[0].w->cols())
      fail("matmul_many: products over inputs of different widths (" + std::to_string(outs[0].w->cols()) + " and " +
           std::to_string(outs[i].w->cols()) + ")");
    products[i] = {outs[i].w, outs[i].bias ? as_f32(*outs[i].bias, bias_buf[i]) : nullptr, outs[i].y};
  }
  simd::matmul_many(products, n, x, T, pool);
}

void matmul_reference(const TensorView& w, const TensorView* bias, const float* x, size_t T, float* y,
                      ThreadPool* pool) {
  const auto& tr = qtype_traits(w.type);
  const size_t cols = size_t(w.cols()), n = size_t(w.rows());
  std::vector<float> bias_buf;
  const float* b = bias ? as_f32(*bias, bias_buf) : nullptr;
  auto rows = [&](size_t begin, size_t end) {
    // One token: the type's own dot. Several: decode each row once and reuse it for every token.
    thread_local std::vector<float> row;
    for (size_t r = begin; r < end; ++r) {
      const float add = b ? b[r] : 0.0f;
      if (T == 1) {
        y[r] = tr.dot_row(w.row(int64_t(r)), x, cols, w.group) + add;
        continue;
      }
      const float* wr;
      if (w.type == QType::F32) {
        wr = reinterpret_cast<const float*>(w.row(int64_t(r)));
      } else {
        row.resize(cols);
        tr.dequantize_row(w.row(int64_t(r)), cols, w.group, row.data());
        wr = row.data();
      }
      for (size_t t = 0; t < T; ++t) {
        const float* xt = x + t * cols;
        float s = 0;
        for (size_t i = 0; i < cols; ++i) s += wr[i] * xt[i];
        y[t * n + r] = s + add;
      }
    }
  };
  if (pool && pool->size() > 1 && n * cols * T >= kParallelMin)
    pool->parallel_for(n, rows);
  else
    rows(0, n);
}

void dequantize_row(const TensorView& w, int64_t row, float* out) {
  qtype_traits(w.type).dequantize_row(w.row(row), size_t(w.cols()), w.group, out);
}

void norm(NormKind kind, const float* x, size_t T, size_t n, const TensorView& weight, const TensorView* bias,
          double eps, float* out) {
  std::vector<float> wbuf, bbuf;
  const float* w = as_f32(weight, wbuf);
  const float* b = bias ? as_f32(*bias, bbuf) : nullptr;
  for (size_t t = 0; t < T; ++t) {
    const float* xt = x + t * n;
    float* ot = out + t * n;
    double mean = 0;
    if (kind == NormKind::Layer) {
      for (size_t i = 0; i < n; ++i) mean += xt[i];
      mean /= double(n);
    }
    double ss = 0;
    for (size_t i = 0; i < n; ++i) ss += (double(xt[i]) - mean) * (double(xt[i]) - mean);
    const float inv = float(1.0 / std::sqrt(ss / double(n) + eps));
    const float m = float(mean);
    for (size_t i = 0; i < n; ++i) ot[i] = (xt[i] - m) * inv * w[i] + (b ? b[i] : 0.0f);
  }
}

void rotate_pairs(float* v, size_t n_pairs, const double* freqs, int64_t pos) {
  for (size_t i = 0; i < n_pairs; ++i) {
    const double angle = double(pos) * freqs[i];
    const float c = float(std::cos(angle)), s = float(std::sin(angle));
    float* p = v + 2 * i;
    const float a = p[0], b = p[1];
    p[0] = a * c - b * s;
    p[1] = a * s + b * c;
  }
}

void rotation_table(size_t n_pairs, const double* freqs, int64_t pos, float* cs) {
  for (size_t i = 0; i < n_pairs; ++i) {
    const double angle = double(pos) * freqs[i];
    cs[2 * i] = float(std::cos(angle));
    cs[2 * i + 1] = float(std::sin(angle));
  }
}

void rotate_pairs(float* v, size_t n_pairs, const float* cs) {
  for (size_t i = 0; i < n_pairs; ++i) {
    const float c = cs[2 * i], s = cs[2 * i + 1];
    float* p = v + 2 * i;
    const float a = p[0], b = p[1];
    p[0] = a * c - b * s;
    p[1] = a * s + b * c;
  }
}

void attend_head(const float* q, const float* k, const float* v, size_t stride, size_t n_pos, size_t head_dim,
                 float scale, float* scores, float* out) {
  simd::attend_head(q, k, v, stride, n_pos, head_dim, scale, scores, out);
}

void attend_head_reference(const float* q, const float* k, const float* v, size_t stride, size_t n_pos,
                           size_t head_dim, float scale, float* scores, float* out) {
  float mx = -INFINITY;
  for (size_t j = 0; j < n_pos; ++j) {
    const float* kj = k + j * stride;
    float s = 0;
    for (size_t e = 0; e < head_dim; ++e) s += q[e] * kj[e];
    scores[j] = s * scale;
    mx = std::max(mx, scores[j]);
  }
  double sum = 0;
  for (size_t j = 0; j < n_pos; ++j) sum += (scores[j] = std::exp(scores[j] - mx));
  const float inv = float(1.0 / sum);
  std::fill(out, out + head_dim, 0.0f);
  for (size_t j = 0; j < n_pos; ++j) {
    const float p = scores[j] * inv;
    const float* vj = v + j * stride;
    for (size_t e = 0; e < head_dim; ++e) out[e] += p * vj[e];
  }
}

float gelu_tanh(float x) {
  const float k = 0.7978845608028654f;  // sqrt(2 / pi)
  return 0.5f * x * (1.0f + std::tanh(k * (x + 0.044715f * x * x * x)));
}

}  // namespace sf::kernels
