#pragma once
// The executor's numeric building blocks. Every kernel gives the same bits whatever the thread
// count: work is split by output row, and each row is computed by one sequential loop.
#include <cstddef>
#include <cstdint>

#include "core/thread_pool.h"
#include "formats/shard_file.h"

namespace sf::kernels {

// y[r] = dot(W[r], x) for every row r of w. pool may be null (single thread).
void matvec(const TensorView& w, const float* x, float* y, ThreadPool* pool);
// One row of w, decoded to f32 (an embedding lookup).
void dequantize_row(const TensorView& w, int64_t row, float* out);
// out = x / rms(x) * weight, weight stored as any type (norms are f32 by default).
void rmsnorm(const float* x, const TensorView& weight, double eps, size_t n, float* out);
// Rotates interleaved pairs (2i, 2i+1) of each head by pos * theta^(-2i/rope_dims).
void rope(float* v, int64_t heads, int64_t head_dim, int64_t rope_dims, double theta, int64_t pos);
inline float silu(float x) { return x / (1.0f + __builtin_expf(-x)); }

}  // namespace sf::kernels
