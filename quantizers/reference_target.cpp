// The reference target: what a layer fed the quantized model's inputs x should compute so that its
// output matches the unquantized model's, W r, on the calibration data. Minimising
// Σ ||W r - Q x||² over Q is, up to a constant, minimising tr((Q - T) H (Q - T)ᵀ) with
// T = W C H⁻¹ (H = Σ x xᵀ, C = Σ r xᵀ): the methods then quantize T with H as they would W. The
// same λ GPTQ dampens H with is added to C too, so T falls back to W where the data says little.
#include <Eigen/Dense>
#include <algorithm>
#include <cmath>

#include "quantizers/calibration.h"

namespace sf {

namespace {

constexpr size_t kReferenceRowChunk = 64;  // weight rows per task: fixed, so the bits never depend on -t
constexpr size_t kSolveCols = 64;          // right-hand sides per task of the triangular solves

// B = (L Lᵀ)⁻¹ B, in fixed chunks of columns on the pool: each column is solved on its own, and
// Eigen's blocking of a triangular solve follows the triangle's size, not the number of columns,
// so the bits are those of one solve of all of B (Eigen's solve is single-threaded).
void solve_in_place(const Eigen::LLT<Eigen::Ref<Eigen::MatrixXd>>& llt, Eigen::MatrixXd& B, ThreadPool& pool) {
  const size_t cols = size_t(B.cols()), chunks = (cols + kSolveCols - 1) / kSolveCols;
  pool.parallel_for(chunks, [&](size_t c0, size_t c1) {
    for (size_t c = c0; c < c1; ++c) {
      const size_t b = c * kSolveCols, w = std::min(kSolveCols, cols - b);
      auto block = B.middleCols(Eigen::Index(b), Eigen::Index(w));
      llt.matrixL().solveInPlace(block);
      llt.matrixU().solveInPlace(block);
    }
  });
}

}  // namespace

bool reference_target(const float* w, size_t rows, size_t cols, const InputStats& stats, double damp,
                      std::vector<float>& target, ThreadPool& pool) {
  target.assign(w, w + rows * cols);
  if (!stats.with_cross || stats.cross.size() != cols * cols || stats.gram.size() != cols * cols ||
      stats.tokens == 0 || cols == 0)
    return false;
  using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const double n = double(stats.tokens);
  const Eigen::Map<const RowMajor> G(stats.gram.data(), Eigen::Index(cols), Eigen::Index(cols));
  const Eigen::Map<const RowMajor> C(stats.cross.data(), Eigen::Index(cols), Eigen::Index(cols));
  Eigen::MatrixXd H = G / n;
  double lambda = damp * H.diagonal().mean();
  if (!(lambda > 0)) lambda = 1e-12 * std::max(H.diagonal().cwiseAbs().maxCoeff(), 1e-300);
  H.diagonal().array() += lambda;
  // Factored in place and solved in place: at 11008 channels each of these matrices is 0.9 GiB.
  const Eigen::LLT<Eigen::Ref<Eigen::MatrixXd>> llt(H);
  if (llt.info() != Eigen::Success) return false;
  Eigen::MatrixXd M = C.transpose() / n;  // (C + λI)ᵀ, then H⁻¹ (C + λI)ᵀ, so T = W Mᵀ
  M.diagonal().array() += lambda;
  solve_in_place(llt, M, pool);
  if (!M.allFinite()) return false;
  // The residual's drift: T += (Σ δ xᵀ / n)(H + λI)⁻¹, i.e. row r gains row r of Eᵀ, E = H⁻¹ (Σ δ xᵀ / n)ᵀ.
  Eigen::MatrixXd E;
  const bool drift = stats.out_channels == rows && stats.resid_cross.size() == rows * cols;
  if (drift) {
    const Eigen::Map<const RowMajor> R(stats.resid_cross.data(), Eigen::Index(rows), Eigen::Index(cols));
    E = R.transpose() / n;
    solve_in_place(llt, E, pool);
    if (!E.allFinite()) return false;
  }
  H.resize(0, 0);  // the factor is done with
  const size_t chunks = (rows + kReferenceRowChunk - 1) / kReferenceRowChunk;
  std::vector<char> bad(chunks, 0);
  pool.parallel_for(chunks, [&](size_t c0, size_t c1) {
    for (size_t ch = c0; ch < c1; ++ch) {
      const size_t r0 = ch * kReferenceRowChunk, nr = std::min(kReferenceRowChunk, rows - r0);
      const RowMajor Wc =
          Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
              w + r0 * cols, Eigen::Index(nr), Eigen::Index(cols)).cast<double>();
      RowMajor T = Wc * M.transpose();
      if (drift) T += E.middleCols(Eigen::Index(r0), Eigen::Index(nr)).transpose();
      for (size_t r = 0; r < nr; ++r)
        for (size_t j = 0; j < cols; ++j) {
          const float v = float(T(Eigen::Index(r), Eigen::Index(j)));
          if (!std::isfinite(v)) bad[ch] = 1;
          target[(r0 + r) * cols + j] = v;
        }
    }
  });
  if (std::find(bad.begin(), bad.end(), 1) != bad.end()) {
    target.assign(w, w + rows * cols);
    return false;
  }
  return true;
}

}  // namespace sf
