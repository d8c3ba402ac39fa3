// Least-squares group parameters for fixed codes. Once a method has chosen a row's codes, each
// dequantized weight is linear in its group's parameters (s·v for the symmetric types, s·c + m
// for int4_asym), so the parameters minimising the row's output error (t - q)ᵀ H (t - q) solve a
// small linear system, one unknown per scale (and min). GPTQ's scales were fitted from weights it
// was still updating, and mse's from a clipping grid; this refit sees the final codes.
//
// With a full H the work is three passes over H per row (the normal equations' H b_k, and the
// error before and after): cols² multiply-adds each, 0.9 GiB of H at 11008 channels. Rows are
// therefore refined together (refine_group_params_rows), each pass over a tile of H serving all of
// them (quantizers/hessian_rows.h), with every sum in the order a single row's loops take.
#include <Eigen/Dense>
#include <algorithm>
#include <cmath>

#include "core/dtype.h"
#include "quantizers/calib_methods.h"
#include "quantizers/hessian_rows.h"

namespace sf {

namespace {

// Rows refined together are bounded by their normal matrices (K² doubles each; K is 688 for a
// 11008-wide int4_asym:g32 row): the results do not depend on it.
constexpr size_t kRefineNormalBytes = size_t(32) << 20;

float stored(QType t, double v) {  // as the row stores it: f32 for int8, f16 for the rest
  return t == QType::Int8 ? float(v) : f16_to_f32(f32_to_f16(float(v)));
}

// The unknowns: one scale per group, int4_asym also one min per group (k = 2g, 2g + 1).
size_t unknowns(const QuantGrid& grid) { return grid.asymmetric() ? 2 * grid.groups() : grid.groups(); }
size_t unknown_group(const QuantGrid& grid, size_t k) { return grid.asymmetric() ? k / 2 : k; }

// Basis value of column j for its group's scale: the code's value at scale 1 (and min 0).
void scale_basis(const QuantGrid& grid, const int* codes, double* v) {
  for (size_t j = 0; j < grid.cols(); ++j) v[j] = grid.decode(codes[j], GroupParams{1.0f, 1.0f, 0.0f});
}
// b_k[j] for a column j of unknown k's group: the scale's basis value, or 1 for a min.
double basis_in_group(const QuantGrid& grid, size_t k, const double* v, size_t j) {
  return grid.asymmetric() && (k & 1) ? 1.0 : v[j];
}

std::vector<double> dequant(const QuantGrid& grid, const int* codes, const GroupParams* p) {
  std::vector<double> q(grid.cols());
  for (size_t j = 0; j < grid.cols(); ++j) q[j] = grid.decode(codes[j], p[j / grid.group_len()]);
  return q;
}

// Solves the normal equations (with a tiny ridge) for the fresh parameters, rounded as stored;
// false when they are not finite.
bool solve_fresh(const QuantGrid& grid, Eigen::MatrixXd& N, const Eigen::VectorXd& rhs, const GroupParams* ps,
                 std::vector<GroupParams>& fresh) {
  const size_t G = grid.groups();
  const bool asym = grid.asymmetric();
  const double ridge = 1e-12 * std::max(N.diagonal().cwiseAbs().maxCoeff(), 1e-300);
  N.diagonal().array() += ridge;
  const Eigen::VectorXd theta = N.ldlt().solve(rhs);
  if (!theta.allFinite()) return false;
  fresh.assign(ps, ps + G);
  for (size_t g = 0; g < G; ++g) {
    // A group whose codes carry no value (all at the grid's zero) keeps its parameters.
    const double sc = theta[Eigen::Index(asym ? 2 * g : g)];
    fresh[g].scale = stored(grid.type(), sc);
    if (asym) fresh[g].min = stored(grid.type(), theta[Eigen::Index(2 * g + 1)]);
    if (!std::isfinite(fresh[g].scale) || !std::isfinite(fresh[g].min)) return false;
  }
  return true;
}

void adopt(const QuantGrid& grid, const std::vector<GroupParams>& fresh, GroupParams* ps) {
  for (size_t g = 0; g < grid.groups(); ++g) {
    ps[g].scale = fresh[g].scale;
    ps[g].min = fresh[g].min;
  }
}

// The diagonal H: the system is block diagonal.
bool refine_diag(const QuantGrid& grid, const float* t, const double* diag, GroupParams* ps, const int* codes) {
  const size_t cols = grid.cols(), K = unknowns(grid);
  std::vector<double> v(cols);
  scale_basis(grid, codes, v.data());
  Eigen::MatrixXd N = Eigen::MatrixXd::Zero(Eigen::Index(K), Eigen::Index(K));
  Eigen::VectorXd rhs = Eigen::VectorXd::Zero(Eigen::Index(K));
  for (size_t k = 0; k < K; ++k) {
    const size_t g = unknown_group(grid, k), b = grid.group_begin(g), e = grid.group_end(g);
    for (size_t j = b; j < e; ++j)
      rhs[Eigen::Index(k)] += diag[j] * basis_in_group(grid, k, v.data(), j) * double(t[j]);
    for (size_t l = grid.asymmetric() ? 2 * g : g; l < (grid.asymmetric() ? 2 * g + 2 : g + 1); ++l) {
      double s = 0;
      for (size_t j = b; j < e; ++j)
        s += diag[j] * basis_in_group(grid, k, v.data(), j) * basis_in_group(grid, l, v.data(), j);
      N(Eigen::Index(l), Eigen::Index(k)) = s;
    }
  }
  std::vector<GroupParams> fresh;
  if (!solve_fresh(grid, N, rhs, ps, fresh)) return false;
  auto error = [&](const std::vector<double>& q) {
    double e = 0;
    for (size_t i = 0; i < cols; ++i) {
      const double di = double(t[i]) - q[i];
      e += diag[i] * di * di;
    }
    return e;
  };
  const double before = error(dequant(grid, codes, ps)), after = error(dequant(grid, codes, fresh.data()));
  if (!(after < before)) return false;
  adopt(grid, fresh, ps);
  return true;
}

// Rows [0, R) of a pass with the full H (row r: t + r·cols, ps + r·G, codes + r·cols); returns how
// many rows took their fresh parameters.
size_t refine_full_pass(const QuantGrid& grid, const float* t, size_t R, const double* H, GroupParams* ps,
                        const int* codes) {
  const size_t cols = grid.cols(), G = grid.groups(), K = unknowns(grid);
  std::vector<double> V(R * cols), X(R * cols, 0.0), P(R * cols);
  for (size_t r = 0; r < R; ++r) scale_basis(grid, codes + r * cols, &V[r * cols]);
  std::vector<Eigen::MatrixXd> N(R, Eigen::MatrixXd::Zero(Eigen::Index(K), Eigen::Index(K)));
  std::vector<Eigen::VectorXd> rhs(R, Eigen::VectorXd::Zero(Eigen::Index(K)));
  for (size_t k = 0; k < K; ++k) {
    // P = H b_k for every row, then N[:, k] = Bᵀ P and rhs_k = tᵀ P.
    const size_t g = unknown_group(grid, k), b = grid.group_begin(g), e = grid.group_end(g);
    for (size_t r = 0; r < R; ++r)
      for (size_t j = b; j < e; ++j) X[r * cols + j] = basis_in_group(grid, k, &V[r * cols], j);
    std::fill(P.begin(), P.end(), 0.0);
    add_rows_times_symmetric(H, cols, X.data(), R, b, e, true, P.data());
    for (size_t r = 0; r < R; ++r) {
      const float* tr = t + r * cols;
      const double* Pr = &P[r * cols];
      double acc = 0;
      for (size_t i = 0; i < cols; ++i) acc += double(tr[i]) * Pr[i];
      rhs[r][Eigen::Index(k)] = acc;
      for (size_t l = 0; l < K; ++l) {
        const size_t gl = unknown_group(grid, l);
        double s = 0;
        for (size_t j = grid.group_begin(gl); j < grid.group_end(gl); ++j)
          s += basis_in_group(grid, l, &V[r * cols], j) * Pr[j];
        N[r](Eigen::Index(l), Eigen::Index(k)) = s;
      }
    }
  }
  // The rows whose fresh parameters are finite, with their residuals before and after.
  std::vector<size_t> live;
  std::vector<std::vector<GroupParams>> fresh(R);
  std::vector<double> D;
  for (size_t r = 0; r < R; ++r) {
    if (!solve_fresh(grid, N[r], rhs[r], ps + r * G, fresh[r])) continue;
    live.push_back(r);
    const GroupParams* both[] = {ps + r * G, fresh[r].data()};
    for (const GroupParams* p : both) {
      const std::vector<double> q = dequant(grid, codes + r * cols, p);
      for (size_t i = 0; i < cols; ++i) D.push_back(double(t[r * cols + i]) - q[i]);
    }
  }
  if (live.empty()) return 0;
  // (t - q)ᵀ H (t - q): each row's H d in one pass for all of them, then dᵀ (H d).
  std::vector<double> S(D.size(), 0.0);
  add_rows_times_symmetric(H, cols, D.data(), 2 * live.size(), 0, cols, false, S.data());
  auto error = [&](size_t m) {
    double e = 0;
    for (size_t i = 0; i < cols; ++i) e += D[m * cols + i] * S[m * cols + i];
    return e;
  };
  size_t n_changed = 0;
  for (size_t a = 0; a < live.size(); ++a) {
    const double before = error(2 * a), after = error(2 * a + 1);
    if (!(after < before)) continue;
    const size_t r = live[a];
    adopt(grid, fresh[r], ps + r * G);
    ++n_changed;
  }
  return n_changed;
}

}  // namespace

size_t refine_group_params_rows(const QuantGrid& grid, const float* t, size_t rows, const double* H,
                                GroupParams* ps, const int* codes) {
  const size_t cols = grid.cols(), G = grid.groups(), K = unknowns(grid);
  const size_t per = std::max<size_t>(1, kRefineNormalBytes / std::max<size_t>(K * K * sizeof(double), 1));
  size_t n = 0;
  for (size_t r0 = 0; r0 < rows; r0 += per) {
    const size_t R = std::min(per, rows - r0);
    n += refine_full_pass(grid, t + r0 * cols, R, H, ps + r0 * G, codes + r0 * cols);
  }
  return n;
}

bool refine_group_params(const QuantGrid& grid, const float* t, const double* H, const double* diag,
                         GroupParams* ps, const int* codes) {
  if (!H) return refine_diag(grid, t, diag, ps, codes);
  return refine_full_pass(grid, t, 1, H, ps, codes) != 0;
}

}  // namespace sf
