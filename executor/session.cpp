#include "executor/session.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>

#include "core/checked.h"
#include "core/dtype.h"
#include "core/error.h"
#include "executor/kernels.h"

namespace sf {

namespace {

std::string gib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GiB", double(bytes) / double(uint64_t(1) << 30));
  return buf;
}

// Floats in each of the K and V caches: slots x n_layers x max_ctx x kv dims. Refused, naming the
// artifact, when the product overflows or both caches would not fit in the machine's memory:
// allocating first would end in a bare "out of memory" or the OOM killer.
size_t kv_cache_floats(const ExecModel& m, int64_t max_ctx, size_t slots) {
  const ModelDesc& d = m.desc();
  const std::string& dir = m.artifact().dir();
  const std::string seqs = slots == 1 ? "" : " x " + std::to_string(slots) + " sequences";
  const std::string what = dir + ": KV cache for " + std::to_string(max_ctx) + " positions" + seqs;
  const uint64_t kv = checked_mul(uint64_t(d.n_kv_heads), uint64_t(d.head_dim), what);
  const uint64_t per_slot = checked_mul(checked_mul(uint64_t(d.n_layers), uint64_t(max_ctx), what), kv, what);
  const uint64_t floats = checked_mul(per_slot, uint64_t(slots), what);
  const uint64_t bytes = checked_mul(floats, 2 * sizeof(float), what);
  const uint64_t memory = physical_memory_bytes();
  if (bytes > memory)
    fail_file(dir, "a context of " + std::to_string(max_ctx) + " positions" + seqs + " needs " + gib(bytes) +
                       " of KV cache, more than this machine's " + gib(memory) + " of memory");
  return size_t(floats);
}

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

uint64_t physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) : UINT64_MAX;
}

uint64_t kv_cache_bytes(const ModelDesc& d, int64_t max_ctx, size_t slots) {
  uint64_t r = 2 * sizeof(float);
  for (uint64_t f : {uint64_t(d.n_kv_heads), uint64_t(d.head_dim), uint64_t(d.n_layers), uint64_t(max_ctx),
                     uint64_t(slots)})
    if (__builtin_mul_overflow(r, f, &r)) return UINT64_MAX;
  return r;
}

Session::Session(const ExecModel& model, int64_t max_ctx, ThreadPool* pool, size_t slots)
    : m_(model), pool_(pool), max_ctx_(max_ctx) {
  const ModelDesc& d = m_.desc();
  if (max_ctx <= 0) fail("context length must be positive");
  if (slots == 0) fail("a session needs at least one sequence");
  if (d.positional == PositionalKind::Learned && max_ctx > d.max_seq)
    fail_file(m_.artifact().dir(), "a context of " + std::to_string(max_ctx) + " positions is more than the " +
                                       std::to_string(d.max_seq) + " its learned position table covers");
  k_cache_.assign(kv_cache_floats(m_, max_ctx, slots), 0.0f);
  v_cache_.assign(k_cache_.size(), 0.0f);
  freqs_ = rope_frequencies(d);
  slots_.resize(slots);
  seen_.assign(slots, 0);
  reserve_rows(slots);
  grow(logits_, slots * size_t(d.vocab_size));
}

// Scratch for n rows: every buffer a call on n rows writes, so a call on at most that many rows
// allocates nothing.
void Session::reserve_rows(size_t n) {
  const ModelDesc& d = m_.desc();
  const size_t D = size_t(d.d_model), qd = size_t(d.n_heads) * size_t(d.head_dim),
               kvd = size_t(d.n_kv_heads) * size_t(d.head_dim), F = size_t(d.ffn_dim);
  grow(x_, n * D), grow(xn_, n * D), grow(q_, n * qd), grow(k_, n * kvd), grow(v_, n * kvd), grow(att_, n * qd);
  grow(o_, n * D), grow(up_, n * F);
  if (d.ffn == FfnKind::SiluGated) grow(gate_, n * F);
  if (m_.pos_embed()) grow(pos_row_, D);
  if (row_slot_.size() < n) {
    row_slot_.resize(n);
    row_index_.resize(n);
    pos_a_.resize(n);
    pos_b_.resize(n);
  }
}

const Session::Slot& Session::slot_state(size_t slot) const {
  if (slot >= slots_.size())
    fail("sequence " + std::to_string(slot) + " is outside the session's " + std::to_string(slots_.size()));
  return slots_[slot];
}

void Session::reset() {
  for (Slot& s : slots_) s = Slot{};
}

void Session::reset(size_t slot) {
  slot_state(slot);
  slots_[slot] = Slot{};
}

void Session::check_tokens(const int32_t* tokens, size_t n) const {
  const int64_t vocab = m_.desc().vocab_size;
  if (n == 0) fail("no tokens to run");
  for (size_t t = 0; t < n; ++t)
    if (tokens[t] < 0 || tokens[t] >= vocab)
      fail("token id " + std::to_string(tokens[t]) + " is outside the vocabulary (" + std::to_string(vocab) + ")");
}

// The first call of a sequence fixes the prefix: tokens before the first <sop> (none when the call
// has no <sop>: the whole sequence is then generation), and the clamped position — the index of
// [gMASK], else of [MASK], in that call, else 0.
void Session::start_sequence(Slot& slot, const int32_t* tokens, size_t n) {
  const ModelDesc& d = m_.desc();
  slot.ctx_len = slot.mask_pos = 0;
  if (d.mask != MaskKind::PrefixBidirectional && d.positional != PositionalKind::Rope2D) return;
  const SpecialTokens& s = d.special;
  const int32_t* end = tokens + n;
  const int32_t* sop = s.bos >= 0 ? std::find(tokens, end, int32_t(s.bos)) : end;
  slot.ctx_len = sop == end ? 0 : int64_t(sop - tokens);
  for (int64_t id : {s.gmask, s.mask}) {
    const int32_t* at = id >= 0 ? std::find(tokens, end, int32_t(id)) : end;
    if (at != end) {
      slot.mask_pos = int64_t(at - tokens);
      break;
    }
  }
}

void Session::place_row(size_t t, size_t slot, int64_t index) {
  const Slot& s = slots_[slot];
  row_slot_[t] = slot;
  row_index_[t] = index;
  pos_a_[t] = index;
  pos_b_[t] = 0;
  if (m_.desc().positional == PositionalKind::Rope2D && index >= s.ctx_len) {
    pos_a_[t] = s.mask_pos;
    pos_b_[t] = index - s.ctx_len + 1;
  }
}

const float* Session::prefill(size_t slot, const int32_t* tokens, size_t n, size_t first_logits) {
  check_tokens(tokens, n);
  slot_state(slot);  // refuses a slot outside the session
  Slot& s = slots_[slot];
  if (s.pos + int64_t(n) > max_ctx_) fail("context full: " + std::to_string(max_ctx_) + " positions");
  if (s.pos == 0) start_sequence(s, tokens, n);
  reserve_rows(n);
  for (size_t t = 0; t < n; ++t) place_row(t, slot, s.pos + int64_t(t));
  return run(tokens, n, first_logits);
}

const float* Session::decode(const int32_t* tokens, const size_t* slots, size_t n) {
  check_tokens(tokens, n);
  if (n > slots_.size())
    fail(std::to_string(n) + " tokens to decode in a session of " + std::to_string(slots_.size()) + " sequences");
  std::fill(seen_.begin(), seen_.end(), 0);
  for (size_t t = 0; t < n; ++t) {
    const Slot& s = slot_state(slots[t]);
    if (seen_[slots[t]]) fail("sequence " + std::to_string(slots[t]) + " given twice in one decode step");
    seen_[slots[t]] = 1;
    if (s.pos + 1 > max_ctx_) fail("context full: " + std::to_string(max_ctx_) + " positions");
  }
  for (size_t t = 0; t < n; ++t) {
    Slot& s = slots_[slots[t]];
    if (s.pos == 0) start_sequence(s, &tokens[t], 1);
    place_row(t, slots[t], s.pos);
  }
  return run(tokens, n, 0);
}

const float* Session::run(const int32_t* tokens, size_t n, size_t first_logits) {
  const ModelDesc& d = m_.desc();
  const size_t D = size_t(d.d_model);
  for (size_t t = 0; t < n; ++t) {
    kernels::dequantize_row(m_.embed(), tokens[t], &x_[t * D]);
    if (m_.pos_embed()) {
      kernels::dequantize_row(*m_.pos_embed(), pos_a_[t], pos_row_.data());
      for (size_t i = 0; i < D; ++i) x_[t * D + i] += pos_row_[i];
    }
  }
  for (int64_t l = 0; l < d.n_layers; ++l) block(l, n);
  for (size_t t = 0; t < n; ++t) ++slots_[row_slot_[t]].pos;
  if (first_logits >= n) return nullptr;
  const size_t rows = n - first_logits;
  grow(logits_, rows * size_t(d.vocab_size));  // reserved for a decode step's rows already
  kernels::norm(d.norm, &x_[first_logits * D], rows, D, m_.head_norm(), m_.head_norm_bias(), d.norm_eps, xn_.data());
  kernels::matmul(m_.output(), nullptr, xn_.data(), rows, logits_.data(), pool_);
  return logits_.data();
}

// One block on the n rows of the call: the shared norm / attention / FFN steps, each chosen by
// the model's settings.
void Session::block(int64_t l, size_t n) {
  const ModelDesc& d = m_.desc();
  const LayerWeights& w = m_.layer(l);
  const size_t D = size_t(d.d_model), hd = size_t(d.head_dim), qd = size_t(d.n_heads) * hd,
               kvd = size_t(d.n_kv_heads) * hd, F = size_t(d.ffn_dim);
  const float alpha = float(d.residual_alpha);
  // The residual around f: x + f(n(x)), or ChatGLM-6B's n(x) * alpha + f(n(x)).
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
        for (size_t i = t0 * D; i < t1 * D; ++i) x_[i] = xn_[i] * alpha + f[i];
      else
        for (size_t i = t0 * D; i < t1 * D; ++i) x_[i] += f[i];
    });
  };
  auto norm = [&](const TensorView& weight, const TensorView* bias) {
    over_rows(D, [&](size_t t0, size_t t1) {
      kernels::norm(d.norm, &x_[t0 * D], t1 - t0, D, weight, bias, d.norm_eps, &xn_[t0 * D]);
    });
  };

  norm(*w.attn_norm, w.attn_norm_b);
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
        kernels::rotation_table(pairs, freqs_.data(), pos_a_[t], a);
        if (two_d) kernels::rotation_table(pairs, freqs_.data(), pos_b_[t], b);
        auto rotate = [&](float* x, size_t heads) {
          for (size_t h = 0; h < heads; ++h) {
            float* head = x + h * hd;
            kernels::rotate_pairs(head, pairs, a);
            if (two_d) kernels::rotate_pairs(head + hd / 2, pairs, b);
          }
        };
        rotate(&q_[t * qd], size_t(d.n_heads));
        rotate(&k_[t * kvd], size_t(d.n_kv_heads));
      }
    });
  }
  attention(l, n);
  kernels::matmul(*w.o, w.o_b, att_.data(), n, o_.data(), pool_);
  residual(o_.data());

  norm(*w.ffn_norm, w.ffn_norm_b);
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
  kernels::matmul(*w.down, w.down_b, up_.data(), n, o_.data(), pool_);
  residual(o_.data());
}

size_t Session::cache_offset(size_t slot, int64_t layer) const {
  const size_t kvd = size_t(m_.desc().n_kv_heads) * size_t(m_.desc().head_dim);
  return (slot * size_t(m_.desc().n_layers) + size_t(layer)) * size_t(max_ctx_) * kvd;
}

// Stores each row's k/v in its slot's cache, then attends each (row, head) over the positions of
// that slot the mask allows: causal, plus — for a prefix-bidirectional model — the whole prompt
// for prompt tokens. Masked positions take no part (ChatGLM-6B fills them with -10000, whose
// weight is 0 in f32). All rows are stored first, so rows of one slot in one call (a prefill)
// see each other.
void Session::attention(int64_t l, size_t n) {
  const ModelDesc& d = m_.desc();
  const size_t hd = size_t(d.head_dim), qd = size_t(d.n_heads) * hd, kvd = size_t(d.n_kv_heads) * hd;
  const size_t group = size_t(d.n_heads / d.n_kv_heads);
  int64_t longest = 0;
  for (size_t t = 0; t < n; ++t) {
    const size_t at = size_t(row_index_[t]) * kvd;
    std::copy_n(&k_[t * kvd], kvd, k_cache(row_slot_[t], l) + at);
    std::copy_n(&v_[t * kvd], kvd, v_cache(row_slot_[t], l) + at);
    longest = std::max(longest, row_index_[t] + 1);
  }
  const float scale = 1.0f / std::sqrt(float(hd));
  const bool prefix = d.mask == MaskKind::PrefixBidirectional;
  auto work = [&](size_t begin, size_t end) {
    // Room for the longest context once per thread: no allocation as the sequences grow.
    thread_local std::vector<float> scores;
    if (scores.size() < size_t(max_ctx_)) scores.resize(size_t(max_ctx_));
    for (size_t item = begin; item < end; ++item) {
      const size_t t = item / size_t(d.n_heads), h = item % size_t(d.n_heads);
      const size_t slot = row_slot_[t];
      const int64_t i = row_index_[t], ctx_len = slots_[slot].ctx_len;
      const int64_t last = prefix && i < ctx_len ? ctx_len - 1 : i;  // attends to [0, last]
      const size_t kvh = (h / group) * hd;
      kernels::attend_head(&q_[t * qd + h * hd], k_cache(slot, l) + kvh, v_cache(slot, l) + kvh, kvd,
                           size_t(last + 1), hd, scale, scores.data(), &att_[t * qd + h * hd]);
    }
  };
  const size_t items = n * size_t(d.n_heads);
  if (pool_ && pool_->size() > 1 && items > 1 && size_t(longest) * hd * items >= (1 << 16))
    pool_->parallel_for(items, work);
  else
    work(0, items);
}

}  // namespace sf
