// Least-squares group parameters for fixed codes. Once a method has chosen a row's codes, each
// dequantized weight is linear in its group's parameters (s·v for the symmetric types, s·c + m
// for int4_asym), so the parameters minimising the row's output error (t - q)ᵀ H (t - q) solve a
// small linear system, one unknown per scale (and min). GPTQ's scales were fitted from weights it
// was still updating, and mse's from a clipping grid; this refit sees the final codes.
#include <Eigen/Dense>
#include <cmath>

#include "core/dtype.h"
#include "quantizers/calib_methods.h"

namespace sf {

namespace {

float stored(QType t, double v) {  // as the row stores it: f32 for int8, f16 for the rest
  return t == QType::Int8 ? float(v) : f16_to_f32(f32_to_f16(float(v)));
}

double row_error(const float* t, const std::vector<double>& q, const double* H, const double* diag, size_t cols) {
  double e = 0;
  for (size_t i = 0; i < cols; ++i) {
    const double di = double(t[i]) - q[i];
    if (!H) { e += diag[i] * di * di; continue; }
    double s = 0;
    for (size_t j = 0; j < cols; ++j) s += H[i * cols + j] * (double(t[j]) - q[j]);
    e += di * s;
  }
  return e;
}

}  // namespace

bool refine_group_params(const QuantGrid& grid, const float* t, const double* H, const double* diag,
                         GroupParams* ps, const int* codes) {
  const size_t cols = grid.cols(), G = grid.groups();
  const bool asym = grid.asymmetric();
  const size_t K = asym ? 2 * G : G;
  // Basis value of column j for its group's scale: the code's value at scale 1 (and min 0).
  std::vector<double> v(cols);
  for (size_t j = 0; j < cols; ++j) v[j] = grid.decode(codes[j], GroupParams{1.0f, 1.0f, 0.0f});
  auto group_of = [&](size_t j) { return j / grid.group_len(); };
  auto basis = [&](size_t k, size_t j) -> double {  // b_k[j]
    const size_t g = asym ? k / 2 : k;
    if (group_of(j) != g) return 0;
    return asym && (k & 1) ? 1.0 : v[j];
  };
  Eigen::MatrixXd N = Eigen::MatrixXd::Zero(Eigen::Index(K), Eigen::Index(K));
  Eigen::VectorXd rhs = Eigen::VectorXd::Zero(Eigen::Index(K));
  std::vector<double> P(cols);
  for (size_t k = 0; k < K; ++k) {
    const size_t g = asym ? k / 2 : k, b = grid.group_begin(g), e = grid.group_end(g);
    if (H) {  // P = H b_k, then N[:, k] = Bᵀ P and rhs_k = tᵀ P
      std::fill(P.begin(), P.end(), 0.0);
      for (size_t j = b; j < e; ++j) {
        const double bj = basis(k, j);
        if (bj == 0) continue;
        for (size_t i = 0; i < cols; ++i) P[i] += H[j * cols + i] * bj;  // H symmetric: row j is column j
      }
      for (size_t i = 0; i < cols; ++i) rhs[Eigen::Index(k)] += double(t[i]) * P[i];
      for (size_t l = 0; l < K; ++l) {
        const size_t gl = asym ? l / 2 : l;
        double s = 0;
        for (size_t j = grid.group_begin(gl); j < grid.group_end(gl); ++j) s += basis(l, j) * P[j];
        N(Eigen::Index(l), Eigen::Index(k)) = s;
      }
    } else {  // diagonal H: the system is block diagonal
      for (size_t j = b; j < e; ++j) rhs[Eigen::Index(k)] += diag[j] * basis(k, j) * double(t[j]);
      for (size_t l = asym ? 2 * g : g; l < (asym ? 2 * g + 2 : g + 1); ++l) {
        double s = 0;
        for (size_t j = b; j < e; ++j) s += diag[j] * basis(k, j) * basis(l, j);
        N(Eigen::Index(l), Eigen::Index(k)) = s;
      }
    }
  }
  const double ridge = 1e-12 * std::max(N.diagonal().cwiseAbs().maxCoeff(), 1e-300);
  N.diagonal().array() += ridge;
  const Eigen::VectorXd theta = N.ldlt().solve(rhs);
  if (!theta.allFinite()) return false;

  std::vector<GroupParams> fresh(ps, ps + G);
  for (size_t g = 0; g < G; ++g) {
    // A group whose codes carry no value (all at the grid's zero) keeps its parameters.
    const double sc = theta[Eigen::Index(asym ? 2 * g : g)];
    fresh[g].scale = stored(grid.type(), sc);
    if (asym) fresh[g].min = stored(grid.type(), theta[Eigen::Index(2 * g + 1)]);
    if (!std::isfinite(fresh[g].scale) || !std::isfinite(fresh[g].min)) return false;
  }
  auto dequant = [&](const GroupParams* p) {
    std::vector<double> q(cols);
    for (size_t j = 0; j < cols; ++j) q[j] = grid.decode(codes[j], p[group_of(j)]);
    return q;
  };
  const double before = row_error(t, dequant(ps), H, diag, cols);
  const double after = row_error(t, dequant(fresh.data()), H, diag, cols);
  if (!(after < before)) return false;
  for (size_t g = 0; g < G; ++g) {
    ps[g].scale = fresh[g].scale;
    ps[g].min = fresh[g].min;
  }
  return true;
}

}  // namespace sf
