#pragma once
// Sequences being run: the KV cache, the position state and scratch buffers. A session holds S
// sequences ("slots"), each with its own KV cache region, position and prefix state. Every call
// runs rows of tokens — each row one token of one slot at that slot's next position — through
// every block at once: one matrix product per weight for all rows, then attention per row against
// its own slot's cache. Prefill is n rows of one slot; batched decode is one row per slot, so the
// weights are streamed once for all the sequences decoding together.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/thread_pool.h"
#include "executor/block.h"
#include "executor/exec_model.h"

namespace sf {

// Bytes of K and V cache for `slots` sequences of `max_ctx` positions each, UINT64_MAX when the
// product overflows. What Session(model, max_ctx, pool, slots) would allocate.
uint64_t kv_cache_bytes(const ModelDesc& desc, int64_t max_ctx, size_t slots);
// The machine's physical memory (UINT64_MAX when the system does not say).
uint64_t physical_memory_bytes();

class Session {
 public:
  // Refuses, naming the artifact, a KV cache of slots x max_ctx positions that overflows or exceeds
  // physical memory, or a max_ctx that learned positions do not cover. Scratch for `slots` rows
  // is allocated here, so batched decode allocates nothing.
  Session(const ExecModel& model, int64_t max_ctx, ThreadPool* pool, size_t slots = 1);

  // Runs tokens[0, n) on slot 0 at positions pos() .. pos()+n-1. Returns the logits of tokens
  // [first_logits, n) as consecutive rows of vocab_size floats (valid until the next call), or
  // nullptr when first_logits >= n (prefill nobody reads the predictions of).
  // A prefix-bidirectional model (ChatGLM-6B) takes its whole prompt, up to and including <sop>,
  // in the first call of a sequence: the prompt's tokens attend to each other in both directions.
  const float* forward(const int32_t* tokens, size_t n, size_t first_logits) {
    return prefill(0, tokens, n, first_logits);
  }
  // One token on slot 0; its logits, or nullptr when want_logits is false.
  const float* forward(int32_t token, bool want_logits = true) { return forward(&token, 1, want_logits ? 0 : 1); }
  // forward() on any slot.
  const float* prefill(size_t slot, const int32_t* tokens, size_t n, size_t first_logits);
  // Batched decode: tokens[i] runs on slot slots[i] at that slot's next position, every slot at
  // most once. Returns the n rows of logits in the order given (valid until the next call).
  const float* decode(const int32_t* tokens, const size_t* slots, size_t n);

  // Allocates (and zero-fills) scratch for calls of up to `rows` rows now, so a later prefill of
  // that many tokens allocates nothing: bench and compare call it before their timers start. No
  // call runs more rows than the context holds, so no more is reserved.
  void reserve(size_t rows) { reserve_rows(std::min(rows, size_t(max_ctx_))); }

  void reset();  // every slot back to position 0
  void reset(size_t slot);
  int64_t pos(size_t slot = 0) const { return slot_state(slot).pos; }
  size_t slots() const { return slots_.size(); }

 private:
  struct Slot {
    int64_t pos = 0;
    SequencePrefix prefix;  // ChatGLM-6B's prompt, fixed by the sequence's first call
  };
  const Slot& slot_state(size_t slot) const;
  void check_tokens(const int32_t* tokens, size_t n) const;
  void reserve_rows(size_t n);
  // Fills the per-row slot, position, (RoPE) block position and last attended position of row t,
  // token `index` of its slot.
  void place_row(size_t t, size_t slot, int64_t index);
  // Runs the rows placed, advances each slot, and returns the logits of rows [first_logits, n).
  const float* run(const int32_t* tokens, size_t n, size_t first_logits);

  const ExecModel& m_;
  ThreadPool* pool_;
  int64_t max_ctx_;
  std::vector<Slot> slots_;
  BlockExec exec_;                               // the blocks' code and scratch (executor/block.h)
  // Per row of the call: its slot, its index in that slot's sequence, position, block position,
  // last position it attends to.
  std::vector<size_t> row_slot_;
  std::vector<int64_t> row_index_, pos_a_, pos_b_, row_last_;
  std::vector<float> k_cache_, v_cache_;         // [slot][layer][pos][kv_heads * head_dim]
  std::vector<float> x_, logits_;                // [rows x width]
  std::vector<float> pos_row_;                   // one learned position row
  std::vector<char> seen_;                       // per slot: already has a row in this decode call
};

}  // namespace sf
