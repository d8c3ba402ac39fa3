#include "executor/session.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "core/checked.h"
#include "core/error.h"
#include "executor/kernels.h"

namespace sf {

namespace {

uint64_t physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) : UINT64_MAX;
}

std::string gib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GiB", double(bytes) / double(uint64_t(1) << 30));
  return buf;
}

// Floats in each of the K and V caches: n_layers x max_ctx x kv dims. Refused, naming the artifact,
// when the product overflows or both caches would not fit in the machine's memory: allocating
// first would end in a bare "out of memory" or the OOM killer.
size_t kv_cache_floats(const ExecModel& m, int64_t max_ctx) {
  const ModelDesc& d = m.desc();
  const std::string& dir = m.artifact().dir();
  const std::string what = dir + ": KV cache for " + std::to_string(max_ctx) + " positions";
  const uint64_t kv = checked_mul(uint64_t(d.n_kv_heads), uint64_t(d.head_dim), what);
  const uint64_t floats = checked_mul(checked_mul(uint64_t(d.n_layers), uint64_t(max_ctx), what), kv, what);
  const uint64_t bytes = checked_mul(floats, 2 * sizeof(float), what);
  const uint64_t memory = physical_memory_bytes();
  if (bytes > memory)
    fail_file(dir, "a context of " + std::to_string(max_ctx) + " positions needs " + gib(bytes) +
                       " of KV cache, more than this machine's " + gib(memory) + " of memory");
  return size_t(floats);
}

}  // namespace

Session::Session(const ExecModel& model, int64_t max_ctx, ThreadPool* pool)
    : m_(model), pool_(pool), max_ctx_(max_ctx) {
  const ModelDesc& d = m_.desc();
  if (max_ctx <= 0) fail("context length must be positive");
  const size_t kv = size_t(d.n_kv_heads * d.head_dim), q = size_t(d.n_heads * d.head_dim);
  k_cache_.assign(kv_cache_floats(m_, max_ctx), 0.0f);
  v_cache_.assign(k_cache_.size(), 0.0f);
  x_.resize(size_t(d.d_model));
  xn_.resize(x_.size());
  o_.resize(x_.size());
  q_.resize(q);
  att_.resize(q);
  k_.resize(kv);
  v_.resize(kv);
  scores_.resize(size_t(max_ctx));
  gate_.resize(size_t(d.ffn_dim));
  up_.resize(gate_.size());
  logits_.resize(size_t(d.vocab_size));
}

const float* Session::forward(int32_t token, bool want_logits) {
  const ModelDesc& d = m_.desc();
  if (token < 0 || token >= d.vocab_size)
    fail("token id " + std::to_string(token) + " is outside the vocabulary (" + std::to_string(d.vocab_size) + ")");
  if (pos_ >= max_ctx_) fail("context full: " + std::to_string(max_ctx_) + " positions");
  const size_t D = size_t(d.d_model), hd = size_t(d.head_dim), kvd = size_t(d.n_kv_heads) * hd;
  const int64_t group = d.n_heads / d.n_kv_heads;
  const float scale = 1.0f / std::sqrt(float(hd));

  kernels::dequantize_row(m_.embed(), token, x_.data());
  for (int64_t l = 0; l < d.n_layers; ++l) {
    const LayerWeights& w = m_.layer(l);
    kernels::rmsnorm(x_.data(), *w.attn_norm, d.norm_eps, D, xn_.data());
    kernels::matvec(*w.q, xn_.data(), q_.data(), pool_);
    kernels::matvec(*w.k, xn_.data(), k_.data(), pool_);
    kernels::matvec(*w.v, xn_.data(), v_.data(), pool_);
    kernels::rope(q_.data(), d.n_heads, d.head_dim, d.rope_dims, d.rope_theta, pos_);
    kernels::rope(k_.data(), d.n_kv_heads, d.head_dim, d.rope_dims, d.rope_theta, pos_);
    float* kc = &k_cache_[(size_t(l) * size_t(max_ctx_)) * kvd];
    float* vc = &v_cache_[(size_t(l) * size_t(max_ctx_)) * kvd];
    std::copy(k_.begin(), k_.end(), kc + size_t(pos_) * kvd);
    std::copy(v_.begin(), v_.end(), vc + size_t(pos_) * kvd);
    for (int64_t h = 0; h < d.n_heads; ++h) {
      const float* qh = &q_[size_t(h) * hd];
      const size_t kvh = size_t(h / group) * hd;
      float mx = -INFINITY;
      for (int64_t t = 0; t <= pos_; ++t) {
        const float* kt = kc + size_t(t) * kvd + kvh;
        float s = 0;
        for (size_t i = 0; i < hd; ++i) s += qh[i] * kt[i];
        scores_[size_t(t)] = s * scale;
        mx = std::max(mx, scores_[size_t(t)]);
      }
      double sum = 0;
      for (int64_t t = 0; t <= pos_; ++t) sum += (scores_[size_t(t)] = std::exp(scores_[size_t(t)] - mx));
      const float inv = float(1.0 / sum);
      float* out = &att_[size_t(h) * hd];
      std::fill(out, out + hd, 0.0f);
      for (int64_t t = 0; t <= pos_; ++t) {
        const float p = scores_[size_t(t)] * inv;
        const float* vt = vc + size_t(t) * kvd + kvh;
        for (size_t i = 0; i < hd; ++i) out[i] += p * vt[i];
      }
    }
    kernels::matvec(*w.o, att_.data(), o_.data(), pool_);
    for (size_t i = 0; i < D; ++i) x_[i] += o_[i];
    kernels::rmsnorm(x_.data(), *w.ffn_norm, d.norm_eps, D, xn_.data());
    kernels::matvec(*w.gate, xn_.data(), gate_.data(), pool_);
    kernels::matvec(*w.up, xn_.data(), up_.data(), pool_);
    for (size_t i = 0; i < gate_.size(); ++i) gate_[i] = kernels::silu(gate_[i]) * up_[i];
    kernels::matvec(*w.down, gate_.data(), o_.data(), pool_);
    for (size_t i = 0; i < D; ++i) x_[i] += o_[i];
  }
  ++pos_;
  if (!want_logits) return nullptr;
  kernels::rmsnorm(x_.data(), m_.head_norm(), d.norm_eps, D, xn_.data());
  kernels::matvec(m_.output(), xn_.data(), logits_.data(), pool_);
  return logits_.data();
}

}  // namespace sf
