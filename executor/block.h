#pragma once
// One transformer block on T rows at once: the code Session runs for every block, and the entry
// point calibration runs a block through (pipeline/calibrate_stage.cpp) with weights it holds
// itself (f32 values of the unit being converted, or their encoded bytes) and taps that see the
// input of each group of linear layers.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/model_desc.h"
#include "core/thread_pool.h"
#include "executor/exec_model.h"

namespace sf {

// The inputs shared by a block's linear layers, in the order the block reaches them.
enum class LinearInput : uint8_t { AttnIn, AttnOut, FfnIn, FfnMid };  // q k v; o; gate up; down
constexpr size_t kLinearInputs = 4;
const char* linear_input_name(LinearInput g);  // "attn_in", "attn_out", "ffn_in", "ffn_mid"

// Sees the rows entering each linear group during a block's run (x: rows x cols, row-major,
// valid during the call only).
class BlockTap {
 public:
  virtual ~BlockTap() = default;
  virtual void input(LinearInput where, const float* x, size_t rows, size_t cols) = 0;
  // The residual stream rows the output of group `where` (AttnOut: o; FfnMid: down) is about to be
  // added to, after that group's input() of the same call. Only where the residual is a plain sum.
  virtual void residual_base(LinearInput where, const float* x, size_t rows, size_t cols) {
    (void)where, (void)x, (void)rows, (void)cols;
  }
};

// Where a sequence's tokens sit: ChatGLM-6B's prefix (tokens before the first <sop> see each other;
// after it, positions are clamped to the [gMASK] / [MASK] index and a block position counts 1, 2 …).
// Zero for every other model.
struct SequencePrefix {
  int64_t ctx_len = 0, mask_pos = 0;
};
// Fixed by the first call of a sequence (its first n tokens).
SequencePrefix sequence_prefix(const ModelDesc& d, const int32_t* tokens, size_t n);
// Token `index` of a sequence: its position, block position (2-D RoPE) and the last position it
// attends to.
struct RowPlace {
  int64_t pos_a = 0, pos_b = 0, last = 0;
};
RowPlace place_row(const ModelDesc& d, const SequencePrefix& prefix, int64_t index);

// The rows of one call: row t is token index[t] of sequence slot[t]; that sequence's cache of the
// block's layer starts at k + slot[t] * slot_stride (positions kv_dim floats apart, same for v).
struct BlockRows {
  size_t n = 0;
  const size_t* slot = nullptr;
  const int64_t* index = nullptr;
  const int64_t *pos_a = nullptr, *pos_b = nullptr, *last = nullptr;
  float *k = nullptr, *v = nullptr;
  size_t slot_stride = 0;
};

// Scratch and RoPE tables for running blocks of one model on up to a given number of rows.
class BlockExec {
 public:
  BlockExec(const ModelDesc& d, int64_t max_ctx, ThreadPool* pool);
  // Scratch for calls of up to n rows (grows only).
  void reserve(size_t n);
  // x (rows.n x d_model) through the block with weights w, in place. Each row's k and v are stored
  // in its sequence's cache, then it attends to positions [0, last] of it. tap may be null.
  void run(const LayerWeights& w, float* x, const BlockRows& rows, BlockTap* tap);
  // A scratch of rows x d_model floats, free between calls (Session's head norm).
  float* norm_scratch() { return xn_.data(); }

 private:
  void attention(const BlockRows& rows);
  const ModelDesc& d_;
  int64_t max_ctx_;
  ThreadPool* pool_;
  std::vector<double> freqs_;  // RoPE frequency of each rotated pair
  std::vector<float> xn_, q_, k_, v_, att_, o_, gate_, up_;  // [rows x width]
};

// Calibration's entry point: runs one block (weights w, which may point into memory the caller
// owns) on n_seq independent sequences of ctx rows each, x = [n_seq x ctx x d_model] in place,
// each at positions 0 .. ctx-1 with a KV cache of its own; tokens (n_seq x ctx) are the
// sequences' ids, which fix a prefix-bidirectional model's prompt. Sequences run a few at a time
// (about 4096 rows per call), in order, so the taps see rows in sequence order and the results do
// not depend on the pool's size.
void run_block_on_sequences(const ModelDesc& d, const LayerWeights& w, const int32_t* tokens, float* x, size_t n_seq,
                            size_t ctx, ThreadPool* pool, BlockTap* tap);

}  // namespace sf
