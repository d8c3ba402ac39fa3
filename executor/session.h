#pragma once
// One sequence being run: the KV cache, the position state and scratch buffers. forward() runs T
// tokens at the next positions — every block once on all of them (prefill is one call per block,
// decode is T = 1) — and returns the logits the caller asks for.
#include <cstdint>
#include <vector>

#include "core/thread_pool.h"
#include "executor/exec_model.h"

namespace sf {

class Session {
 public:
  // Refuses, naming the artifact, a max_ctx whose KV cache overflows or exceeds physical memory,
  // or that learned positions do not cover.
  Session(const ExecModel& model, int64_t max_ctx, ThreadPool* pool);

  // Runs tokens[0, n) at positions pos() .. pos()+n-1. Returns the logits of tokens
  // [first_logits, n) as consecutive rows of vocab_size floats (valid until the next call), or
  // nullptr when first_logits >= n (prefill nobody reads the predictions of).
  // A prefix-bidirectional model (ChatGLM-6B) takes its whole prompt, up to and including <sop>,
  // in the first call: the prompt's tokens attend to each other in both directions.
  const float* forward(const int32_t* tokens, size_t n, size_t first_logits);
  // One token; its logits, or nullptr when want_logits is false.
  const float* forward(int32_t token, bool want_logits = true) { return forward(&token, 1, want_logits ? 0 : 1); }
  void reset();
  int64_t pos() const { return pos_; }

 private:
  void start_sequence(const int32_t* tokens, size_t n);
  void positions(size_t n);
  void block(int64_t layer, size_t n);
  void attention(int64_t layer, size_t n);

  const ExecModel& m_;
  ThreadPool* pool_;
  int64_t max_ctx_, pos_ = 0;
  // Prefix state (ChatGLM-6B): tokens before ctx_len_ form the bidirectional prompt; from there on
  // the position is clamped to mask_pos_ and the block position counts 1, 2, ...
  int64_t ctx_len_ = 0, mask_pos_ = 0;
  std::vector<double> freqs_;                    // RoPE frequency of each rotated pair
  std::vector<int64_t> pos_a_, pos_b_;           // per token of the call: position, block position
  std::vector<float> k_cache_, v_cache_;         // [layer][pos][kv_heads * head_dim]
  std::vector<float> x_, xn_, q_, k_, v_, att_, o_, gate_, up_, logits_;  // [T x width]
  std::vector<float> pos_row_;                   // one learned position row
};

}  // namespace sf
