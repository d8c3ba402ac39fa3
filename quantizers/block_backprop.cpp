#include "quantizers/block_backprop.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <Eigen/Dense>

namespace sf {

namespace {

using MatR = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Strided = Eigen::Map<MatR, 0, Eigen::OuterStride<>>;
using CStrided = Eigen::Map<const MatR, 0, Eigen::OuterStride<>>;
using Map = Eigen::Map<MatR>;
using CMap = Eigen::Map<const MatR>;

// y (n x out) = x (n x in) W^T + b.
void linear(const float* x, size_t n, size_t in, const float* w, const float* b, size_t out, float* y) {
  Map Y(y, Eigen::Index(n), Eigen::Index(out));
  Y.noalias() = CMap(x, Eigen::Index(n), Eigen::Index(in)) * CMap(w, Eigen::Index(out), Eigen::Index(in)).transpose();
  if (b) Y.rowwise() += Eigen::Map<const Eigen::RowVectorXf>(b, Eigen::Index(out));
}

// Given dy (n x out) of y = x W^T: dx (n x in) += or = dy W, and dW (out x in) += dy^T x when dw is
// non-empty.
void linear_backward(const float* x, const float* dy, size_t n, size_t in, const float* w, size_t out, float* dx,
                     bool accumulate, std::vector<float>& dw) {
  const CMap DY(dy, Eigen::Index(n), Eigen::Index(out)), X(x, Eigen::Index(n), Eigen::Index(in));
  Map DX(dx, Eigen::Index(n), Eigen::Index(in));
  const CMap W(w, Eigen::Index(out), Eigen::Index(in));
  if (accumulate) DX.noalias() += DY * W;
  else DX.noalias() = DY * W;
  if (!dw.empty()) Map(dw.data(), Eigen::Index(out), Eigen::Index(in)).noalias() += DY.transpose() * X;
}

// The executor's norm (executor/kernels.cpp), keeping each row's mean (0 for RMS) and inverse
// spread for the backward pass.
void norm_forward(NormKind kind, const float* x, size_t n, size_t D, const float* w, const float* b, double eps,
                  float* out, float* mean, float* inv) {
  for (size_t t = 0; t < n; ++t) {
    const float* xt = x + t * D;
    double m = 0, ss = 0;
    if (kind == NormKind::Layer) {
      for (size_t i = 0; i < D; ++i) m += xt[i];
      m /= double(D);
    }
    for (size_t i = 0; i < D; ++i) ss += (double(xt[i]) - m) * (double(xt[i]) - m);
    mean[t] = float(m), inv[t] = float(1.0 / std::sqrt(ss / double(D) + eps));
    for (size_t i = 0; i < D; ++i) out[t * D + i] = (xt[i] - mean[t]) * inv[t] * w[i] + (b ? b[i] : 0.0f);
  }
}

// dx += d norm(x) given dy: with xhat = (x - mean) inv and g = dy * w,
// dx = inv (g - mean(g) [layer norm only] - xhat mean(g xhat)).
void norm_backward(NormKind kind, const float* x, const float* mean, const float* inv, size_t n, size_t D,
                   const float* w, const float* dy, float* dx) {
  std::vector<float> g(D), xh(D);
  for (size_t t = 0; t < n; ++t) {
    double gx = 0, gs = 0;
    for (size_t i = 0; i < D; ++i) {
      xh[i] = (x[t * D + i] - mean[t]) * inv[t];
      g[i] = dy[t * D + i] * w[i];
      gx += double(g[i]) * xh[i], gs += g[i];
    }
    const float a = float(gx / double(D)), c = kind == NormKind::Layer ? float(gs / double(D)) : 0.0f;
    for (size_t i = 0; i < D; ++i) dx[t * D + i] += inv[t] * (g[i] - c - xh[i] * a);
  }
}

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
float silu(float x) { return x * sigmoid(x); }
float silu_grad(float x) {
  const float s = sigmoid(x);
  return s * (1.0f + x * (1.0f - s));
}
constexpr float kGeluK = 0.7978845608028654f;  // sqrt(2 / pi)
float gelu_tanh(float x) { return 0.5f * x * (1.0f + std::tanh(kGeluK * (x + 0.044715f * x * x * x))); }
float gelu_tanh_grad(float x) {
  const float t = std::tanh(kGeluK * (x + 0.044715f * x * x * x));
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * kGeluK * (1.0f + 3.0f * 0.044715f * x * x);
}

// Rotates (sign +1) or un-rotates (sign -1, the backward pass) the RoPE pairs of every head of the
// rows of one sequence.
void rope(float* v, size_t ctx, size_t heads, size_t hd, const std::vector<double>& freqs, float sign) {
  for (size_t p = 0; p < ctx; ++p)
    for (size_t i = 0; i < freqs.size(); ++i) {
      const double angle = double(p) * freqs[i];
      const float c = float(std::cos(angle)), s = sign * float(std::sin(angle));
      for (size_t h = 0; h < heads; ++h) {
        float* q = v + (p * heads + h) * hd + 2 * i;
        const float a = q[0], b = q[1];
        q[0] = a * c - b * s;
        q[1] = a * s + b * c;
      }
    }
}

// Causal softmax of scale * S (S: ctx x ctx), in place: row i over columns 0..i.
void causal_softmax(MatR& s, float scale) {
  for (Eigen::Index i = 0; i < s.rows(); ++i) {
    float mx = -std::numeric_limits<float>::infinity();
    for (Eigen::Index j = 0; j <= i; ++j) mx = std::max(mx, s(i, j) * scale);
    float sum = 0;
    for (Eigen::Index j = 0; j <= i; ++j) sum += (s(i, j) = std::exp(s(i, j) * scale - mx));
    for (Eigen::Index j = 0; j <= i; ++j) s(i, j) /= sum;
    for (Eigen::Index j = i + 1; j < s.cols(); ++j) s(i, j) = 0;
  }
}

void grow(std::vector<float>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

}  // namespace

const char* block_linear_name(BlockLinear l) {
  static constexpr const char* kNames[kBlockLinears] = {"attn.q", "attn.k",  "attn.v",  "attn.o",
                                                        "ffn.gate", "ffn.up", "ffn.down"};
  return kNames[size_t(l)];
}

BlockWeightsF32 block_weights_f32(const std::function<const float*(const std::string&)>& lookup) {
  BlockWeightsF32 w;
  w.attn_norm = lookup("attn_norm.weight"), w.attn_norm_b = lookup("attn_norm.bias");
  w.ffn_norm = lookup("ffn_norm.weight"), w.ffn_norm_b = lookup("ffn_norm.bias");
  for (size_t i = 0; i < kBlockLinears; ++i) {
    const std::string name = block_linear_name(BlockLinear(i));
    w.w[i] = lookup(name + ".weight"), w.b[i] = lookup(name + ".bias");
  }
  return w;
}

const char* backprop_unsupported(const ModelDesc& d) {
  if (d.positional == PositionalKind::Rope2D) return "2-D RoPE";
  if (d.residual != ResidualKind::PreNorm) return "a residual around the scaled norm output";
  if (d.mask != MaskKind::Causal) return "a prefix-bidirectional mask";
  return nullptr;
}

BlockBackprop::BlockBackprop(const ModelDesc& d, size_t ctx) : d_(d), ctx_(ctx) {
  if (d.positional == PositionalKind::Rope)
    for (int64_t i = 0; i < d.rope_dims / 2; ++i) freqs_.push_back(std::pow(d.rope_theta, -double(2 * i) / double(d.rope_dims)));
}

void BlockBackprop::forward(const BlockWeightsF32& w, float* x, size_t n_seq) {
  const ModelDesc& d = d_;
  const size_t n = n_seq * ctx_, D = size_t(d.d_model), hd = size_t(d.head_dim), H = size_t(d.n_heads),
               KV = size_t(d.n_kv_heads), qd = H * hd, kvd = KV * hd, F = size_t(d.ffn_dim);
  n_ = n;
  for (auto* v : {&x0_, &xn1_, &x1_, &xn2_}) grow(*v, n * D);
  for (auto* v : {&inv1_, &mean1_, &inv2_, &mean2_}) grow(*v, n);
  for (auto* v : {&q_, &att_}) grow(*v, n * qd);
  for (auto* v : {&k_, &v_}) grow(*v, n * kvd);
  for (auto* v : {&gate_, &up_, &act_}) grow(*v, n * F);
  std::copy_n(x, n * D, x0_.data());
  const auto& W = w.w;
  const auto& B = w.b;
  norm_forward(d.norm, x, n, D, w.attn_norm, w.attn_norm_b, d.norm_eps, xn1_.data(), mean1_.data(), inv1_.data());
  linear(xn1_.data(), n, D, W[0], B[0], qd, q_.data());
  linear(xn1_.data(), n, D, W[1], B[1], kvd, k_.data());
  linear(xn1_.data(), n, D, W[2], B[2], kvd, v_.data());
  const float scale = 1.0f / std::sqrt(float(hd));
  MatR s{Eigen::Index(ctx_), Eigen::Index(ctx_)};
  for (size_t sq = 0; sq < n_seq; ++sq) {
    const size_t r0 = sq * ctx_;
    rope(&q_[r0 * qd], ctx_, H, hd, freqs_, 1.0f);
    rope(&k_[r0 * kvd], ctx_, KV, hd, freqs_, 1.0f);
    for (size_t h = 0; h < H; ++h) {
      const size_t kh = h / (H / KV);
      const CStrided Q(&q_[r0 * qd + h * hd], Eigen::Index(ctx_), Eigen::Index(hd), Eigen::OuterStride<>(Eigen::Index(qd)));
      const CStrided K(&k_[r0 * kvd + kh * hd], Eigen::Index(ctx_), Eigen::Index(hd), Eigen::OuterStride<>(Eigen::Index(kvd)));
      const CStrided V(&v_[r0 * kvd + kh * hd], Eigen::Index(ctx_), Eigen::Index(hd), Eigen::OuterStride<>(Eigen::Index(kvd)));
      s.noalias() = Q * K.transpose();  // a plain product: Eigen's GEMM path (a scaled one is not)
      causal_softmax(s, scale);
      Strided(&att_[r0 * qd + h * hd], Eigen::Index(ctx_), Eigen::Index(hd), Eigen::OuterStride<>(Eigen::Index(qd))).noalias() = s * V;
    }
  }
  std::vector<float> o(n * D);
  linear(att_.data(), n, qd, W[3], B[3], D, o.data());
  for (size_t i = 0; i < n * D; ++i) x1_[i] = x[i] + o[i];
  norm_forward(d.norm, x1_.data(), n, D, w.ffn_norm, w.ffn_norm_b, d.norm_eps, xn2_.data(), mean2_.data(), inv2_.data());
  linear(xn2_.data(), n, D, W[5], B[5], F, up_.data());
  if (d.gated()) {
    linear(xn2_.data(), n, D, W[4], B[4], F, gate_.data());
    for (size_t i = 0; i < n * F; ++i) act_[i] = silu(gate_[i]) * up_[i];
  } else {
    for (size_t i = 0; i < n * F; ++i) act_[i] = gelu_tanh(up_[i]);
  }
  linear(act_.data(), n, F, W[6], B[6], D, o.data());
  for (size_t i = 0; i < n * D; ++i) x[i] = x1_[i] + o[i];
}

void BlockBackprop::backward(const BlockWeightsF32& w, float* dx, BlockLinearGrads& g) {
  const ModelDesc& d = d_;
  const size_t n = n_, n_seq = n / ctx_, D = size_t(d.d_model), hd = size_t(d.head_dim), H = size_t(d.n_heads),
               KV = size_t(d.n_kv_heads), qd = H * hd, kvd = KV * hd, F = size_t(d.ffn_dim);
  const auto& W = w.w;
  // FFN: dx is dL/dx2 and becomes dL/dx1 (the residual passes it through, the branch adds).
  std::vector<float> dact(n * F), dup(n * F), dxn(n * D);
  linear_backward(act_.data(), dx, n, F, W[6], D, dact.data(), false, g.dw[6]);
  if (d.gated()) {
    std::vector<float> dgate(n * F);
    for (size_t i = 0; i < n * F; ++i) {
      dup[i] = dact[i] * silu(gate_[i]);
      dgate[i] = dact[i] * up_[i] * silu_grad(gate_[i]);
    }
    linear_backward(xn2_.data(), dgate.data(), n, D, W[4], F, dxn.data(), false, g.dw[4]);
    linear_backward(xn2_.data(), dup.data(), n, D, W[5], F, dxn.data(), true, g.dw[5]);
  } else {
    for (size_t i = 0; i < n * F; ++i) dup[i] = dact[i] * gelu_tanh_grad(up_[i]);
    linear_backward(xn2_.data(), dup.data(), n, D, W[5], F, dxn.data(), false, g.dw[5]);
  }
  norm_backward(d.norm, x1_.data(), mean2_.data(), inv2_.data(), n, D, w.ffn_norm, dxn.data(), dx);

  // Attention: dx is dL/dx1 and becomes dL/dx0.
  std::vector<float> datt(n * qd), dq(n * qd), dk(n * kvd, 0.0f), dv(n * kvd, 0.0f);
  linear_backward(att_.data(), dx, n, qd, W[3], D, datt.data(), false, g.dw[3]);
  const float scale = 1.0f / std::sqrt(float(hd));
  MatR p{Eigen::Index(ctx_), Eigen::Index(ctx_)}, dp{p.rows(), p.cols()};
  for (size_t sq = 0; sq < n_seq; ++sq) {
    const size_t r0 = sq * ctx_;
    const auto stride_q = Eigen::OuterStride<>(Eigen::Index(qd)), stride_kv = Eigen::OuterStride<>(Eigen::Index(kvd));
    const Eigen::Index T = Eigen::Index(ctx_), E = Eigen::Index(hd);
    for (size_t h = 0; h < H; ++h) {
      const size_t kh = h / (H / KV);
      const CStrided Q(&q_[r0 * qd + h * hd], T, E, stride_q), K(&k_[r0 * kvd + kh * hd], T, E, stride_kv),
          V(&v_[r0 * kvd + kh * hd], T, E, stride_kv), dO(&datt[r0 * qd + h * hd], T, E, stride_q);
      p.noalias() = Q * K.transpose();
      causal_softmax(p, scale);
      dp.noalias() = dO * V.transpose();
      Strided(&dv[r0 * kvd + kh * hd], T, E, stride_kv).noalias() += p.transpose() * dO;
      // dS = P (dP - rowsum(dP P)); masked entries have P = 0.
      const Eigen::VectorXf rows = (dp.array() * p.array()).rowwise().sum();
      dp = (p.array() * (dp.colwise() - rows).array() * scale).matrix();  // with the scores' scale
      Strided(&dq[r0 * qd + h * hd], T, E, stride_q).noalias() = dp * K;
      Strided(&dk[r0 * kvd + kh * hd], T, E, stride_kv).noalias() += dp.transpose() * Q;
    }
    rope(&dq[r0 * qd], ctx_, H, hd, freqs_, -1.0f);
    rope(&dk[r0 * kvd], ctx_, KV, hd, freqs_, -1.0f);
  }
  linear_backward(xn1_.data(), dq.data(), n, D, W[0], qd, dxn.data(), false, g.dw[0]);
  linear_backward(xn1_.data(), dk.data(), n, D, W[1], kvd, dxn.data(), true, g.dw[1]);
  linear_backward(xn1_.data(), dv.data(), n, D, W[2], kvd, dxn.data(), true, g.dw[2]);
  norm_backward(d.norm, x0_.data(), mean1_.data(), inv1_.data(), n, D, w.attn_norm, dxn.data(), dx);
}

namespace {

// Rows at a time through the head: n x vocab logits are never held whole.
constexpr size_t kHeadRows = 256;

// The head's logits of rows [t0, t0 + m) of x, with their norm's mean and inverse spread.
void head_logits(const ModelDesc& d, const float* norm_w, const float* norm_b, const float* out_w, const float* x,
                 size_t m, std::vector<float>& xn, std::vector<float>& mean, std::vector<float>& inv,
                 std::vector<float>& logits) {
  const size_t D = size_t(d.d_model), V = size_t(d.vocab_size);
  grow(xn, m * D), grow(mean, m), grow(inv, m), grow(logits, m * V);
  norm_forward(d.norm, x, m, D, norm_w, norm_b, d.norm_eps, xn.data(), mean.data(), inv.data());
  linear(xn.data(), m, D, out_w, nullptr, V, logits.data());
}

void log_softmax_rows(float* l, size_t m, size_t V) {
  for (size_t t = 0; t < m; ++t) {
    float* r = l + t * V;
    const float mx = *std::max_element(r, r + V);
    double sum = 0;
    for (size_t i = 0; i < V; ++i) sum += std::exp(double(r[i] - mx));
    const float lse = mx + float(std::log(sum));
    for (size_t i = 0; i < V; ++i) r[i] -= lse;
  }
}

}  // namespace

void head_log_probs(const ModelDesc& d, const float* norm_w, const float* norm_b, const float* out_w, const float* x,
                    size_t n, float* logp) {
  const size_t D = size_t(d.d_model), V = size_t(d.vocab_size);
  std::vector<float> xn, mean, inv, logits;
  for (size_t t0 = 0; t0 < n; t0 += kHeadRows) {
    const size_t m = std::min(kHeadRows, n - t0);
    head_logits(d, norm_w, norm_b, out_w, x + t0 * D, m, xn, mean, inv, logits);
    log_softmax_rows(logits.data(), m, V);
    std::copy_n(logits.data(), m * V, logp + t0 * V);
  }
}

double head_kl_backward(const ModelDesc& d, const float* norm_w, const float* norm_b, const float* out_w,
                        const float* x, const float* ref_logp, size_t n, float* dx) {
  const size_t D = size_t(d.d_model), V = size_t(d.vocab_size);
  std::vector<float> xn, mean, inv, logits, dxn;
  std::vector<float> none;  // the output projection is not tuned
  double loss = 0;
  std::fill_n(dx, n * D, 0.0f);
  for (size_t t0 = 0; t0 < n; t0 += kHeadRows) {
    const size_t m = std::min(kHeadRows, n - t0);
    head_logits(d, norm_w, norm_b, out_w, x + t0 * D, m, xn, mean, inv, logits);
    log_softmax_rows(logits.data(), m, V);
    // KL(p || q) = sum p (log p - log q); d/dlogits = (q - p) / n.
    for (size_t i = 0; i < m * V; ++i) {
      const float lp = ref_logp[t0 * V + i], p = std::exp(lp), q = std::exp(logits[i]);
      loss += double(p) * (double(lp) - double(logits[i]));
      logits[i] = (q - p) / float(n);
    }
    grow(dxn, m * D);
    linear_backward(xn.data(), logits.data(), m, D, out_w, V, dxn.data(), false, none);
    norm_backward(d.norm, x + t0 * D, mean.data(), inv.data(), m, D, norm_w, dxn.data(), dx + t0 * D);
  }
  return loss / double(n);
}

}  // namespace sf
