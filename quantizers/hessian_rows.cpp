// Plain loops: the inner loop runs along i, over sums that do not depend on each other, so the
// compiler may vectorise it without changing any sum's order; a multiply and an add per term, as in
// the loop it replaces (the build targets x86-64's baseline, which has no fused multiply-add). Tiles:
// a block of H small enough to stay in cache while all R rows pass over it, four rows at a time so
// each row of the tile loaded serves four rows.
#include "quantizers/hessian_rows.h"

#include <algorithm>

namespace sf {

namespace {

constexpr size_t kHrowsTileCols = 256;  // i per tile
constexpr size_t kHrowsTileRows = 128;  // j per tile: with kHrowsTileCols, 256 KiB of H
constexpr size_t kHrowsRowBlock = 4;    // rows that share each row of a tile of H

// One tile: rows [r, r + RB) of S and X, columns [i0, i1), inner indices [j0, j1); a term whose x is
// 0 is left out (skip_zero).
template <size_t RB>
inline void hrows_block(const double* H, size_t n, const double* X, size_t r, size_t i0, size_t i1, size_t j0,
                        size_t j1, bool skip_zero, double* S) {
  for (size_t j = j0; j < j1; ++j) {
    const double* h = H + j * n;
    for (size_t q = 0; q < RB; ++q) {
      const double xj = X[(r + q) * n + j];
      if (skip_zero && xj == 0) continue;
      double* s = S + (r + q) * n;
      for (size_t i = i0; i < i1; ++i) s[i] += h[i] * xj;
    }
  }
}

}  // namespace

void add_rows_times_symmetric(const double* H, size_t n, const double* X, size_t R, size_t jb, size_t je,
                              bool skip_zero, double* S) {
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

}  // namespace sf
