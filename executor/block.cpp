#include "executor/block.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "core/dtype.h"
#include "core/error.h"
#include "executor/kernels.h"

namespace sf {

namespace {

// RoPE frequencies of the rotated pairs: theta^(-2i/rope_dims) for RoPE; for ChatGLM-6B's 2-D RoPE
// each half of the head uses 10000^(-2i/(head_dim/2)) rounded to f16, as the original computes them.
std::vector<double> rope_frequencies(const ModelDesc& d) {
  std::vector<double> f;
  if (d.positional == PositionalKind::Rope)
    for (int64_t i = 0; i < d.rope_dims / 2; ++i) f.push_back(std::pow(d.rope_theta, -double(2 * i) / double(d.rope_dims)));
  if (d.positional == PositionalKind::Rope2D) {
    const int64_t dims = d.head_dim / 2;
    for (int64_t i = 0; i < dims / 2; ++i) {
      const float inv = float(1.0 / std::pow(d.rope_theta, double(2 * i) / double(dims)));
      f.push_back(double(f16_to_f32(f32_to_f16(inv))));
    }
  }
  return f;
}

void grow(std::vector<float>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

}  // namespace

const char* linear_input_name(LinearInput g) {
  static constexpr const char* kNames[kLinearInputs] = {"attn_in", "attn_out", "ffn_in", "ffn_mid"};
  return kNames[size_t(g)];
}

// The first call of a sequence fixes the prefix: tokens before the first <sop> (none when the call
// has no <sop>: the whole sequence is then generation), and the clamped position — the index of
// [gMASK], else of [MASK], in that call, else 0.
SequencePrefix sequence_prefix(const ModelDesc& d, const int32_t* tokens, size_t n) {
  SequencePrefix p;
  if (d.mask != MaskKind::PrefixBidirectional && d.positional != PositionalKind::Rope2D) return p;
  const SpecialTokens& s = d.special;
  const int32_t* end = tokens + n;
  const int32_t* sop = s.bos >= 0 ? std::find(tokens, end, int32_t(s.bos)) : end;
  p.ctx_len = sop == end ? 0 : int64_t(sop - tokens);
  for (int64_t id : {s.gmask, s.mask}) {
    const int32_t* at = id >= 0 ? std::find(tokens, end, int32_t(id)) : end;
    if (at != end) {
      p.mask_pos = int64_t(at - tokens);
      break;
    }
  }
  return p;
}

RowPlace place_row(const ModelDesc& d, const SequencePrefix& s, int64_t index) {
  RowPlace r;
  r.pos_a = index;
  r.pos_b = 0;
  if (d.positional == PositionalKind::Rope2D && index >= s.ctx_len) {
    r.pos_a = s.mask_pos;
    r.pos_b = index - s.ctx_len + 1;
  }
  const bool prefix = d.mask == MaskKind::PrefixBidirectional;
  r.last = prefix && index < s.ctx_len ? s.ctx_len - 1 : index;
  return r;
}

BlockExec::BlockExec(const ModelDesc& d, int64_t max_ctx, ThreadPool* pool)
    : d_(d), max_ctx_(max_ctx), pool_(pool), freqs_(rope_frequencies(d)) {}

void BlockExec::reserve(size_t n) {
  const size_t D = size_t(d_.d_model), qd = size_t(d_.n_heads) * size_t(d_.head_dim),
               kvd = size_t(d_.n_kv_heads) * size_t(d_.head_dim), F = size_t(d_.ffn_dim);
  grow(xn_, n * D), grow(q_, n * qd), grow(k_, n * kvd), grow(v_, n * kvd), grow(att_, n * qd);
  grow(o_, n * D), grow(up_, n * F);
  if (d_.ffn == FfnKind::SiluGated) grow(gate_, n * F);
}

// One block on the n rows of the call: the shared norm / attention / FFN steps, each chosen by
// the model's settings.
void BlockExec::run(const LayerWeights& w, float* x, const BlockRows& rows, BlockTap* tap) {
  const ModelDesc& d = d_;
  const size_t n = rows.n;
  const size_t D = size_t(d.d_model), hd = size_t(d.head_dim), qd = size_t(d.n_heads) * hd,
               kvd = size_t(d.n_kv_heads) * hd, F = size_t(d.ffn_dim);
  const float alpha = float(d.residual_alpha);
  auto tapped = [&](LinearInput g, const float* in, size_t cols) {
    if (tap) tap->input(g, in, n, cols);
  };
  // Elementwise work split over the pool by rows: each element goes through the operations of
  // the serial loop, so the bits do not depend on the thread count. Serial, it was a fifth of a
  // 2-thread prefill; a few rows (decode) are not worth waking the pool.
  auto over_rows = [&](size_t floats_per_row, const std::function<void(size_t, size_t)>& fn) {
    if (pool_ && pool_->size() > 1 && n > 1 && n * floats_per_row >= (size_t(1) << 14))
      pool_->parallel_for(n, fn);
    else
      fn(0, n);
  };
  // The residual around f: x + f(n(x)), or ChatGLM-6B's n(x) * alpha + f(n(x)).
  auto residual = [&](const float* f) {
    over_rows(D, [&](size_t t0, size_t t1) {
      if (d.residual == ResidualKind::ScaledNormInput)
        for (size_t i = t0 * D; i < t1 * D; ++i) x[i] = xn_[i] * alpha + f[i];
      else
        for (size_t i = t0 * D; i < t1 * D; ++i) x[i] += f[i];
    });
  };
  auto norm = [&](const TensorView& weight, const TensorView* bias) {
    over_rows(D, [&](size_t t0, size_t t1) {
      kernels::norm(d.norm, &x[t0 * D], t1 - t0, D, weight, bias, d.norm_eps, &xn_[t0 * D]);
    });
  };

  norm(*w.attn_norm, w.attn_norm_b);
  tapped(LinearInput::AttnIn, xn_.data(), D);
  // q, k and v in one parallel section (one pool wake-up, the input quantized once).
  const kernels::MatmulOut qkv[] = {{w.q, w.q_b, q_.data()}, {w.k, w.k_b, k_.data()}, {w.v, w.v_b, v_.data()}};
  kernels::matmul_many(qkv, 3, xn_.data(), n, pool_);
  if (d.positional == PositionalKind::Rope || d.positional == PositionalKind::Rope2D) {
    // One cos/sin table per token (per position for 2-D RoPE), shared by its q and k heads.
    const bool two_d = d.positional == PositionalKind::Rope2D;
    const size_t pairs = two_d ? hd / 4 : size_t(d.rope_dims) / 2;
    over_rows(qd + kvd, [&](size_t t0, size_t t1) {
      thread_local std::vector<float> cs;
      grow(cs, 4 * pairs);
      float* const a = cs.data();
      float* const b = a + 2 * pairs;
      for (size_t t = t0; t < t1; ++t) {
        kernels::rotation_table(pairs, freqs_.data(), rows.pos_a[t], a);
        if (two_d) kernels::rotation_table(pairs, freqs_.data(), rows.pos_b[t], b);
        auto rotate = [&](float* v, size_t heads) {
          for (size_t h = 0; h < heads; ++h) {
            float* head = v + h * hd;
            kernels::rotate_pairs(head, pairs, a);
            if (two_d) kernels::rotate_pairs(head + hd / 2, pairs, b);
          }
        };
        rotate(&q_[t * qd], size_t(d.n_heads));
        rotate(&k_[t * kvd], size_t(d.n_kv_heads));
      }
    });
  }
  attention(rows);
  tapped(LinearInput::AttnOut, att_.data(), qd);
  kernels::matmul(*w.o, w.o_b, att_.data(), n, o_.data(), pool_);
  if (tap && d.residual != ResidualKind::ScaledNormInput) tap->residual_base(LinearInput::AttnOut, x, n, D);
  residual(o_.data());

  norm(*w.ffn_norm, w.ffn_norm_b);
  tapped(LinearInput::FfnIn, xn_.data(), D);
  if (d.ffn == FfnKind::SiluGated) {
    const kernels::MatmulOut up_gate[] = {{w.up, w.up_b, up_.data()}, {w.gate, w.gate_b, gate_.data()}};
    kernels::matmul_many(up_gate, 2, xn_.data(), n, pool_);
    over_rows(F, [&](size_t t0, size_t t1) {
      for (size_t i = t0 * F; i < t1 * F; ++i) up_[i] *= kernels::silu(gate_[i]);
    });
  } else {
    kernels::matmul(*w.up, w.up_b, xn_.data(), n, up_.data(), pool_);
    over_rows(F, [&](size_t t0, size_t t1) {
      for (size_t i = t0 * F; i < t1 * F; ++i) up_[i] = kernels::gelu_tanh(up_[i]);
    });
  }
  tapped(LinearInput::FfnMid, up_.data(), F);
  kernels::matmul(*w.down, w.down_b, up_.data(), n, o_.data(), pool_);
  if (tap && d.residual != ResidualKind::ScaledNormInput) tap->residual_base(LinearInput::FfnMid, x, n, D);
  residual(o_.data());
}

// Stores each row's k/v in its sequence's cache, then attends each (row, head) over the positions
// [0, last] of that sequence. Masked positions take no part (ChatGLM-6B fills them with -10000,
// whose weight is 0 in f32). All rows are stored first, so rows of one sequence in one call (a
// prefill) see each other.
void BlockExec::attention(const BlockRows& rows) {
  const ModelDesc& d = d_;
  const size_t n = rows.n;
  const size_t hd = size_t(d.head_dim), qd = size_t(d.n_heads) * hd, kvd = size_t(d.n_kv_heads) * hd;
  const size_t group = size_t(d.n_heads / d.n_kv_heads);
  int64_t longest = 0;
  for (size_t t = 0; t < n; ++t) {
    const size_t at = size_t(rows.index[t]) * kvd, base = rows.slot[t] * rows.slot_stride;
    std::copy_n(&k_[t * kvd], kvd, rows.k + base + at);
    std::copy_n(&v_[t * kvd], kvd, rows.v + base + at);
    longest = std::max(longest, rows.index[t] + 1);
  }
  const float scale = 1.0f / std::sqrt(float(hd));
  auto work = [&](size_t begin, size_t end) {
    // Room for the longest context once per thread: no allocation as the sequences grow.
    thread_local std::vector<float> scores;
    if (scores.size() < size_t(max_ctx_)) scores.resize(size_t(max_ctx_));
    for (size_t item = begin; item < end; ++item) {
      const size_t t = item / size_t(d.n_heads), h = item % size_t(d.n_heads);
      const size_t base = rows.slot[t] * rows.slot_stride;
      const size_t kvh = (h / group) * hd;
      kernels::attend_head(&q_[t * qd + h * hd], rows.k + base + kvh, rows.v + base + kvh, kvd,
                           size_t(rows.last[t] + 1), hd, scale, scores.data(), &att_[t * qd + h * hd]);
    }
  };
  const size_t items = n * size_t(d.n_heads);
  if (pool_ && pool_->size() > 1 && items > 1 && size_t(longest) * hd * items >= (1 << 16))
    pool_->parallel_for(items, work);
  else
    work(0, items);
}

void run_block_on_sequences(const ModelDesc& d, const LayerWeights& w, const int32_t* tokens, float* x, size_t n_seq,
                            size_t ctx, ThreadPool* pool, BlockTap* tap) {
  if (ctx == 0 || n_seq == 0) return;
  const size_t D = size_t(d.d_model), kvd = size_t(d.n_kv_heads) * size_t(d.head_dim);
  // About 4096 rows per call: scratch and caches stay small whatever the calibration size, and a
  // call is still wide enough for the matrix products to use the pool well.
  const size_t per_call = std::max<size_t>(1, 4096 / ctx);
  const size_t chunk = std::min(per_call, n_seq);
  BlockExec exec(d, int64_t(ctx), pool);
  exec.reserve(chunk * ctx);
  std::vector<float> k(chunk * ctx * kvd), v(k.size());
  std::vector<size_t> slot(chunk * ctx);
  std::vector<int64_t> index(slot.size()), pos_a(slot.size()), pos_b(slot.size()), last(slot.size());
  for (size_t s0 = 0; s0 < n_seq; s0 += chunk) {
    const size_t seqs = std::min(chunk, n_seq - s0);
    for (size_t s = 0; s < seqs; ++s) {
      const SequencePrefix prefix = sequence_prefix(d, tokens + (s0 + s) * ctx, ctx);
      for (size_t i = 0; i < ctx; ++i) {
        const size_t t = s * ctx + i;
        const RowPlace p = place_row(d, prefix, int64_t(i));
        slot[t] = s, index[t] = int64_t(i), pos_a[t] = p.pos_a, pos_b[t] = p.pos_b, last[t] = p.last;
      }
    }
    BlockRows rows{seqs * ctx, slot.data(), index.data(), pos_a.data(), pos_b.data(), last.data(),
                   k.data(), v.data(), ctx * kvd};
    exec.run(w, x + s0 * ctx * D, rows, tap);
  }
}

}  // namespace sf
