#pragma once
// The executor's numeric building blocks, on T tokens at once (rows of a [T x n] activation).
// Every kernel gives the same bits whatever the thread count: work is split by output row, and
// each output value is computed by one sequential loop.
#include <cstddef>
#include <cstdint>

#include "core/model_desc.h"
#include "core/thread_pool.h"
#include "formats/shard_file.h"

namespace sf::kernels {

// y[t][r] = dot(W[r], x[t]) + bias[r] for each of the T rows of x ([T x cols]) and every row r of
// w; y is [T x rows]. bias and pool may be null. SIMD, dispatched to the CPU's best target
// (executor/matmul_simd.cpp); integer weight types meet activations quantized to 8 bits per block
// of 32, so results differ from matmul_reference by that rounding.
void matmul(const TensorView& w, const TensorView* bias, const float* x, size_t T, float* y, ThreadPool* pool);
// Several products of the same input x ([T x cols]; every w has cols columns), at most 8: each
// y_i = x · W_i^T + bias_i as matmul gives it, bit for bit, but in ONE parallel section over the
// products' rows and with x quantized once: a decode step pays one pool wake-up for q, k and v
// (or gate and up) instead of one per product.
struct MatmulOut {
  const TensorView* w;
  const TensorView* bias;  // may be null
  float* y;                // [T x w->rows()]
};
void matmul_many(const MatmulOut* outs, size_t n, const float* x, size_t T, ThreadPool* pool);
// The scalar product in f32 with the type's own row kernels (core/quant_types): the reference the
// SIMD kernels are tested against.
void matmul_reference(const TensorView& w, const TensorView* bias, const float* x, size_t T, float* y,
                      ThreadPool* pool);
// One row of w, decoded to f32 (an embedding lookup).
void dequantize_row(const TensorView& w, int64_t row, float* out);
// Normalises each of the T rows of x ([T x n]) into out: RMSNorm x/rms(x)*w, or LayerNorm
// (x-mean)/std*w + b. weight/bias stored as any type (f32 by default).
void norm(NormKind kind, const float* x, size_t T, size_t n, const TensorView& weight, const TensorView* bias,
          double eps, float* out);
// Rotates interleaved pairs (2i, 2i+1), i < n_pairs, of v (one head's segment) by pos * freqs[i].
void rotate_pairs(float* v, size_t n_pairs, const double* freqs, int64_t pos);
// rotate_pairs in two steps, for many heads at one position: cs[2i], cs[2i + 1] = cos, sin of
// pos * freqs[i] (as rotate_pairs rounds them), computed once; then each head rotated by the table.
void rotation_table(size_t n_pairs, const double* freqs, int64_t pos, float* cs);
void rotate_pairs(float* v, size_t n_pairs, const float* cs);
// One query head attending over n_pos cached positions: out = softmax(scale * q·k_j) · v_j, j < n_pos.
// k and v point at position 0 of this head's cache; consecutive positions are `stride` floats
// apart. scores has room for n_pos floats (the caller's scratch: no allocation here).
void attend_head(const float* q, const float* k, const float* v, size_t stride, size_t n_pos, size_t head_dim,
                 float scale, float* scores, float* out);
// The scalar loops attend_head's SIMD version (executor/attend_simd.cpp) is tested against.
void attend_head_reference(const float* q, const float* k, const float* v, size_t stride, size_t n_pos,
                           size_t head_dim, float scale, float* scores, float* out);
inline float silu(float x) { return x / (1.0f + __builtin_expf(-x)); }
// GELU, tanh approximation (GPT-2's gelu_new, ChatGLM-6B's gelu).
float gelu_tanh(float x);

}  // namespace sf::kernels
