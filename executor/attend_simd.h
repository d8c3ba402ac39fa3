#pragma once
// The SIMD layer under kernels::attend_head (executor/attend_simd.cpp): compiled once per Highway
// target and dispatched at run time like the matrix products (executor/matmul_simd.h).
#include <cstddef>

namespace sf::kernels::simd {

// kernels::attend_head's contract.
void attend_head(const float* q, const float* k, const float* v, size_t stride, size_t n_pos, size_t head_dim,
                 float scale, float* scores, float* out);

}  // namespace sf::kernels::simd
