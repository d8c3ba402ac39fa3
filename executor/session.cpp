#include "executor/session.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>

#include "executor/unit_stream.h"
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

void grow_scratch(std::vector<float>& v, size_t n) {
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
    : m_(model), pool_(pool), max_ctx_(max_ctx), exec_(model.desc(), max_ctx, pool) {
  const ModelDesc& d = m_.desc();
  if (max_ctx <= 0) fail("context length must be positive");
  if (slots == 0) fail("a session needs at least one sequence");
  if (d.positional == PositionalKind::Learned && max_ctx > d.max_seq)
    fail_file(m_.artifact().dir(), "a context of " + std::to_string(max_ctx) + " positions is more than the " +
                                       std::to_string(d.max_seq) + " its learned position table covers");
  k_cache_.assign(kv_cache_floats(m_, max_ctx, slots), 0.0f);
  v_cache_.assign(k_cache_.size(), 0.0f);
  slots_.resize(slots);
  seen_.assign(slots, 0);
  reserve_rows(slots);
  grow_scratch(logits_, slots * size_t(d.vocab_size));
}

// Scratch for n rows: every buffer a call on n rows writes, so a call on at most that many rows
// allocates nothing.
void Session::reserve_rows(size_t n) {
  const ModelDesc& d = m_.desc();
  const size_t D = size_t(d.d_model);
  grow_scratch(x_, n * D);
  exec_.reserve(n);
  if (m_.pos_embed()) grow_scratch(pos_row_, D);
  if (row_slot_.size() < n) {
    row_slot_.resize(n);
    row_index_.resize(n);
    pos_a_.resize(n);
    pos_b_.resize(n);
    row_last_.resize(n);
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

void Session::place_row(size_t t, size_t slot, int64_t index) {
  const RowPlace p = sf::place_row(m_.desc(), slots_[slot].prefix, index);
  row_slot_[t] = slot;
  row_index_[t] = index;
  pos_a_[t] = p.pos_a;
  pos_b_[t] = p.pos_b;
  row_last_[t] = p.last;
}

const float* Session::prefill(size_t slot, const int32_t* tokens, size_t n, size_t first_logits) {
  check_tokens(tokens, n);
  slot_state(slot);  // refuses a slot outside the session
  Slot& s = slots_[slot];
  if (s.pos + int64_t(n) > max_ctx_) fail("context full: " + std::to_string(max_ctx_) + " positions");
  if (s.pos == 0) s.prefix = sequence_prefix(m_.desc(), tokens, n);
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
    if (s.pos == 0) s.prefix = sequence_prefix(m_.desc(), &tokens[t], 1);
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
  const size_t kvd = size_t(d.n_kv_heads) * size_t(d.head_dim), layer_floats = size_t(max_ctx_) * kvd;
  UnitStream* stream = m_.stream();  // low-memory execution: blocks released after use
  for (int64_t l = 0; l < d.n_layers; ++l) {
    const size_t at = size_t(l) * layer_floats;  // slot s, layer l: (s * n_layers + l) * max_ctx * kvd
    const BlockRows rows{n, row_slot_.data(), row_index_.data(), pos_a_.data(), pos_b_.data(), row_last_.data(),
                         &k_cache_[at], &v_cache_[at], size_t(d.n_layers) * layer_floats};
    if (stream) stream->enter(l);
    exec_.run(m_.layer(l), x_.data(), rows, nullptr);
    if (stream) stream->leave(l);
  }
  for (size_t t = 0; t < n; ++t) ++slots_[row_slot_[t]].pos;
  if (first_logits >= n) return nullptr;
  if (stream) stream->enter(d.n_layers);
  const size_t rows = n - first_logits;
  grow_scratch(logits_, rows * size_t(d.vocab_size));  // reserved for a decode step's rows already
  float* xn = exec_.norm_scratch();
  kernels::norm(d.norm, &x_[first_logits * D], rows, D, m_.head_norm(), m_.head_norm_bias(), d.norm_eps, xn);
  kernels::matmul(m_.output(), nullptr, xn, rows, logits_.data(), pool_);
  if (stream) stream->leave(d.n_layers);
  return logits_.data();
}

}  // namespace sf
