#pragma once
// Products of many rows with one symmetric matrix H (a layer's Hessian), each element summed in
// ascending order of the inner index, exactly as a plain loop Σ_j H[i][j] x[j] sums it: so results
// do not depend on how many rows are taken together, on the tiling, or on the instruction set.
// Rows are taken together so that each tile of H (up to 11008² doubles, far larger than any
// cache) is read from memory once for all of them rather than once per row.
#include <cstddef>

namespace sf {

// S[r·n + i] += Σ_{j ∈ [jb, je)} H[j·n + i] · X[r·n + j] for rows r < R and every i < n, each sum
// in ascending j (S's previous value first). H is n x n and symmetric, so this is Σ_j H[i][j] X[r][j].
// With skip_zero, terms whose X is 0 are left out (as a loop that skips them would).
void add_rows_times_symmetric(const double* H, size_t n, const double* X, size_t R, size_t jb, size_t je,
                              bool skip_zero, double* S);

}  // namespace sf
