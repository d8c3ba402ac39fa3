// GPTQ (Frantar et al., 2022): quantizes a layer's columns one at a time and spreads each column's
// rounding error over the columns not yet quantized, weighted by the inverse Hessian of the
// layer's output error, H = E[x xᵀ]. The inverse is used through its upper Cholesky factor U
// (H⁻¹ = Uᵀ U): row k of U / U_kk is the optimal update of the remaining columns given column k's
// error. Updates inside a lazy batch of gptq_block columns are applied one by one; the rest of the
// row gets the batch's errors at once, as one matrix product.
#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <numeric>

#include "quantizers/calib_methods.h"

namespace sf {

namespace {

using MatrixXd = Eigen::MatrixXd;
using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
constexpr size_t kGptqRowChunk = 32;  // weight rows per task: fixed, so the bits never depend on -t
constexpr int kDampRetries = 3;   // dampening x10 each time before giving up

constexpr Eigen::Index kInvertChunk = 64;  // rows / columns per task of the inverse's products

// R⁻¹ in place for an upper triangular R, by halves: [A B; 0 D]⁻¹ = [A⁻¹, -A⁻¹ B D⁻¹; 0, D⁻¹],
// with triangular products, a third of the work of solving against the identity. The products
// run on the pool in fixed chunks of B's columns (then rows); each column (row) of a triangular
// product comes out of Eigen with the same bits whatever the chunk, so the inverse is the one a
// single-threaded product gives.
void invert_upper(Eigen::Ref<MatrixXd> R, ThreadPool& pool) {
  const Eigen::Index n = R.rows();
  if (n <= 64) {
    MatrixXd inv = MatrixXd::Identity(n, n);
    R.triangularView<Eigen::Upper>().solveInPlace(inv);
    R = inv;
    return;
  }
  const Eigen::Index h = n / 2, m = n - h;
  invert_upper(R.topLeftCorner(h, h), pool);
  invert_upper(R.bottomRightCorner(m, m), pool);
  MatrixXd B(h, m);
  auto chunked = [&](Eigen::Index total, const std::function<void(Eigen::Index, Eigen::Index)>& fn) {
    const size_t chunks = size_t((total + kInvertChunk - 1) / kInvertChunk);
    pool.parallel_for(chunks, [&](size_t c0, size_t c1) {
      for (size_t c = c0; c < c1; ++c) {
        const Eigen::Index b = Eigen::Index(c) * kInvertChunk;
        fn(b, std::min(kInvertChunk, total - b));
      }
    });
  };
  const auto A_inv = R.topLeftCorner(h, h).triangularView<Eigen::Upper>();
  const auto D_inv = R.bottomRightCorner(m, m).triangularView<Eigen::Upper>();
  chunked(m, [&](Eigen::Index b, Eigen::Index w) {
    B.middleCols(b, w) = -(A_inv * R.topRightCorner(h, m).middleCols(b, w));
  });
  chunked(h, [&](Eigen::Index b, Eigen::Index w) { R.topRightCorner(h, m).middleRows(b, w) = B.middleRows(b, w) * D_inv; });
}

// Replaces M = J P (H + damp I) Pᵀ J (the permuted, dampened Hessian in reversed order, J the
// reversal) by Uᵀ, where U is upper triangular with (P (H + damp I) Pᵀ)⁻¹ = Uᵀ U; false when it
// does not factor. chol(M) = L gives P H Pᵀ = R Rᵀ for the upper triangular R = J L J, so the
// inverse is (R⁻¹)ᵀ R⁻¹ and U = R⁻¹: one factorisation and one triangular inverse, no explicit
// inverse, all in place (one n x n matrix, a 2816-channel Hessian is 63 MB). Transposed so that
// the sweep's reads of U's rows are contiguous columns.
bool inverse_cholesky_upper_t(MatrixXd& M, ThreadPool& pool) {
  Eigen::LLT<Eigen::Ref<MatrixXd>> llt(M);
  if (llt.info() != Eigen::Success) return false;
  M.triangularView<Eigen::StrictlyUpper>().setZero();
  M.reverseInPlace();
  invert_upper(M, pool);
  M.transposeInPlace();
  return M.allFinite() && (M.diagonal().array() > 0).all();
}

// Columns in the lazy batch starting at i0. A group's parameters are fitted from its updated
// weights when its first column comes up, so every column of the group must have had all earlier
// columns' updates by then: a batch never ends inside a group that started inside it (it stops
// before that group instead). Act order's groups are fitted up front, so it needs no such cut.
size_t batch_length(const QuantGrid& grid, size_t i0, size_t block, bool act_order) {
  size_t end = std::min(grid.cols(), i0 + block);
  if (!act_order) {
    const size_t g = (end - 1) / grid.group_len();
    if (grid.group_begin(g) > i0 && grid.group_end(g) > end) end = grid.group_begin(g);
  }
  return end - i0;
}

}  // namespace

std::vector<uint8_t> encode_gptq(const std::string& tensor, const QuantGrid& grid, const float* w_in, size_t rows,
                                 const InputStats& stats, const CalibParams& params, ThreadPool& pool,
                                 std::vector<std::string>& warnings) {
  const size_t cols = grid.cols(), G = grid.groups(), rb = grid.row_bytes();
  // With the reference stream's statistics, GPTQ quantizes the reference target instead of W.
  std::vector<float> target;
  if (reference_target(w_in, rows, cols, stats, params.gptq_damp, target, pool)) w_in = target.data();
  const float* w = w_in;
  auto fall_back = [&](const std::string& why) {
    warnings.push_back(tensor + ": GPTQ " + why + "; encoded with mse clipping instead.");
    return encode_mse(grid, w, rows, channel_importance(stats, cols), params, pool);
  };
  if (!stats.with_gram || stats.gram.size() != cols * cols || stats.tokens == 0)
    return fall_back("has no Hessian for this input");

  const double tokens = double(stats.tokens);
  // Channels the calibration never drove carry no information: their weights cannot matter to the
  // output on these inputs, so they are zeroed and H_jj = 1 keeps the factorisation defined.
  std::vector<double> diag(cols);
  std::vector<bool> dead(cols, false);
  for (size_t j = 0; j < cols; ++j) {
    diag[j] = stats.gram[j * cols + j] / tokens;
    if (diag[j] == 0) { dead[j] = true; diag[j] = 1; }
  }
  // Processing order: the row's order, or (act order) the most strongly driven channels first.
  std::vector<size_t> perm(cols);
  std::iota(perm.begin(), perm.end(), 0);
  if (params.gptq_act_order)
    std::stable_sort(perm.begin(), perm.end(), [&](size_t a, size_t b) { return diag[a] > diag[b]; });
  double mean_diag = 0;
  for (double d : diag) mean_diag += d;
  mean_diag /= double(cols);

  MatrixXd Ut(cols, cols);
  auto load_reversed = [&](double damp) {  // Ut = J P (H + damp I) Pᵀ J
    const size_t n = cols;
    for (size_t b = 0; b < n; ++b) {
      const size_t cb = perm[n - 1 - b];
      double* col = Ut.col(Eigen::Index(b)).data();
      for (size_t a = 0; a < n; ++a) {
        const size_t ca = perm[n - 1 - a];
        col[a] = ca == cb ? diag[ca] + damp : stats.gram[cb * n + ca] / tokens;
      }
    }
  };
  double damp = params.gptq_damp * mean_diag;
  if (!(damp > 0)) damp = 1e-12 * std::max(mean_diag, 1e-300);
  bool factored = false;
  for (int attempt = 0; attempt <= kDampRetries && !factored; ++attempt, damp *= 10) {
    load_reversed(damp);
    factored = inverse_cholesky_upper_t(Ut, pool);
  }
  if (!factored) return fall_back("could not factor the Hessian even with dampening raised 1000x");

  // A group's parameters: the clipping (among mse's ratios) with the least weight error weighted
  // by diag H, or plain round-to-nearest's range.
  const std::vector<float> ratios = params.gptq_clip ? clip_ratios(params) : std::vector<float>{1.0f};
  auto fit = [&](const float* v, size_t b, size_t n) { return mse_fit_group(grid, v, &diag[b], n, ratios); };
  // The undamped H for the least-squares refit of the group parameters (dead channels' rows and
  // columns are zero: whatever their codes, they cost nothing).
  std::vector<double> Hn;
  if (params.gptq_refine) {
    Hn.resize(cols * cols);
    for (size_t i = 0; i < cols * cols; ++i) Hn[i] = stats.gram[i] / tokens;
  }

  const size_t block = std::max<size_t>(params.gptq_block, 1);
  const size_t chunks = (rows + kGptqRowChunk - 1) / kGptqRowChunk;
  std::vector<uint8_t> out(rows * rb, 0);
  std::vector<char> chunk_failed(chunks, 0);
  pool.parallel_for(chunks, [&](size_t c0, size_t c1) {
    RowMatrix W, Err;
    std::vector<GroupParams> ps;
    std::vector<int> codes;
    for (size_t ch = c0; ch < c1; ++ch) {
      const size_t r0 = ch * kGptqRowChunk, nr = std::min(kGptqRowChunk, rows - r0);
      W.resize(Eigen::Index(nr), Eigen::Index(cols));  // columns in processing order
      for (size_t r = 0; r < nr; ++r)
        for (size_t k = 0; k < cols; ++k) W(r, k) = dead[perm[k]] ? 0.0 : double(w[(r0 + r) * cols + perm[k]]);
      ps.assign(nr * G, GroupParams{});
      codes.assign(nr * cols, 0);
      std::vector<float> buf(grid.group_len());
      // Act order's groups are static: fitted up front from the original weights, since a group
      // stays contiguous in the row while its columns are visited out of order.
      if (params.gptq_act_order)
        for (size_t r = 0; r < nr; ++r)
          for (size_t g = 0; g < G; ++g) {
            const size_t b = grid.group_begin(g), e = grid.group_end(g);
            for (size_t j = b; j < e; ++j) buf[j - b] = dead[j] ? 0.0f : w[(r0 + r) * cols + j];
            ps[r * G + g] = fit(buf.data(), b, e - b);
          }
      for (size_t i0 = 0, nb = 0; i0 < cols; i0 += nb) {
        nb = batch_length(grid, i0, block, params.gptq_act_order);
        Err.setZero(Eigen::Index(nr), Eigen::Index(nb));
        for (size_t k = i0; k < i0 + nb; ++k) {
          const size_t col = perm[k], g = col / grid.group_len();
          const double ukk = Ut(k, k);
          for (size_t r = 0; r < nr; ++r) {
            GroupParams& p = ps[r * G + g];
            if (!params.gptq_act_order && col == grid.group_begin(g)) {  // fitted from the updated weights
              const size_t e = grid.group_end(g);
              for (size_t j = col; j < e; ++j) buf[j - col] = float(W(r, j));
              p = fit(buf.data(), col, e - col);
            }
            const float x = float(W(r, k));
            const int c = grid.code(x, p);
            codes[r * cols + col] = c;
            const double err = (W(r, k) - double(grid.decode(c, p))) / ukk;
            Err(r, k - i0) = err;
            const size_t rest = i0 + nb - k - 1;
            if (rest) W.row(r).segment(k + 1, rest) -= err * Ut.col(k).segment(k + 1, rest).transpose();
          }
        }
        const size_t tail = cols - i0 - nb;
        if (tail)
          W.rightCols(Eigen::Index(tail)).noalias() -= Err * Ut.block(i0 + nb, i0, tail, nb).transpose();
      }
      for (size_t i = 0; i < nr * G; ++i)
        if (!std::isfinite(ps[i].scale) || !std::isfinite(ps[i].min)) chunk_failed[ch] = 1;
      if (params.gptq_refine)
        refine_group_params_rows(grid, &w[r0 * cols], nr, Hn.data(), ps.data(), codes.data());
      for (size_t r = 0; r < nr; ++r) grid.pack_row(&ps[r * G], &codes[r * cols], &out[(r0 + r) * rb]);
    }
  });
  if (std::find(chunk_failed.begin(), chunk_failed.end(), 1) != chunk_failed.end())
    return fall_back("error compensation overflowed (ill-conditioned Hessian)");
  return out;
}

}  // namespace sf
