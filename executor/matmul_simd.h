#pragma once
// The SIMD layer under kernels::matmul: Highway kernels compiled once per CPU target
// (executor/matmul_simd.cpp) and chosen at run time for the CPU that runs them.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/thread_pool.h"
#include "formats/shard_file.h"

namespace sf::kernels::simd {

// kernels::matmul's contract, with the bias already decoded to f32 (or null).
void matmul(const TensorView& w, const float* bias, const float* x, size_t T, float* y, ThreadPool* pool);
// kernels::matmul_many's: products of one input x ([T x cols], cols the same for every w).
struct Product {
  const TensorView* w;
  const float* bias;  // f32 or null
  float* y;
};
constexpr size_t kMaxProducts = 8;
// n <= kMaxProducts and equal widths: checked by kernels::matmul_many.
void matmul_many(const Product* products, size_t n, const float* x, size_t T, ThreadPool* pool);

// The targets this build compiled that the CPU can run, as Highway target bits (for tests and
// benchmarks), and their names.
std::vector<int64_t> available_targets();
const char* target_name(int64_t target);
// Makes the dispatch use `target` (one of available_targets()) from the next call on; 0 goes back
// to the best. Not thread-safe: only between calls.
void use_target(int64_t target);
// The target the dispatch uses now.
int64_t active_target();

}  // namespace sf::kernels::simd
