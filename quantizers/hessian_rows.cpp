// The kernel is one multiply and one add per element (never fused: the build targets x86-64's
// baseline, which has no FMA, and the AVX2 copy below enables AVX2 alone), so every instruction
// set computes the same bits. Tiles: a block of H small enough to stay in L2 while all R rows pass
// over it; inside it, four rows times eight columns of sums stay in registers along j, so each
// element of H loaded serves four rows.
#include "quantizers/hessian_rows.h"

#include <algorithm>
#include <cstring>

namespace sf {

namespace {

constexpr size_t kHrowsTileCols = 256;  // i per tile
constexpr size_t kHrowsTileRows = 128;  // j per tile: with kHrowsTileCols, 256 KiB of H
constexpr size_t kHrowsRowBlock = 4;    // rows whose sums are held in registers together
constexpr size_t kHrowsColBlock = 8;    // columns of sums per row held in registers (two vectors)

typedef double HrowsVec __attribute__((vector_size(32)));
typedef long long HrowsMask __attribute__((vector_size(32)));

// Unaligned loads and stores; by reference, since passing a vector by value would differ between
// the baseline and the AVX2 copy.
__attribute__((always_inline)) inline void hrows_load(HrowsVec& v, const double* p) { std::memcpy(&v, p, sizeof v); }
__attribute__((always_inline)) inline void hrows_store(double* p, const HrowsVec& v) { std::memcpy(p, &v, sizeof v); }

// One tile: rows [0, R) of S and X, columns [i0, i1), inner indices [j0, j1). A term whose x is 0
// is skipped (skip_zero) by adding +0 in its place, which leaves every sum that started at +0
// unchanged (such a sum is never -0), as skipping does.
template <size_t RB>
__attribute__((always_inline)) inline void hrows_block(const double* H, size_t n, const double* X, size_t r,
                                                       size_t i0, size_t i1, size_t j0, size_t j1, bool skip_zero,
                                                       double* S) {
  size_t i = i0;
  for (; i + kHrowsColBlock <= i1; i += kHrowsColBlock) {
    HrowsVec acc[RB][2];
    for (size_t q = 0; q < RB; ++q) {
      hrows_load(acc[q][0], S + (r + q) * n + i);
      hrows_load(acc[q][1], S + (r + q) * n + i + 4);
    }
    for (size_t j = j0; j < j1; ++j) {
      HrowsVec h0, h1;
      hrows_load(h0, H + j * n + i);
      hrows_load(h1, H + j * n + i + 4);
      for (size_t q = 0; q < RB; ++q) {
        const double xj = X[(r + q) * n + j];
        const HrowsVec xb = {xj, xj, xj, xj};
        HrowsVec p0 = h0 * xb, p1 = h1 * xb;
        if (skip_zero) {
          const HrowsMask keep = xb != HrowsVec{0, 0, 0, 0};
          p0 = (HrowsVec)((HrowsMask)p0 & keep);
          p1 = (HrowsVec)((HrowsMask)p1 & keep);
        }
        acc[q][0] += p0;
        acc[q][1] += p1;
      }
    }
    for (size_t q = 0; q < RB; ++q) {
      hrows_store(S + (r + q) * n + i, acc[q][0]);
      hrows_store(S + (r + q) * n + i + 4, acc[q][1]);
    }
  }
  for (size_t q = 0; q < RB; ++q) {  // the last columns of the tile, one at a time
    double* s = S + (r + q) * n;
    const double* x = X + (r + q) * n;
    for (size_t j = j0; j < j1; ++j) {
      const double xj = x[j];
      if (skip_zero && xj == 0) continue;
      for (size_t c = i; c < i1; ++c) s[c] += H[j * n + c] * xj;
    }
  }
}

__attribute__((always_inline)) inline void hrows_kernel(const double* H, size_t n, const double* X, size_t R,
                                                        size_t jb, size_t je, bool skip_zero, double* S) {
  for (size_t i0 = 0; i0 < n; i0 += kHrowsTileCols) {
    const size_t i1 = std::min(n, i0 + kHrowsTileCols);
    for (size_t j0 = jb; j0 < je; j0 += kHrowsTileRows) {
      const size_t j1 = std::min(je, j0 + kHrowsTileRows);
      size_t r = 0;
      for (; r + kHrowsRowBlock <= R; r += kHrowsRowBlock)
        hrows_block<kHrowsRowBlock>(H, n, X, r, i0, i1, j0, j1, skip_zero, S);
      for (; r < R; ++r) hrows_block<1>(H, n, X, r, i0, i1, j0, j1, skip_zero, S);
    }
  }
}

void hrows_baseline(const double* H, size_t n, const double* X, size_t R, size_t jb, size_t je, bool skip_zero,
                    double* S) {
  hrows_kernel(H, n, X, R, jb, je, skip_zero, S);
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) void hrows_avx2(const double* H, size_t n, const double* X, size_t R, size_t jb,
                                                size_t je, bool skip_zero, double* S) {
  hrows_kernel(H, n, X, R, jb, je, skip_zero, S);
}
#endif

}  // namespace

void add_rows_times_symmetric(const double* H, size_t n, const double* X, size_t R, size_t jb, size_t je,
                              bool skip_zero, double* S) {
#if defined(__x86_64__)
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) return hrows_avx2(H, n, X, R, jb, je, skip_zero, S);
#endif
  hrows_baseline(H, n, X, R, jb, je, skip_zero, S);
}

}  // namespace sf
