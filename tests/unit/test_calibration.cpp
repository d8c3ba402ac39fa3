// Calibration numerics (quantizers/calibration.h and the method files), each against a direct
// reference written here: the grid against the round-to-nearest quantizers, mse against a brute
// force over the clip grid, GPTQ against the textbook per-column loop with an explicit inverse
// Hessian, AWQ against the sample error it claims to lower.
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "quantizers/calib_methods.h"
#include "quantizers/calibration.h"
#include "quantizers/hessian_rows.h"
#include "quantizers/quant_grid.h"

namespace sf {
namespace {

using Eigen::MatrixXd;

std::vector<float> normal(size_t n, uint32_t seed, float sd = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

Scheme sch(QType t, size_t group = 0) { return Scheme{t, group}; }

// Integer schemes the tests sweep (int4 with the group sizes given).
std::vector<Scheme> int_schemes(size_t g1 = 16, size_t g2 = 32) {
  return {sch(QType::Int8), sch(QType::Int4Sym, g1), sch(QType::Int4Asym, g2), sch(QType::Int4Sym, g2),
          sch(QType::Int4Asym, g1), sch(QType::Q8_0), sch(QType::Q4_0)};
}

std::vector<float> dequant(const Scheme& s, const std::vector<uint8_t>& bytes, size_t rows, size_t cols) {
  const auto& tr = qtype_traits(s.type);
  const size_t rb = tr.row_bytes(cols, s.group);
  std::vector<float> out(rows * cols);
  for (size_t r = 0; r < rows; ++r) tr.dequantize_row(&bytes[r * rb], cols, s.group, &out[r * cols]);
  return out;
}

std::vector<uint8_t> rtn(const Scheme& s, const std::vector<float>& w, size_t rows, size_t cols) {
  const auto& tr = qtype_traits(s.type);
  const size_t rb = tr.row_bytes(cols, s.group);
  std::vector<uint8_t> out(rows * rb);
  for (size_t r = 0; r < rows; ++r) tr.quantize_row(&w[r * cols], cols, s.group, &out[r * rb]);
  return out;
}

bool all_finite(const std::vector<float>& v) {
  for (float x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

// ---------------------------------------------------------------- grid

TEST(QuantGrid, ClipOneIsByteIdenticalToRoundToNearest) {
  std::vector<Scheme> schemes = {sch(QType::Int8), sch(QType::Q8_0), sch(QType::Q4_0)};
  for (size_t g : {2, 3, 6, 32, 64, 128})
    for (QType t : {QType::Int4Sym, QType::Int4Asym}) schemes.push_back(sch(t, g));
  int checked = 0;
  for (const Scheme& s : schemes)
    for (size_t cols : {1, 2, 7, 31, 32, 33, 65, 100, 129})
      for (int content = 0; content < 4; ++content) {
        std::vector<float> x = normal(cols, uint32_t(cols * 7 + content), 0.3f);
        if (content == 1) std::fill(x.begin(), x.end(), 0.0f);                     // all zeros
        if (content == 2) for (size_t i = 0; i < cols; i += 3) x[i] = 0.0f;         // zero runs, ties
        if (content == 2 && cols > 4) x[cols / 2] = -x[cols / 3 + 1] * 1.0f + 2.0f;  // an outlier
        if (content == 3)  // -8 sets d = 1 for int4 / q4_0: exact half steps, each type's tie rule
          for (size_t i = 0; i < cols; ++i) x[i] = i % 4 == 0 ? -8.0f : float(int(i % 15) - 7) + 0.5f;
        const QuantGrid grid(s, cols);
        std::vector<GroupParams> ps(grid.groups());
        std::vector<int> codes(cols);
        for (size_t g = 0; g < grid.groups(); ++g) {
          const size_t b = grid.group_begin(g), e = grid.group_end(g);
          ps[g] = grid.fit(&x[b], e - b, 1.0f);
          for (size_t j = b; j < e; ++j) codes[j] = grid.code(x[j], ps[g]);
        }
        std::vector<uint8_t> mine(grid.row_bytes(), 0xAB);
        grid.pack_row(ps.data(), codes.data(), mine.data());
        EXPECT_EQ(mine, rtn(s, x, 1, cols)) << s.name() << " cols " << cols << " content " << content;
        // decode() gives what the executor reads.
        const std::vector<float> deq = dequant(s, mine, 1, cols);
        for (size_t j = 0; j < cols; ++j) ASSERT_EQ(grid.decode(codes[j], ps[j / grid.group_len()]), deq[j]);
        ++checked;
      }
  EXPECT_EQ(checked, 15 * 9 * 4);
}

// ---------------------------------------------------------------- input stats

TEST(InputStats, SumsMatchADirectLoopAndKeepTheFirstRows) {
  const size_t c = 70, rows = 300;  // more than one row chunk and one Gram tile
  const std::vector<float> x = normal(rows * c, 5);
  ThreadPool pool(3);
  InputStats st;
  st.reset(c, true, 10);
  st.add(x.data(), 120, &pool);
  st.add(x.data() + 120 * c, rows - 120, &pool);
  EXPECT_EQ(st.tokens, rows);
  ASSERT_EQ(st.sample_rows, 10u);
  EXPECT_TRUE(std::equal(st.sample.begin(), st.sample.end(), x.begin()));
  for (size_t i = 0; i < c; ++i) {
    double sq = 0, ab = 0;
    for (size_t r = 0; r < rows; ++r) { sq += double(x[r * c + i]) * x[r * c + i]; ab += std::fabs(x[r * c + i]); }
    EXPECT_NEAR(st.sum_sq[i], sq, 1e-9 * sq);
    EXPECT_NEAR(st.sum_abs[i], ab, 1e-9 * ab);
    for (size_t j = 0; j < c; ++j) {
      double g = 0;
      for (size_t r = 0; r < rows; ++r) g += double(x[r * c + i]) * x[r * c + j];
      ASSERT_NEAR(st.gram[i * c + j], g, 1e-9 * rows) << i << "," << j;
      ASSERT_EQ(st.gram[i * c + j], st.gram[j * c + i]);
    }
  }
}

// ---------------------------------------------------------------- mse

// Weights with heavy tails (so clipping can pay) and importances spread over four decades.
struct Problem {
  size_t rows, cols;
  std::vector<float> w;
  InputStats stats;
};
Problem heavy_tailed(size_t rows, size_t cols, uint32_t seed) {
  Problem p{rows, cols, normal(rows * cols, seed), {}};
  std::mt19937 rng(seed + 1);
  std::student_t_distribution<float> t(2.5f);
  for (auto& v : p.w) v = t(rng) * 0.05f;
  p.stats.reset(cols, false, 0);
  p.stats.tokens = 100;
  std::uniform_real_distribution<double> u(-2, 2);
  for (size_t j = 0; j < cols; ++j) p.stats.sum_sq[j] = 100 * std::pow(10.0, u(rng));
  p.stats.sum_sq[3] = 0;  // a channel the calibration never saw still counts a little
  return p;
}

double weighted_error(const std::vector<float>& w, const std::vector<float>& deq, const std::vector<double>& imp,
                      size_t cols) {
  double e = 0;
  for (size_t i = 0; i < w.size(); ++i) e += imp[i % cols] * double(w[i] - deq[i]) * double(w[i] - deq[i]);
  return e;
}

TEST(Mse, NeverWorseThanRoundToNearestInItsObjective) {
  Problem p = heavy_tailed(8, 100, 11);
  ThreadPool pool(1);
  std::vector<std::string> warnings;
  const std::vector<double> imp = channel_importance(p.stats, p.cols);
  EXPECT_GT(imp[3], 0.0);
  for (const Scheme& s : int_schemes()) {
    const auto bytes = encode_calibrated(CalibMethod::Mse, "t", p.w.data(), p.rows, p.cols, s, p.stats, {}, pool, warnings);
    const double e_mse = weighted_error(p.w, dequant(s, bytes, p.rows, p.cols), imp, p.cols);
    const double e_rtn = weighted_error(p.w, dequant(s, rtn(s, p.w, p.rows, p.cols), p.rows, p.cols), imp, p.cols);
    EXPECT_LE(e_mse, e_rtn * (1 + 1e-12)) << s.name();
    // 4-bit grids on heavy tails: clipping must actually win.
    if (s.type != QType::Int8 && s.type != QType::Q8_0) {
      EXPECT_LT(e_mse, 0.97 * e_rtn) << s.name();
    }
  }
  EXPECT_TRUE(warnings.empty());
}

// The reference: every clip ratio (and, asym, every one-sided cut) tried by hand with the formulas
// of docs/format.md, not through QuantGrid.
double brute_force_best(QType t, const std::vector<float>& w, const std::vector<double>& imp) {
  double best = INFINITY;
  auto f16 = [](float v) { return f16_to_f32(f32_to_f16(v)); };
  auto err_of = [&](auto&& deq) {
    double e = 0;
    for (size_t j = 0; j < w.size(); ++j) e += imp[j] * std::pow(double(w[j]) - double(deq(w[j])), 2);
    best = std::min(best, e);
  };
  float amax = 0, m = 0, lo = w[0], hi = w[0];
  for (float v : w) {
    if (std::fabs(v) > amax) { amax = std::fabs(v); m = v; }
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  for (int k = 0; k < 20; ++k) {
    const float c = float(1.0 - 0.5 * k / 19);
    if (t == QType::Int8) {
      const float d = amax * c / 127.0f;
      err_of([&](float v) { return d * std::clamp(std::nearbyint(v / d), -127.0f, 127.0f); });
    } else if (t == QType::Int4Sym) {
      const float d = f16(m * c / -8.0f);
      err_of([&](float v) { return d * std::clamp(std::nearbyint(v / d), -8.0f, 7.0f); });
    } else {
      const float width = hi - lo, cut = 1 - c;
      for (auto [a, b] : {std::pair{cut / 2, cut / 2}, std::pair{cut, 0.0f}, std::pair{0.0f, cut}}) {
        const float l = k ? lo + a * width : lo, h = k ? hi - b * width : hi;
        const float d = f16((h - l) / 15.0f), mn = f16(l);
        err_of([&](float v) { return d * std::clamp(std::nearbyint((v - mn) / d), 0.0f, 15.0f) + mn; });
      }
    }
  }
  return best;
}

TEST(Mse, AgreesWithBruteForceOnATinyGroup) {
  CalibParams params;  // 20 steps down to 0.5, as the reference loops
  const std::vector<float> ratios = clip_ratios(params);
  ASSERT_EQ(ratios.size(), 20u);
  for (QType t : {QType::Int8, QType::Int4Sym, QType::Int4Asym})
    for (uint32_t seed = 0; seed < 20; ++seed) {
      std::vector<float> w = normal(8, seed);
      w[seed % 8] *= 4;  // an outlier
      std::vector<double> imp(8);
      for (size_t j = 0; j < 8; ++j) imp[j] = 0.1 + j;
      const QuantGrid grid(sch(t, 8), 8);
      double err = 0;
      mse_fit_group(grid, w.data(), imp.data(), 8, ratios, &err);
      const double ref = brute_force_best(t, w, imp);
      EXPECT_NEAR(err, ref, 1e-6 * ref + 1e-12) << qtype_traits(t).name << " seed " << seed;
    }
}

// ---------------------------------------------------------------- gptq

// Correlated inputs: x = z A with a random mixing A, so the Hessian is far from diagonal.
InputStats correlated_stats(size_t cols, size_t tokens, uint32_t seed, size_t sample_rows = 0) {
  const std::vector<float> z = normal(tokens * cols, seed), a = normal(cols * cols, seed + 1, 0.3f);
  std::vector<float> x(tokens * cols, 0);
  for (size_t t = 0; t < tokens; ++t)
    for (size_t k = 0; k < cols; ++k)
      for (size_t j = 0; j < cols; ++j) x[t * cols + j] += z[t * cols + k] * (a[k * cols + j] + (k == j ? 1 : 0));
  InputStats st;
  st.reset(cols, true, sample_rows);
  st.add(x.data(), tokens, nullptr);
  return st;
}

// The textbook loop: explicit inverse Hessian, one column at a time, no Cholesky, no batches.
// Returns the dequantized weights.
std::vector<float> gptq_reference(const Scheme& s, const std::vector<float>& w0, size_t rows, size_t cols,
                                  const InputStats& st, double damp_rel, bool act_order) {
  MatrixXd H(cols, cols);
  for (size_t i = 0; i < cols; ++i)
    for (size_t j = 0; j < cols; ++j) H(i, j) = st.gram[i * cols + j] / double(st.tokens);
  std::vector<float> w = w0;
  for (size_t j = 0; j < cols; ++j)
    if (H(j, j) == 0) {
      H(j, j) = 1;
      for (size_t r = 0; r < rows; ++r) w[r * cols + j] = 0;
    }
  std::vector<size_t> order(cols);
  for (size_t j = 0; j < cols; ++j) order[j] = j;
  if (act_order) std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return H(a, a) > H(b, b); });
  MatrixXd Hd = H;
  Hd.diagonal().array() += damp_rel * H.diagonal().mean();
  MatrixXd Hinv = Hd.inverse();  // indexed by original columns; order decides who goes first
  const QuantGrid grid(s, cols);
  std::vector<GroupParams> ps(rows * grid.groups());
  if (act_order)
    for (size_t r = 0; r < rows; ++r)
      for (size_t g = 0; g < grid.groups(); ++g)
        ps[r * grid.groups() + g] = grid.fit(&w[r * cols + grid.group_begin(g)], grid.group_end(g) - grid.group_begin(g), 1);
  std::vector<float> deq(rows * cols);
  std::vector<bool> done(cols, false);
  for (size_t j : order) {
    const size_t g = j / grid.group_len();
    for (size_t r = 0; r < rows; ++r) {
      float* row = &w[r * cols];
      GroupParams& p = ps[r * grid.groups() + g];
      if (!act_order && j == grid.group_begin(g)) p = grid.fit(row + j, grid.group_end(g) - j, 1);
      const float q = grid.quantize(row[j], p);
      deq[r * cols + j] = q;
      const double e = (double(row[j]) - q) / Hinv(j, j);
      for (size_t k = 0; k < cols; ++k)
        if (!done[k] && k != j) row[k] = float(row[k] - e * Hinv(j, k));
    }
    done[j] = true;
    const MatrixXd col = Hinv.col(j), rowj = Hinv.row(j);
    const double hjj = Hinv(j, j);
    Hinv -= col * rowj / hjj;  // removes column j; the rows / columns already done are never read again
  }
  return deq;
}

// tr(ΔW H ΔWᵀ): the output error on the calibration inputs (per token).
double output_error(const std::vector<float>& w, const std::vector<float>& deq, size_t rows, size_t cols,
                    const InputStats& st) {
  double e = 0;
  for (size_t r = 0; r < rows; ++r)
    for (size_t i = 0; i < cols; ++i) {
      const double di = w[r * cols + i] - deq[r * cols + i];
      for (size_t j = 0; j < cols; ++j) e += di * st.gram[i * cols + j] * (w[r * cols + j] - deq[r * cols + j]);
    }
  return e / double(st.tokens);
}

// Bound: the reference runs the same arithmetic in a different order (explicit inverse downdates
// vs Cholesky rows, float vs double weights), so a weight sitting within ~1e-6 of a rounding
// boundary may take the other code, and its row's later columns then get a slightly different
// compensation. We allow 1 % of the weights to differ, and require the output errors to agree
// within 2 %; a wrong update (sign, scale, order, batch boundary) changes most codes.
void expect_matches_reference(const Scheme& s, bool act_order, size_t block) {
  const size_t rows = 6, cols = 64;
  const InputStats st = correlated_stats(cols, 256, 3);
  const std::vector<float> w = normal(rows * cols, 4, 0.1f);
  CalibParams params;
  params.gptq_block = block;
  params.gptq_act_order = act_order;
  params.gptq_clip = false;  // the textbook algorithm: round-to-nearest's range, no refit
  params.gptq_refine = false;
  ThreadPool pool(1);
  std::vector<std::string> warnings;
  const auto bytes = encode_calibrated(CalibMethod::Gptq, "t", w.data(), rows, cols, s, st, params, pool, warnings);
  EXPECT_TRUE(warnings.empty());
  const std::vector<float> mine = dequant(s, bytes, rows, cols);
  const std::vector<float> ref = gptq_reference(s, w, rows, cols, st, params.gptq_damp, act_order);
  size_t differ = 0;
  for (size_t i = 0; i < mine.size(); ++i) differ += std::fabs(mine[i] - ref[i]) > 1e-6f * (1 + std::fabs(ref[i]));
  EXPECT_LE(differ, mine.size() / 100) << s.name() << " act_order " << act_order;
  const double e_mine = output_error(w, mine, rows, cols, st), e_ref = output_error(w, ref, rows, cols, st);
  EXPECT_NEAR(e_mine, e_ref, 0.02 * e_ref) << s.name();
}

TEST(Gptq, MatchesThePerColumnReference) {
  for (const Scheme& s : int_schemes(16, 32)) expect_matches_reference(s, false, 16);
  // Batches holding every column; not dividing the group (a group starting inside a batch must
  // see that batch's updates); shorter than a group.
  for (size_t block : {128, 5, 15, 17}) expect_matches_reference(sch(QType::Int4Sym, 16), false, block);
  expect_matches_reference(sch(QType::Int4Asym, 16), false, 5);
  expect_matches_reference(sch(QType::Int4Sym, 64), false, 16);
}

TEST(Gptq, ActOrderMatchesTheReferenceWithStaticGroups) {
  for (const Scheme& s : {sch(QType::Int4Sym, 16), sch(QType::Int4Asym, 32), sch(QType::Q4_0), sch(QType::Int8)})
    expect_matches_reference(s, true, 16);
}

TEST(Gptq, LowersTheOutputErrorBelowRoundToNearest) {
  const size_t rows = 16, cols = 128;
  const InputStats st = correlated_stats(cols, 512, 8);
  const std::vector<float> w = normal(rows * cols, 9, 0.1f);
  ThreadPool pool(1);
  std::vector<std::string> warnings;
  for (const Scheme& s : {sch(QType::Int4Sym, 32), sch(QType::Int4Asym, 32), sch(QType::Q4_0), sch(QType::Int8)}) {
    std::vector<uint8_t> in_order;
    for (bool act : {false, true}) {
      CalibParams params;
      params.gptq_act_order = act;
      const auto bytes = encode_calibrated(CalibMethod::Gptq, "t", w.data(), rows, cols, s, st, params, pool, warnings);
      if (act) {
        EXPECT_NE(bytes, in_order) << "act order changed nothing";
      }
      in_order = bytes;
      const double e_gptq = output_error(w, dequant(s, bytes, rows, cols), rows, cols, st);
      const double e_rtn = output_error(w, dequant(s, rtn(s, w, rows, cols), rows, cols), rows, cols, st);
      EXPECT_LT(e_gptq, 0.8 * e_rtn) << s.name() << " act_order " << act;
    }
  }
  EXPECT_TRUE(warnings.empty());
}

TEST(Gptq, DeadChannelsAreZeroed) {
  const size_t rows = 4, cols = 64;
  std::vector<float> x = normal(100 * cols, 12);
  for (size_t t = 0; t < 100; ++t) x[t * cols + 5] = x[t * cols + 40] = 0;  // never driven
  InputStats st;
  st.reset(cols, true, 0);
  st.add(x.data(), 100, nullptr);
  const std::vector<float> w = normal(rows * cols, 13, 0.1f);
  ThreadPool pool(1);
  std::vector<std::string> warnings;
  for (const Scheme& s : {sch(QType::Int4Sym, 32), sch(QType::Q8_0)}) {
    const auto deq = dequant(s, encode_calibrated(CalibMethod::Gptq, "t", w.data(), rows, cols, s, st, {}, pool, warnings),
                             rows, cols);
    ASSERT_TRUE(all_finite(deq));
    for (size_t r = 0; r < rows; ++r) {
      EXPECT_EQ(deq[r * cols + 5], 0.0f);
      EXPECT_EQ(deq[r * cols + 40], 0.0f);
    }
  }
  EXPECT_TRUE(warnings.empty());
}

TEST(Gptq, IllConditionedHessiansGiveFiniteBytes) {
  const size_t rows = 8, cols = 48;
  const std::vector<float> w = normal(rows * cols, 21, 0.1f);
  ThreadPool pool(1);
  const Scheme s = sch(QType::Int4Sym, 16);
  auto encode = [&](const InputStats& st, std::vector<std::string>& warnings) {
    return encode_calibrated(CalibMethod::Gptq, "blk.0.q", w.data(), rows, cols, s, st, {}, pool, warnings);
  };
  {  // rank 2: every token is a mix of two directions
    const std::vector<float> z = normal(64 * 2, 22), dirs = normal(2 * cols, 23);
    std::vector<float> x(64 * cols);
    for (size_t t = 0; t < 64; ++t)
      for (size_t j = 0; j < cols; ++j) x[t * cols + j] = z[2 * t] * dirs[j] + z[2 * t + 1] * dirs[cols + j];
    InputStats st;
    st.reset(cols, true, 0);
    st.add(x.data(), 64, nullptr);
    std::vector<std::string> warnings;
    EXPECT_TRUE(all_finite(dequant(s, encode(st, warnings), rows, cols)));
  }
  {  // condition number 1e12: eigenvalues 1 ... 1e-12 on a random basis
    MatrixXd q = Eigen::HouseholderQR<MatrixXd>(MatrixXd::Random(cols, cols)).householderQ();
    Eigen::VectorXd ev(cols);
    for (size_t j = 0; j < cols; ++j) ev[j] = std::pow(10.0, -12.0 * j / (cols - 1));
    const MatrixXd H = q * ev.asDiagonal() * q.transpose();
    InputStats st;
    st.reset(cols, true, 0);
    st.tokens = 10;
    for (size_t i = 0; i < cols; ++i)
      for (size_t j = 0; j < cols; ++j) { st.gram[i * cols + j] = 10 * H(i, j); st.sum_sq[i] = 10 * H(i, i); }
    std::vector<std::string> warnings;
    EXPECT_TRUE(all_finite(dequant(s, encode(st, warnings), rows, cols)));
  }
  // Not a Hessian at all (indefinite beyond any dampening; or NaN): mse instead, with a warning.
  for (double bad : {100.0, double(NAN)}) {
    InputStats st;
    st.reset(cols, true, 0);
    st.tokens = 1;
    for (size_t i = 0; i < cols; ++i) {
      st.sum_sq[i] = 1;
      for (size_t j = 0; j < cols; ++j) st.gram[i * cols + j] = i == j ? 1 : bad;
    }
    std::vector<std::string> warnings, none;
    const auto bytes = encode(st, warnings);
    EXPECT_TRUE(all_finite(dequant(s, bytes, rows, cols)));
    ASSERT_EQ(warnings.size(), 1u);
    EXPECT_NE(warnings[0].find("blk.0.q"), std::string::npos);
    EXPECT_NE(warnings[0].find("mse"), std::string::npos);
    EXPECT_EQ(bytes, encode_calibrated(CalibMethod::Mse, "t", w.data(), rows, cols, s, st, {}, pool, none));
  }
}

// ---------------------------------------------------------------- awq

// Σ ||X Wᵀ - X (Q(W diag s) diag(1/s))ᵀ||² over the sample rows, in double from the dequantized bytes.
double awq_sample_error(const std::vector<float>& w, size_t rows, size_t cols, const Scheme& s,
                        const std::vector<float>& scales, const InputStats& st) {
  std::vector<float> ws(w.size());
  for (size_t i = 0; i < w.size(); ++i) ws[i] = w[i] * scales[i % cols];
  const std::vector<float> deq = dequant(s, rtn(s, ws, rows, cols), rows, cols);
  double e = 0;
  for (size_t t = 0; t < st.sample_rows; ++t)
    for (size_t r = 0; r < rows; ++r) {
      double d = 0;
      for (size_t j = 0; j < cols; ++j)
        d += double(st.sample[t * cols + j]) * (w[r * cols + j] - double(deq[r * cols + j]) / scales[j]);
      e += d * d;
    }
  return e;
}

TEST(Awq, AnOutlierChannelGetsScaledAndTheSampleErrorDrops) {
  const size_t cols = 64, rows = 24, tokens = 128;
  std::vector<float> x = normal(tokens * cols, 31);
  for (size_t t = 0; t < tokens; ++t) { x[t * cols + 7] *= 30; x[t * cols + 50] *= 10; }
  InputStats st;
  st.reset(cols, false, 64);
  st.add(x.data(), tokens, nullptr);
  const std::vector<float> w1 = normal(rows * cols, 32, 0.1f), w2 = normal(rows / 2 * cols, 33, 0.1f);
  const Scheme s = sch(QType::Int4Sym, 32);
  ThreadPool pool(1);
  const std::vector<float> scales =
      awq_search_scales({{w1.data(), rows, s}, {w2.data(), rows / 2, sch(QType::Q4_0)}}, cols, st, {}, pool);
  ASSERT_EQ(scales.size(), cols);
  for (float v : scales) ASSERT_TRUE(std::isfinite(v) && v > 0);
  EXPECT_GT(scales[7], 1.5f * scales[0]);  // the loud channel scaled up relative to a quiet one
  const std::vector<float> ones(cols, 1.0f);
  const double e_awq = awq_sample_error(w1, rows, cols, s, scales, st) +
                       awq_sample_error(w2, rows / 2, cols, sch(QType::Q4_0), scales, st);
  const double e_rtn = awq_sample_error(w1, rows, cols, s, ones, st) +
                       awq_sample_error(w2, rows / 2, cols, sch(QType::Q4_0), ones, st);
  EXPECT_LT(e_awq, 0.9 * e_rtn);
}

TEST(Awq, UniformInputsKeepFiniteScalesNeverWorseThanRtn) {
  const size_t cols = 32, rows = 8;
  InputStats st;
  st.reset(cols, false, 16);
  const std::vector<float> x = normal(16 * cols, 41);
  st.add(x.data(), 16, nullptr);
  const std::vector<float> w = normal(rows * cols, 42, 0.1f);
  ThreadPool pool(1);
  const Scheme s = sch(QType::Int4Asym, 16);
  const auto scales = awq_search_scales({{w.data(), rows, s}}, cols, st, {}, pool);
  for (float v : scales) ASSERT_TRUE(std::isfinite(v) && v > 0);
  EXPECT_LE(awq_sample_error(w, rows, cols, s, scales, st),
            awq_sample_error(w, rows, cols, s, std::vector<float>(cols, 1.0f), st) * (1 + 1e-6));
  InputStats empty;  // nothing gathered: all ones
  empty.reset(cols, false, 16);
  EXPECT_EQ(awq_search_scales({{w.data(), rows, s}}, cols, empty, {}, pool), std::vector<float>(cols, 1.0f));
}

// ---------------------------------------------------------------- the whole

TEST(Calibration, FloatTypesAreRoundToNearest) {
  const std::vector<float> w = normal(3 * 10, 51);
  InputStats st;
  st.reset(10, true, 0);
  ThreadPool pool(1);
  std::vector<std::string> warnings;
  for (QType t : {QType::F32, QType::F16, QType::BF16})
    for (CalibMethod m : {CalibMethod::Mse, CalibMethod::Awq, CalibMethod::Gptq})
      EXPECT_EQ(encode_calibrated(m, "t", w.data(), 3, 10, sch(t), st, {}, pool, warnings), rtn(sch(t), w, 3, 10));
  EXPECT_TRUE(warnings.empty());
}

TEST(Calibration, RefusesStatisticsOfAnotherWidth) {
  const std::vector<float> w = normal(2 * 16, 52);
  InputStats st;
  st.reset(8, false, 0);
  st.tokens = 4;
  ThreadPool pool(1);
  std::vector<std::string> warnings;
  try {
    encode_calibrated(CalibMethod::Mse, "blk.1.up", w.data(), 2, 16, sch(QType::Q8_0), st, {}, pool, warnings);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("blk.1.up"), std::string::npos) << e.message();
  }
}

TEST(Calibration, BitIdenticalWithOneOrThreeThreads) {
  const size_t cols = 96, rows = 70, tokens = 300;  // more rows than one GPTQ / AWQ task
  const std::vector<float> x = normal(tokens * cols, 61), w = normal(rows * cols, 62, 0.1f);
  ThreadPool one(1), three(3);
  auto stats = [&](ThreadPool& p) {
    InputStats st;
    st.reset(cols, true, 40);
    st.add(x.data(), 100, &p);
    st.add(x.data() + 100 * cols, tokens - 100, &p);
    return st;
  };
  const InputStats s1 = stats(one), s3 = stats(three);
  EXPECT_EQ(s1.gram, s3.gram);
  EXPECT_EQ(s1.sum_sq, s3.sum_sq);
  EXPECT_EQ(s1.sum_abs, s3.sum_abs);
  for (const Scheme& s : {sch(QType::Int4Asym, 32), sch(QType::Q4_0)})
    for (CalibMethod m : {CalibMethod::Mse, CalibMethod::Awq, CalibMethod::Gptq})
      for (bool act : {false, true}) {
        CalibParams params;
        params.gptq_act_order = act;
        params.gptq_block = 40;
        std::vector<std::string> w1, w3;
        EXPECT_EQ(encode_calibrated(m, "t", w.data(), rows, cols, s, s1, params, one, w1),
                  encode_calibrated(m, "t", w.data(), rows, cols, s, s3, params, three, w3))
            << s.name() << " " << calib_method_info(m).name;
      }
  const std::vector<AwqLinear> lin = {{w.data(), rows, sch(QType::Int4Sym, 32)}};
  EXPECT_EQ(awq_search_scales(lin, cols, s1, {}, one), awq_search_scales(lin, cols, s3, {}, three));
}


// ---------------------------------------------------------------- reference stream

// A quantized stream x (correlated, as correlated_stats) and the reference stream r = x A with a
// known mixing A = I + noise: the rows the unquantized model would have fed the same layer.
struct PairedRows {
  size_t rows, cols;
  std::vector<float> x, r;
};
PairedRows paired_rows(size_t rows, size_t cols, uint32_t seed, float mix = 0.05f) {
  PairedRows p{rows, cols, std::vector<float>(rows * cols, 0), std::vector<float>(rows * cols, 0)};
  const std::vector<float> z = normal(rows * cols, seed), a = normal(cols * cols, seed + 1, 0.3f),
                           m = normal(cols * cols, seed + 2, mix);
  for (size_t t = 0; t < rows; ++t)
    for (size_t k = 0; k < cols; ++k)
      for (size_t j = 0; j < cols; ++j) p.x[t * cols + j] += z[t * cols + k] * (a[k * cols + j] + (k == j ? 1 : 0));
  for (size_t t = 0; t < rows; ++t)
    for (size_t k = 0; k < cols; ++k)
      for (size_t j = 0; j < cols; ++j)
        p.r[t * cols + j] += float(double(p.x[t * cols + k]) * (m[k * cols + j] + (k == j ? 1 : 0)));
  return p;
}

InputStats paired_stats(const PairedRows& p, bool with_cross) {
  InputStats st;
  st.reset(p.cols, true, 0, with_cross);
  st.add_pair(p.x.data(), p.r.data(), p.rows, nullptr);
  return st;
}

// Σ_t ||W r_t - Q x_t||²: how far the quantized layer on its own inputs is from the reference output.
double reference_output_error(const std::vector<float>& w, const std::vector<float>& q, size_t rows,
                              const PairedRows& p) {
  double e = 0;
  for (size_t t = 0; t < p.rows; ++t)
    for (size_t o = 0; o < rows; ++o) {
      double d = 0;
      for (size_t j = 0; j < p.cols; ++j)
        d += double(w[o * p.cols + j]) * p.r[t * p.cols + j] - double(q[o * p.cols + j]) * p.x[t * p.cols + j];
      e += d * d;
    }
  return e;
}

// The reference target's solves and GPTQ's triangular inverse run in chunks of 64 columns on the
// pool: with widths over two chunks at the top of the inverse's recursion, the bytes are the same
// with one thread or three, with cross and drift statistics.
TEST(Calibration, ReferenceTargetAndGptqBitIdenticalWithOneOrThreeThreads) {
  const size_t cols = 150, rows = 70;
  const PairedRows p = paired_rows(200, cols, 91);
  const std::vector<float> w = normal(rows * cols, 92, 0.1f), delta = normal(200 * rows, 93, 0.01f);
  ThreadPool one(1), three(3);
  auto stats = [&](ThreadPool& pool) {
    InputStats st;
    st.reset(cols, true, 0, true);
    st.add_pair(p.x.data(), p.r.data(), p.rows, &pool);
    st.add_residual(delta.data(), p.x.data(), p.rows, rows, &pool);
    return st;
  };
  const InputStats s1 = stats(one), s3 = stats(three);
  std::vector<float> t1, t3;
  EXPECT_TRUE(reference_target(w.data(), rows, cols, s1, 0.01, t1, one));
  EXPECT_TRUE(reference_target(w.data(), rows, cols, s3, 0.01, t3, three));
  EXPECT_EQ(t1, t3);
  EXPECT_NE(t1, w);
  for (const Scheme& s : {sch(QType::Int4Asym, 32), sch(QType::Q4_0)}) {
    std::vector<std::string> w1, w3;
    EXPECT_EQ(encode_calibrated(CalibMethod::Gptq, "t", w.data(), rows, cols, s, s1, {}, one, w1),
              encode_calibrated(CalibMethod::Gptq, "t", w.data(), rows, cols, s, s3, {}, three, w3))
        << s.name();
    EXPECT_TRUE(w1.empty()) << s.name();
  }
}

TEST(InputStats, AddPairCrossMatchesADirectLoopWhateverThePoolOrSplit) {
  const size_t c = 70, rows = 300;  // more than one row chunk and one tile
  const PairedRows p = paired_rows(rows, c, 71);
  auto gather = [&](ThreadPool* pool, std::vector<size_t> splits) {
    InputStats st;
    st.reset(c, true, 5, true);
    size_t r0 = 0;
    for (size_t r1 : splits) { st.add_pair(p.x.data() + r0 * c, p.r.data() + r0 * c, r1 - r0, pool); r0 = r1; }
    return st;
  };
  ThreadPool one(1), two(2), three(3);
  const InputStats st = gather(&one, {rows});
  ASSERT_EQ(st.cross.size(), c * c);
  EXPECT_EQ(st.tokens, rows);
  for (size_t i = 0; i < c; ++i)
    for (size_t j = 0; j < c; ++j) {
      double s = 0;
      for (size_t t = 0; t < rows; ++t) s += double(p.r[t * c + i]) * p.x[t * c + j];
      ASSERT_NEAR(st.cross[i * c + j], s, 1e-9 * rows) << i << "," << j;
    }
  // add_pair's add() half: the same sums as add() on x alone.
  InputStats plain;
  plain.reset(c, true, 5);
  plain.add(p.x.data(), rows, &one);
  EXPECT_EQ(st.gram, plain.gram);
  EXPECT_EQ(st.sum_sq, plain.sum_sq);
  EXPECT_EQ(st.sum_abs, plain.sum_abs);
  EXPECT_EQ(st.sample, plain.sample);
  EXPECT_TRUE(plain.cross.empty());
  for (ThreadPool* pool : {&one, &two, &three})
    for (const std::vector<size_t>& splits :
         {std::vector<size_t>{rows}, std::vector<size_t>{1, 64, 65, 200, rows}, std::vector<size_t>{150, rows}}) {
      // The same bits whatever the pool (the header's promise); a different split into calls
      // regroups the row chunks, so (as for gram) only the direct loop's tolerance holds.
      const InputStats other = gather(pool, splits), base = gather(&one, splits);
      EXPECT_EQ(other.cross, base.cross) << pool->size() << " threads, " << splits.size() << " calls";
      EXPECT_EQ(other.gram, base.gram);
      for (size_t i = 0; i < c * c; ++i) ASSERT_NEAR(other.cross[i], st.cross[i], 1e-9 * rows) << i;
    }
  // Without with_cross add_pair is add().
  InputStats no_cross;
  no_cross.reset(c, true, 5);
  no_cross.add_pair(p.x.data(), p.r.data(), rows, &one);
  EXPECT_TRUE(no_cross.cross.empty());
  EXPECT_EQ(no_cross.gram, plain.gram);
}

TEST(ReferenceTarget, IdenticalStreamsGiveW) {
  const size_t rows = 10, cols = 48;
  PairedRows p = paired_rows(200, cols, 72);
  p.r = p.x;
  const std::vector<float> w = normal(rows * cols, 73, 0.1f);
  ThreadPool pool(2);
  std::vector<float> t;
  ASSERT_TRUE(reference_target(w.data(), rows, cols, paired_stats(p, true), 0.01, t, pool));
  ASSERT_EQ(t.size(), w.size());
  float wmax = 0, dmax = 0;
  for (size_t i = 0; i < w.size(); ++i) { wmax = std::max(wmax, std::fabs(w[i])); dmax = std::max(dmax, std::fabs(t[i] - w[i])); }
  EXPECT_LE(dmax, 1e-5f * wmax);
}

TEST(ReferenceTarget, MatchesADenseComputationAndLowersTheReferenceError) {
  const size_t rows = 70, cols = 40, tokens = 300;  // more rows than one task
  const PairedRows p = paired_rows(tokens, cols, 74);
  const InputStats st = paired_stats(p, true);
  const std::vector<float> w = normal(rows * cols, 75, 0.1f);
  const double damp = 0.01;
  // T = W (C/n + λI)(H/n + λI)⁻¹, sums written out here, explicit inverse.
  MatrixXd H = MatrixXd::Zero(cols, cols), C = MatrixXd::Zero(cols, cols), W(rows, cols);
  for (size_t t = 0; t < tokens; ++t)
    for (size_t i = 0; i < cols; ++i)
      for (size_t j = 0; j < cols; ++j) {
        H(i, j) += double(p.x[t * cols + i]) * p.x[t * cols + j] / tokens;
        C(i, j) += double(p.r[t * cols + i]) * p.x[t * cols + j] / tokens;
      }
  for (size_t r = 0; r < rows; ++r)
    for (size_t j = 0; j < cols; ++j) W(r, j) = w[r * cols + j];
  const double lambda = damp * H.diagonal().mean();
  const MatrixXd I = MatrixXd::Identity(cols, cols);
  const MatrixXd T = W * (C + lambda * I) * (H + lambda * I).inverse();
  for (size_t threads : {1, 3}) {
    ThreadPool pool(threads);
    std::vector<float> t;
    ASSERT_TRUE(reference_target(w.data(), rows, cols, st, damp, t, pool));
    double dmax = 0, tmax = 0;
    for (size_t r = 0; r < rows; ++r)
      for (size_t j = 0; j < cols; ++j) {
        dmax = std::max(dmax, std::fabs(t[r * cols + j] - T(r, j)));
        tmax = std::max(tmax, std::fabs(T(r, j)));
      }
    EXPECT_LE(dmax, 1e-5 * tmax) << threads << " threads";
    const double e_w = reference_output_error(w, w, rows, p), e_t = reference_output_error(w, t, rows, p);
    EXPECT_LT(e_t, 0.5 * e_w);
  }
  // Without the cross sums: W, and false.
  InputStats plain;
  plain.reset(cols, true, 0);
  plain.add(p.x.data(), tokens, nullptr);
  ThreadPool pool(1);
  std::vector<float> t(3, 7.0f);
  EXPECT_FALSE(reference_target(w.data(), rows, cols, plain, damp, t, pool));
  EXPECT_EQ(t, w);
}

// ---------------------------------------------------------------- refine_group_params

double quad_error(const std::vector<float>& t, const std::vector<double>& q, const MatrixXd& H) {
  Eigen::VectorXd d(t.size());
  for (size_t i = 0; i < t.size(); ++i) d[i] = double(t[i]) - q[i];
  return d.dot(H * d);
}

std::vector<double> decode_row(const QuantGrid& grid, const std::vector<int>& codes, const std::vector<GroupParams>& ps) {
  std::vector<double> q(codes.size());
  for (size_t j = 0; j < codes.size(); ++j) q[j] = grid.decode(codes[j], ps[j / grid.group_len()]);
  return q;
}

TEST(Refine, MatchesDenseLeastSquaresAndNeverRaisesTheError) {
  const size_t cols = 64;
  const InputStats st = correlated_stats(cols, 256, 81);
  MatrixXd Hfull(cols, cols);
  for (size_t i = 0; i < cols; ++i)
    for (size_t j = 0; j < cols; ++j) Hfull(i, j) = st.gram[i * cols + j] / double(st.tokens);
  std::vector<double> hrow(Hfull.data(), Hfull.data() + cols * cols);  // symmetric: storage order moot
  std::vector<double> diag(cols);
  for (size_t j = 0; j < cols; ++j) diag[j] = Hfull(j, j);
  const MatrixXd Hdiag = Hfull.diagonal().asDiagonal();
  int improved = 0, checked = 0;
  for (const Scheme& s : {sch(QType::Int4Sym, 16), sch(QType::Int4Asym, 16), sch(QType::Q4_0), sch(QType::Int8)})
    for (bool full : {true, false})
      for (uint32_t seed = 0; seed < 6; ++seed) {
        const QuantGrid grid(s, cols);
        const size_t G = grid.groups();
        const bool asym = s.type == QType::Int4Asym;
        std::vector<float> t = normal(cols, 90 + seed, 0.1f);
        // Codes and parameters from a clipped fit (so the refit has something to do).
        std::vector<GroupParams> ps(G);
        std::vector<int> codes(cols);
        for (size_t g = 0; g < G; ++g) {
          ps[g] = grid.fit(&t[grid.group_begin(g)], grid.group_end(g) - grid.group_begin(g), 0.8f);
          for (size_t j = grid.group_begin(g); j < grid.group_end(g); ++j) codes[j] = grid.code(t[j], ps[g]);
        }
        const MatrixXd& H = full ? Hfull : Hdiag;
        // B: column k is group k's scale basis (its code's integer value), asym also a 1s column
        // per group for its min; solve (Bᵀ H B) θ = Bᵀ H t.
        const size_t K = asym ? 2 * G : G;
        MatrixXd B = MatrixXd::Zero(cols, K);
        for (size_t j = 0; j < cols; ++j) {
          const GroupParams& p = ps[j / grid.group_len()];
          const double v = std::nearbyint((double(grid.decode(codes[j], p)) - p.min) / p.scale);
          const size_t g = j / grid.group_len();
          B(j, asym ? 2 * g : g) = v;
          if (asym) B(j, 2 * g + 1) = 1;
        }
        Eigen::VectorXd tv(cols);
        for (size_t j = 0; j < cols; ++j) tv[j] = t[j];
        const Eigen::VectorXd theta = (B.transpose() * H * B).colPivHouseholderQr().solve(B.transpose() * H * tv);
        auto store = [&](double v) { return s.type == QType::Int8 ? float(v) : f16_to_f32(f32_to_f16(float(v))); };
        std::vector<GroupParams> ref = ps;
        for (size_t g = 0; g < G; ++g) {
          ref[g].scale = store(theta[asym ? 2 * g : g]);
          if (asym) ref[g].min = store(theta[2 * g + 1]);
        }
        const double e_before = quad_error(t, decode_row(grid, codes, ps), H);
        const double e_ref = quad_error(t, decode_row(grid, codes, ref), H);

        std::vector<GroupParams> mine = ps;
        const bool changed = refine_group_params(grid, t.data(), full ? hrow.data() : nullptr, diag.data(),
                                                 mine.data(), codes.data());
        const double e_after = quad_error(t, decode_row(grid, codes, mine), H);
        const std::string what = s.name() + (full ? " full" : " diag") + " seed " + std::to_string(seed);
        EXPECT_LE(e_after, e_before * (1 + 1e-12)) << what;
        for (size_t g = 0; g < G; ++g) EXPECT_EQ(mine[g].inv, ps[g].inv) << what;
        if (changed) {
          ++improved;
          EXPECT_LT(e_after, e_before) << what;
          for (size_t g = 0; g < G; ++g) {  // equal, or one storage step apart (the solves round differently)
            EXPECT_NEAR(mine[g].scale, ref[g].scale, 1e-3 * std::fabs(ref[g].scale) + 1e-7) << what << " group " << g;
            EXPECT_NEAR(mine[g].min, ref[g].min, 1e-3 * std::fabs(ref[g].min) + 1e-7) << what << " group " << g;
          }
          EXPECT_NEAR(e_after, e_ref, 1e-3 * e_ref) << what;
        } else {
          for (size_t g = 0; g < G; ++g) {
            EXPECT_EQ(mine[g].scale, ps[g].scale) << what;
            EXPECT_EQ(mine[g].min, ps[g].min) << what;
          }
          // Not improving means the least-squares answer, rounded, is no better.
          EXPECT_GE(e_ref, e_before * (1 - 1e-9)) << what;
        }
        // A second pass finds its own answer again: nothing left to improve, parameters untouched.
        std::vector<GroupParams> again = mine;
        EXPECT_FALSE(refine_group_params(grid, t.data(), full ? hrow.data() : nullptr, diag.data(), again.data(),
                                         codes.data()))
            << what;
        for (size_t g = 0; g < G; ++g) {
          EXPECT_EQ(again[g].scale, mine[g].scale) << what;
          EXPECT_EQ(again[g].min, mine[g].min) << what;
        }
        ++checked;
      }
  EXPECT_EQ(checked, 4 * 2 * 6);
  EXPECT_GT(improved, checked / 2);  // clip 0.8 leaves room: most rows must actually move
}

// Sizes across the kernel's tiles (256 columns, 128 inner indices, 4 rows, 8 columns): each sum
// must be the plain loop's, bit for bit, whatever the rows taken together or the inner range.
TEST(HessianRows, EverySumIsThePlainLoopInOrder) {
  const size_t n = 300, R = 7;
  const std::vector<float> a = normal(n * n, 301), x = normal(R * n, 302);
  std::vector<double> H(n * n), X(R * n);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j <= i; ++j) H[i * n + j] = H[j * n + i] = a[i * n + j];
  for (size_t k = 0; k < R * n; ++k) X[k] = k % 5 == 0 ? 0.0 : x[k];  // zeros for skip_zero
  H[7 * n + 9] = H[9 * n + 7] = INFINITY;  // skipped terms must not bring in inf * 0
  X[0 * n + 7] = 0;
  X[0 * n + 9] = 0;
  for (bool skip : {false, true})
    for (auto [jb, je] : {std::pair<size_t, size_t>{0, n}, {5, 133}, {129, 300}}) {
      std::vector<double> S(R * n, 0.0), S1(R * n, 0.0);
      add_rows_times_symmetric(H.data(), n, X.data(), R, jb, je, skip, S.data());
      for (size_t r = 0; r < R; ++r)  // one row at a time gives the same bits
        add_rows_times_symmetric(H.data(), n, X.data() + r * n, 1, jb, je, skip, S1.data() + r * n);
      EXPECT_EQ(std::memcmp(S.data(), S1.data(), S.size() * sizeof(double)), 0);  // bits, NaNs included
      for (size_t r = 0; r < R; ++r)
        for (size_t i = 0; i < n; ++i) {
          double s = 0;
          for (size_t j = jb; j < je; ++j) {
            if (skip && X[r * n + j] == 0) continue;
            s += H[i * n + j] * X[r * n + j];
          }
          if (std::isnan(s)) {
            EXPECT_TRUE(std::isnan(S[r * n + i]));
          } else {
            ASSERT_EQ(S[r * n + i], s) << "row " << r << " col " << i << " j [" << jb << ", " << je << ") skip " << skip;
          }
        }
    }
}

TEST(Refine, RowsTogetherGiveEachRowsOwnResult) {
  const size_t cols = 72, rows = 9;  // ragged groups of 16 and 32; more rows than a register block
  const InputStats st = correlated_stats(cols, 256, 84);
  std::vector<double> H(cols * cols);
  for (size_t i = 0; i < cols * cols; ++i) H[i] = st.gram[i] / double(st.tokens);
  for (const Scheme& s : {sch(QType::Int4Sym, 16), sch(QType::Int4Asym, 32), sch(QType::Q4_0), sch(QType::Int8)}) {
    const QuantGrid grid(s, cols);
    const size_t G = grid.groups();
    const std::vector<float> t = normal(rows * cols, 85, 0.1f);
    std::vector<GroupParams> ps(rows * G);
    std::vector<int> codes(rows * cols);
    for (size_t r = 0; r < rows; ++r)
      for (size_t g = 0; g < G; ++g) {
        const size_t b = grid.group_begin(g), e = grid.group_end(g);
        ps[r * G + g] = grid.fit(&t[r * cols + b], e - b, r % 3 == 0 ? 1.0f : 0.8f);
        for (size_t j = b; j < e; ++j) codes[r * cols + j] = grid.code(t[r * cols + j], ps[r * G + g]);
      }
    std::vector<GroupParams> alone = ps, together = ps;
    size_t changed = 0;
    for (size_t r = 0; r < rows; ++r)
      changed += refine_group_params(grid, &t[r * cols], H.data(), nullptr, &alone[r * G], &codes[r * cols]);
    EXPECT_EQ(refine_group_params_rows(grid, t.data(), rows, H.data(), together.data(), codes.data()), changed)
        << s.name();
    EXPECT_GT(changed, 0u) << s.name();
    for (size_t i = 0; i < rows * G; ++i) {
      EXPECT_EQ(together[i].scale, alone[i].scale) << s.name() << " " << i;
      EXPECT_EQ(together[i].min, alone[i].min) << s.name() << " " << i;
    }
  }
}

TEST(Refine, ExactlyRepresentableTargetsAreLeftAlone) {
  const size_t cols = 32;
  const InputStats st = correlated_stats(cols, 128, 82);
  std::vector<double> diag(cols);
  for (size_t j = 0; j < cols; ++j) diag[j] = st.gram[j * cols + j] / double(st.tokens);
  for (const Scheme& s : {sch(QType::Int4Sym, 16), sch(QType::Int4Asym, 16), sch(QType::Q4_0), sch(QType::Int8)}) {
    const QuantGrid grid(s, cols);
    std::vector<float> w = normal(cols, 83, 0.1f);
    std::vector<GroupParams> ps(grid.groups());
    std::vector<int> codes(cols);
    std::vector<float> t(cols);
    for (size_t g = 0; g < grid.groups(); ++g) {
      ps[g] = grid.fit(&w[grid.group_begin(g)], grid.group_end(g) - grid.group_begin(g), 1.0f);
      for (size_t j = grid.group_begin(g); j < grid.group_end(g); ++j) {
        codes[j] = grid.code(w[j], ps[g]);
        t[j] = grid.decode(codes[j], ps[g]);  // the target is its own quantization: error 0
      }
    }
    std::vector<GroupParams> mine = ps;
    EXPECT_FALSE(refine_group_params(grid, t.data(), nullptr, diag.data(), mine.data(), codes.data())) << s.name();
    for (size_t g = 0; g < grid.groups(); ++g) {
      EXPECT_EQ(mine[g].scale, ps[g].scale);
      EXPECT_EQ(mine[g].min, ps[g].min);
    }
  }
}

// ---------------------------------------------------------------- clip, refine and the reference

TEST(Gptq, ClipAndRefineLowerTheOutputError) {
  const size_t rows = 16, cols = 128;
  const InputStats st = correlated_stats(cols, 512, 84);
  const std::vector<float> w = normal(rows * cols, 85, 0.1f);
  ThreadPool pool(1);
  std::vector<std::string> warnings;
  double sum_on = 0, sum_off = 0;
  for (const Scheme& s : {sch(QType::Int4Sym, 32), sch(QType::Int4Asym, 32), sch(QType::Q4_0), sch(QType::Int8)}) {
    CalibParams on, off;
    off.gptq_clip = off.gptq_refine = false;
    const double e_on = output_error(
        w, dequant(s, encode_calibrated(CalibMethod::Gptq, "t", w.data(), rows, cols, s, st, on, pool, warnings), rows, cols),
        rows, cols, st);
    const double e_off = output_error(
        w, dequant(s, encode_calibrated(CalibMethod::Gptq, "t", w.data(), rows, cols, s, st, off, pool, warnings), rows, cols),
        rows, cols, st);
    EXPECT_LE(e_on, e_off * (1 + 1e-9)) << s.name();
    if (s.type != QType::Int8) {
      EXPECT_LT(e_on, e_off) << s.name();
    }
    sum_on += e_on;
    sum_off += e_off;
  }
  EXPECT_LT(sum_on, sum_off);
  EXPECT_TRUE(warnings.empty());
}

TEST(Calibration, CrossStatisticsFitTheReferenceOutput) {
  const size_t rows = 12, cols = 64, tokens = 400;
  const PairedRows p = paired_rows(tokens, cols, 86);
  const InputStats with = paired_stats(p, true), without = paired_stats(p, false);
  EXPECT_EQ(with.gram, without.gram);
  const std::vector<float> w = normal(rows * cols, 87, 0.1f);
  ThreadPool pool(1);
  std::vector<std::string> warnings;
  for (CalibMethod m : {CalibMethod::Mse, CalibMethod::Gptq})
    for (const Scheme& s : {sch(QType::Int4Sym, 32), sch(QType::Q4_0), sch(QType::Int8)}) {
      const auto q_with = dequant(s, encode_calibrated(m, "t", w.data(), rows, cols, s, with, {}, pool, warnings), rows, cols);
      const auto q_without =
          dequant(s, encode_calibrated(m, "t", w.data(), rows, cols, s, without, {}, pool, warnings), rows, cols);
      EXPECT_LT(reference_output_error(w, q_with, rows, p), reference_output_error(w, q_without, rows, p))
          << calib_method_info(m).name << " " << s.name();
    }
  EXPECT_TRUE(warnings.empty());
}

}  // namespace
}  // namespace sf
