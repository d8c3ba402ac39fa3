// InputStats: the per-channel sums and the Gram matrix of a linear group's inputs. Every element
// of every sum is computed by the same operations in the same order whatever the pool's size: the
// per-channel sums run over the rows in order, and the Gram matrix is updated in fixed chunks of
// rows, each split into fixed tiles of Gram rows (the pool only decides who computes a tile).
#include <Eigen/Dense>
#include <algorithm>
#include <cmath>

#include "quantizers/calibration.h"

namespace sf {

namespace {

constexpr size_t kStatsRowChunk = 256;  // input rows per rank-k update
constexpr size_t kGramTile = 64;   // Gram rows per task

void run(ThreadPool* pool, size_t n, const std::function<void(size_t, size_t)>& fn) {
  if (pool && n > 1) pool->parallel_for(n, fn);
  else fn(0, n);
}

}  // namespace

void InputStats::reset(size_t n, bool gram_too, size_t max_sample, bool cross_too) {
  channels = n;
  tokens = 0;
  sum_sq.assign(n, 0.0);
  sum_abs.assign(n, 0.0);
  with_gram = gram_too;
  gram.assign(gram_too ? n * n : 0, 0.0);
  with_cross = cross_too;
  cross.assign(cross_too ? n * n : 0, 0.0);
  resid_cross.clear();
  out_channels = 0;
  max_sample_rows = max_sample;
  sample.clear();
  sample_rows = 0;
}

void InputStats::add(const float* x, size_t rows, ThreadPool* pool) {
  const size_t c = channels;
  if (rows == 0 || c == 0) { tokens += rows; return; }
  const size_t keep = std::min(rows, max_sample_rows - std::min(max_sample_rows, sample_rows));
  sample.insert(sample.end(), x, x + keep * c);
  sample_rows += keep;

  // Per channel, over the rows in order; channels split among the workers.
  run(pool, c, [&](size_t j0, size_t j1) {
    for (size_t r = 0; r < rows; ++r) {
      const float* row = x + r * c;
      for (size_t j = j0; j < j1; ++j) {
        const double v = row[j];
        sum_sq[j] += v * v;
        sum_abs[j] += std::fabs(v);
      }
    }
  });

  if (with_gram) {
    using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    Eigen::Map<RowMajor> G(gram.data(), Eigen::Index(c), Eigen::Index(c));
    const size_t tiles = (c + kGramTile - 1) / kGramTile;
    Eigen::MatrixXd X;
    for (size_t r0 = 0; r0 < rows; r0 += kStatsRowChunk) {
      const size_t n = std::min(kStatsRowChunk, rows - r0);
      X = Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
              x + r0 * c, Eigen::Index(n), Eigen::Index(c)).cast<double>();
      // The upper triangle only, tile by tile (each tile's shape depends on its index alone, so
      // the product's bits do too); the lower one is mirrored below.
      run(pool, tiles, [&](size_t t0, size_t t1) {
        for (size_t t = t0; t < t1; ++t) {
          const Eigen::Index i0 = Eigen::Index(t * kGramTile), ni = Eigen::Index(std::min(kGramTile, c - t * kGramTile));
          const Eigen::Index w = Eigen::Index(c) - i0;
          G.block(i0, i0, ni, w).noalias() += X.middleCols(i0, ni).transpose() * X.middleCols(i0, w);
        }
      });
    }
    run(pool, c, [&](size_t i0, size_t i1) {
      for (size_t i = i0; i < i1; ++i)
        for (size_t j = 0; j < i; ++j) gram[i * c + j] = gram[j * c + i];
    });
  }
  tokens += rows;
}

void InputStats::add_pair(const float* x, const float* ref, size_t rows, ThreadPool* pool) {
  add(x, rows, pool);
  const size_t c = channels;
  if (!with_cross || rows == 0 || c == 0) return;
  using RowMajorF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<RowMajor> C(cross.data(), Eigen::Index(c), Eigen::Index(c));
  const size_t tiles = (c + kGramTile - 1) / kGramTile;
  Eigen::MatrixXd X, R;
  for (size_t r0 = 0; r0 < rows; r0 += kStatsRowChunk) {
    const size_t n = std::min(kStatsRowChunk, rows - r0);
    X = Eigen::Map<const RowMajorF>(x + r0 * c, Eigen::Index(n), Eigen::Index(c)).cast<double>();
    R = Eigen::Map<const RowMajorF>(ref + r0 * c, Eigen::Index(n), Eigen::Index(c)).cast<double>();
    // Not symmetric: every row tile of C in full, each tile's shape fixed by its index.
    run(pool, tiles, [&](size_t t0, size_t t1) {
      for (size_t t = t0; t < t1; ++t) {
        const Eigen::Index i0 = Eigen::Index(t * kGramTile), ni = Eigen::Index(std::min(kGramTile, c - t * kGramTile));
        C.middleRows(i0, ni).noalias() += R.middleCols(i0, ni).transpose() * X;
      }
    });
  }
}

void InputStats::add_residual(const float* delta, const float* x, size_t rows, size_t out, ThreadPool* pool) {
  const size_t c = channels;
  if (resid_cross.size() != out * c) {
    resid_cross.assign(out * c, 0.0);
    out_channels = out;
  }
  if (rows == 0 || c == 0 || out == 0) return;
  using RowMajorF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<RowMajor> E(resid_cross.data(), Eigen::Index(out), Eigen::Index(c));
  const size_t tiles = (out + kGramTile - 1) / kGramTile;
  Eigen::MatrixXd X, Dl;
  for (size_t r0 = 0; r0 < rows; r0 += kStatsRowChunk) {
    const size_t n = std::min(kStatsRowChunk, rows - r0);
    X = Eigen::Map<const RowMajorF>(x + r0 * c, Eigen::Index(n), Eigen::Index(c)).cast<double>();
    Dl = Eigen::Map<const RowMajorF>(delta + r0 * out, Eigen::Index(n), Eigen::Index(out)).cast<double>();
    run(pool, tiles, [&](size_t t0, size_t t1) {
      for (size_t t = t0; t < t1; ++t) {
        const Eigen::Index i0 = Eigen::Index(t * kGramTile), ni = Eigen::Index(std::min(kGramTile, out - t * kGramTile));
        E.middleRows(i0, ni).noalias() += Dl.middleCols(i0, ni).transpose() * X;
      }
    });
  }
}

}  // namespace sf
