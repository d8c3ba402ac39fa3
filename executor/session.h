#pragma once
// One sequence being decoded: the KV cache and scratch buffers. forward() appends a token at the
// next position and returns the logits for the following one.
#include <cstdint>
#include <vector>

#include "core/thread_pool.h"
#include "executor/exec_model.h"

namespace sf {

class Session {
 public:
  // Refuses, naming the artifact, a max_ctx whose KV cache overflows or exceeds physical memory.
  Session(const ExecModel& model, int64_t max_ctx, ThreadPool* pool);
  // Returns the logits (vocab_size floats, valid until the next call), or nullptr when
  // want_logits is false (a prefill position whose prediction nobody reads).
  const float* forward(int32_t token, bool want_logits = true);
  void reset() { pos_ = 0; }
  int64_t pos() const { return pos_; }

 private:
  const ExecModel& m_;
  ThreadPool* pool_;
  int64_t max_ctx_, pos_ = 0;
  std::vector<float> k_cache_, v_cache_;  // [layer][pos][kv_heads * head_dim]
  std::vector<float> x_, xn_, q_, k_, v_, att_, scores_, o_, gate_, up_, logits_;
};

}  // namespace sf
