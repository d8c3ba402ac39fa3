// The SIMD matrix products (executor/matmul_simd.cpp) against the scalar reference
// (kernels::matmul_reference) on every storage type, odd shapes, and every target this build
// compiled that the CPU runs; and their determinism: the same bits for any thread count, any row
// position (a sub-matrix's rows) and any token position (one token alone or inside a batch).
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "executor/kernels.h"
#include "executor/matmul_simd.h"

namespace sf {
namespace {

struct TypeCase {
  QType type;
  size_t group;
};

std::string label(const TypeCase& c) {
  return std::string(qtype_traits(c.type).name) + (c.group ? ":g" + std::to_string(c.group) : "");
}

std::vector<TypeCase> all_types() {
  std::vector<TypeCase> v = {{QType::F32, 0}, {QType::F16, 0}, {QType::BF16, 0}, {QType::Int8, 0},
                             {QType::Q8_0, 0}, {QType::Q4_0, 0}};
  // Whole blocks of 32, groups that split blocks, and a group longer than any row here.
  for (QType t : {QType::Int4Sym, QType::Int4Asym})
    for (size_t g : {32, 64, 128, 48, 2, 2048}) v.push_back({t, g});
  return v;
}

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// A rows x cols matrix stored as `type`, 64-byte aligned like an artifact's tensors.
struct Matrix {
  std::vector<uint8_t> bytes;
  TensorView view;
  std::vector<float> decoded;  // the stored values, decoded with the type's own kernel

  Matrix(const TypeCase& c, size_t rows, size_t cols, uint32_t seed) {
    const auto& tr = qtype_traits(c.type);
    const size_t rb = tr.row_bytes(cols, c.group);
    bytes.assign(rows * rb + 64, 0);
    uint8_t* base = bytes.data() + (64 - reinterpret_cast<uintptr_t>(bytes.data()) % 64) % 64;
    const auto w = random_floats(rows * cols, seed);
    decoded.resize(rows * cols);
    for (size_t r = 0; r < rows; ++r) {
      tr.quantize_row(&w[r * cols], cols, c.group, base + r * rb);
      tr.dequantize_row(base + r * rb, cols, c.group, &decoded[r * cols]);
    }
    view = TensorView{"w", c.type, c.group, {int64_t(rows), int64_t(cols)}, base, rows * rb, rb};
  }
  // Rows [first, rows) as their own tensor (the same bytes).
  TensorView tail_rows(size_t first) const {
    TensorView v = view;
    v.shape[0] -= int64_t(first);
    v.data += first * v.row_bytes;
    v.nbytes -= first * v.row_bytes;
    return v;
  }
};

bool quantizes_activations(const TypeCase& c, size_t cols) {
  switch (c.type) {
    case QType::Int8: case QType::Q8_0: case QType::Q4_0: return true;
    case QType::Int4Sym: case QType::Int4Asym: return c.group % 32 == 0 || c.group >= cols;
    default: return false;
  }
}

// How far y[t][r] may be from the f32 reference. Activations quantized to 8 bits per block of 32
// (scale d = max|x|/127) move each x_i by at most d/2, so the product by at most sum |w_i| d_i / 2;
// both sides also round in f32, each by at most cols * eps * sum |w_i x_i|.
float tolerance(const Matrix& m, const float* xt, size_t r, size_t cols, bool quantized) {
  double abs_wx = 0, quant = 0;
  for (size_t b = 0; b < cols; b += 32) {
    const size_t e = std::min(cols, b + 32);
    float amax = 0;
    for (size_t i = b; i < e; ++i) amax = std::max(amax, std::fabs(xt[i]));
    for (size_t i = b; i < e; ++i) {
      const double w = std::fabs(m.decoded[r * cols + i]);
      abs_wx += w * std::fabs(xt[i]);
      quant += w * amax / 127.0 / 2.0;
    }
  }
  return float((quantized ? quant * 1.001 : 0.0) + 2.0 * double(cols + 2) * FLT_EPSILON * abs_wx) + FLT_MIN;
}

// Runs f once per target the build compiled and the CPU supports, with the dispatch forced to it.
template <class F>
void on_every_target(F f) {
  const auto targets = kernels::simd::available_targets();
  ASSERT_FALSE(targets.empty());
  for (int64_t t : targets) {
    kernels::simd::use_target(t);
    ASSERT_EQ(kernels::simd::active_target(), t) << kernels::simd::target_name(t);
    SCOPED_TRACE(kernels::simd::target_name(t));
    f();
  }
  kernels::simd::use_target(0);
}

// The VNNI tiles (Highway's AVX3_DL target) are only compiled with HWY_WANT_AVX3_DL: on a CPU with
// what AVX3_DL needs, the target loop above must include them.
TEST(Kernels, VnniTargetIsTestedWhereTheCpuHasIt) {
#if defined(__x86_64__) || defined(__i386__)
  // Highway's AVX3_DL group also needs VAES and VPCLMULQDQ, which clang 14's builtin cannot name;
  // every CPU with the features below has them (Cascade Lake, VNNI without VBMI2, is left out).
  const bool dl = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi") &&
                  __builtin_cpu_supports("avx512vbmi2") && __builtin_cpu_supports("avx512bitalg") &&
                  __builtin_cpu_supports("avx512vpopcntdq");
  if (!dl) GTEST_SKIP() << "no AVX512_VNNI (AVX3_DL) on this CPU";
  std::vector<std::string> names;
  for (int64_t t : kernels::simd::available_targets()) names.push_back(kernels::simd::target_name(t));
  EXPECT_NE(std::find(names.begin(), names.end(), "AVX3_DL"), names.end());
#else
  GTEST_SKIP() << "x86 only";
#endif
}

TEST(Kernels, MatmulMatchesReferenceOnEveryTypeShapeAndTarget) {
  const size_t kCols[] = {1, 31, 33, 100, 172, 257, 1024};
  const size_t kRows[] = {1, 3, 17, 64};
  const size_t kTokens[] = {1, 2, 5, 64};
  size_t checked = 0;
  for (const TypeCase& c : all_types()) {
    for (size_t ci = 0; ci < std::size(kCols); ++ci) {
      for (size_t ri = 0; ri < std::size(kRows); ++ri) {
        const size_t cols = kCols[ci], rows = kRows[ri];
        // Every token count meets every column count across the row counts; the largest product
        // only on the largest shape's neighbours, to keep the test fast.
        const size_t T = kTokens[(ci + ri) % std::size(kTokens)];
        const bool with_bias = (ci + ri) % 2 == 1;
        SCOPED_TRACE(label(c) + " " + std::to_string(rows) + "x" + std::to_string(cols) + " T=" + std::to_string(T) +
                     (with_bias ? " bias" : ""));
        const Matrix m(c, rows, cols, uint32_t(7 + ci * 31 + ri));
        const auto x = random_floats(T * cols, uint32_t(1000 + ci + 17 * ri));
        const auto bias_values = random_floats(rows, 99);
        const TensorView bias{"b", QType::F32, 0, {int64_t(rows)}, reinterpret_cast<const uint8_t*>(bias_values.data()),
                              rows * 4, rows * 4};
        const TensorView* b = with_bias ? &bias : nullptr;
        std::vector<float> want(T * rows), got(T * rows);
        kernels::matmul_reference(m.view, b, x.data(), T, want.data(), nullptr);
        const bool quantized = quantizes_activations(c, cols);
        on_every_target([&] {
          std::fill(got.begin(), got.end(), NAN);
          kernels::matmul(m.view, b, x.data(), T, got.data(), nullptr);
          for (size_t t = 0; t < T; ++t)
            for (size_t r = 0; r < rows; ++r) {
              const float tol = tolerance(m, &x[t * cols], r, cols, quantized);
              ASSERT_NEAR(got[t * rows + r], want[t * rows + r], tol) << "token " << t << " row " << r;
              ++checked;
            }
        });
      }
    }
  }
  EXPECT_GT(checked, 0u);
}

// The quantization tolerance is not so loose that it hides a wrong product: a matrix with one row
// changed stays inside it for the unchanged rows only.
TEST(Kernels, ToleranceCatchesAWrongRow) {
  const TypeCase c{QType::Q4_0, 0};
  const size_t rows = 3, cols = 256;
  Matrix m(c, rows, cols, 5), other(c, rows, cols, 6);
  const auto x = random_floats(cols, 8);
  std::vector<float> want(rows), got(rows);
  kernels::matmul_reference(m.view, nullptr, x.data(), 1, want.data(), nullptr);
  kernels::matmul(other.view, nullptr, x.data(), 1, got.data(), nullptr);
  size_t outside = 0;
  for (size_t r = 0; r < rows; ++r) outside += std::fabs(got[r] - want[r]) > tolerance(m, x.data(), r, cols, true);
  EXPECT_EQ(outside, rows);
}

// A non-finite activation gives non-finite outputs on every path, as the f32 product does (and is
// never converted to an integer: the sanitized build would report that).
TEST(Kernels, NonFiniteActivationsGiveNonFiniteOutputs) {
  for (const TypeCase& c : all_types()) {
    SCOPED_TRACE(label(c));
    const size_t rows = 5, cols = 100;
    const Matrix m(c, rows, cols, 21);
    for (float bad : {NAN, INFINITY}) {
      auto x = random_floats(cols, 4);
      x[40] = bad;
      on_every_target([&] {
        std::vector<float> y(rows);
        kernels::matmul(m.view, nullptr, x.data(), 1, y.data(), nullptr);
        for (size_t r = 0; r < rows; ++r) EXPECT_FALSE(std::isfinite(y[r])) << "row " << r;
      });
    }
  }
}

// Activations so small that an 8-bit block's scale is subnormal and its inverse overflows: the
// block quantizes to zeros (its contribution, ~1e-37, is below f32's resolution of the result
// anyway) instead of converting inf or NaN to an integer (undefined behaviour UBSan reports).
TEST(Kernels, TinyActivationsGiveFiniteOutputsNearTheReference) {
  for (const TypeCase& c : all_types()) {
    SCOPED_TRACE(label(c));
    const size_t rows = 5, cols = 100;
    const Matrix m(c, rows, cols, 23);
    auto x = random_floats(cols, 6);
    for (size_t i = 0; i < cols; ++i) x[i] *= i < 64 ? 1e-38f : 1.0f;  // two blocks of tiny values, the rest ordinary
    std::vector<float> want(rows);
    kernels::matmul_reference(m.view, nullptr, x.data(), 1, want.data(), nullptr);
    on_every_target([&] {
      std::vector<float> y(rows);
      kernels::matmul(m.view, nullptr, x.data(), 1, y.data(), nullptr);
      for (size_t r = 0; r < rows; ++r) {
        ASSERT_TRUE(std::isfinite(y[r])) << "row " << r;
        EXPECT_NEAR(y[r], want[r], 0.05 * std::fabs(want[r]) + 1e-3) << "row " << r;
      }
    });
  }
}

TEST(Kernels, MatmulIsBitIdenticalForAnyThreadCountRowAndTokenPosition) {
  const size_t rows = 67, cols = 1024, T = 7;  // rows and tokens that leave partial tiles
  ThreadPool one(1), two(2), three(3);
  const auto x = random_floats(T * cols, 3);
  for (const TypeCase& c : all_types()) {
    SCOPED_TRACE(label(c));
    const Matrix m(c, rows, cols, 11);
    on_every_target([&] {
      std::vector<float> y1(T * rows), y2(T * rows), y3(T * rows);
      kernels::matmul(m.view, nullptr, x.data(), T, y1.data(), &one);
      kernels::matmul(m.view, nullptr, x.data(), T, y2.data(), &two);
      kernels::matmul(m.view, nullptr, x.data(), T, y3.data(), &three);
      EXPECT_EQ(std::memcmp(y1.data(), y2.data(), y1.size() * 4), 0) << "1 vs 2 threads";
      EXPECT_EQ(std::memcmp(y1.data(), y3.data(), y1.size() * 4), 0) << "1 vs 3 threads";
      // Rows shifted by 1..5 (another place in the register tiles), as a trimmed vocabulary does.
      for (size_t first = 1; first <= 5; ++first) {
        const TensorView sub = m.tail_rows(first);
        std::vector<float> ys(T * (rows - first));
        kernels::matmul(sub, nullptr, x.data(), T, ys.data(), &two);
        for (size_t t = 0; t < T; ++t)
          ASSERT_EQ(std::memcmp(&ys[t * (rows - first)], &y1[t * rows + first], (rows - first) * 4), 0)
              << "rows from " << first << ", token " << t;
      }
      // Each token alone (decode) gives what it gave inside the batch (prefill).
      for (size_t t = 0; t < T; ++t) {
        std::vector<float> yt(rows);
        kernels::matmul(m.view, nullptr, &x[t * cols], 1, yt.data(), nullptr);
        ASSERT_EQ(std::memcmp(yt.data(), &y1[t * rows], rows * 4), 0) << "token " << t;
      }
    });
  }
}

// Token counts that use every token tile of the prefill paths (q4_0 on VNNI: 16, 8, 4, 2, 1), row
// counts with partial 16-row panels and rows longer than one panel's 32 blocks (34 here, the last
// one partial): each token alone, any thread count and a row-shifted sub-matrix give the same bits
// as the whole batch, and the batch is within the quantization tolerance of the reference.
TEST(Kernels, PrefillTokenTilesAreBitIdenticalToDecode) {
  const size_t rows = 37, cols = 1060, T = 31;
  ThreadPool two(2);
  const auto x = random_floats(T * cols, 13);
  for (const TypeCase& c : all_types()) {
    if (!quantizes_activations(c, cols)) continue;
    SCOPED_TRACE(label(c));
    const Matrix m(c, rows, cols, 17);
    std::vector<float> want(T * rows);
    kernels::matmul_reference(m.view, nullptr, x.data(), T, want.data(), nullptr);
    on_every_target([&] {
      std::vector<float> y1(T * rows), y2(T * rows);
      kernels::matmul(m.view, nullptr, x.data(), T, y1.data(), nullptr);
      kernels::matmul(m.view, nullptr, x.data(), T, y2.data(), &two);
      EXPECT_EQ(std::memcmp(y1.data(), y2.data(), y1.size() * 4), 0) << "1 vs 2 threads";
      for (size_t t = 0; t < T; ++t)
        for (size_t r = 0; r < rows; ++r)
          ASSERT_NEAR(y1[t * rows + r], want[t * rows + r], tolerance(m, &x[t * cols], r, cols, true))
              << "token " << t << " row " << r;
      const TensorView sub = m.tail_rows(3);
      std::vector<float> ys(T * (rows - 3));
      kernels::matmul(sub, nullptr, x.data(), T, ys.data(), nullptr);
      for (size_t t = 0; t < T; ++t) {
        ASSERT_EQ(std::memcmp(&ys[t * (rows - 3)], &y1[t * rows + 3], (rows - 3) * 4), 0) << "rows from 3, token " << t;
        std::vector<float> yt(rows);
        kernels::matmul(m.view, nullptr, &x[t * cols], 1, yt.data(), nullptr);
        ASSERT_EQ(std::memcmp(yt.data(), &y1[t * rows], rows * 4), 0) << "token " << t;
      }
    });
  }
}

// matmul_many runs several products of one input in one parallel section; each output must be
// bit for bit what its own matmul gives, whatever the types (mixed, so activations are quantized in
// several lane orders), biases, token counts, thread counts and targets.
TEST(Kernels, MatmulManyIsBitIdenticalToSeparateProducts) {
  const size_t cols = 1024;
  const size_t rows[] = {67, 20, 45};  // partial tiles, and a boundary inside a thread's chunk
  const auto x = random_floats(7 * cols, 5);
  const auto bias_values = random_floats(67, 6);
  const TensorView bias{"b", QType::F32, 0, {67}, reinterpret_cast<const uint8_t*>(bias_values.data()), 67 * 4, 67 * 4};
  std::vector<std::vector<TypeCase>> sets;
  for (const TypeCase& c : all_types()) sets.push_back({c, c, c});
  sets.push_back({{QType::Q4_0, 0}, {QType::F16, 0}, {QType::Int4Sym, 48}});
  sets.push_back({{QType::Int4Asym, 32}, {QType::Q8_0, 0}, {QType::Q4_0, 0}});
  ThreadPool one(1), two(2), three(3);
  for (const auto& set : sets) {
    SCOPED_TRACE(label(set[0]) + "," + label(set[1]) + "," + label(set[2]));
    const Matrix m0(set[0], rows[0], cols, 21), m1(set[1], rows[1], cols, 22), m2(set[2], rows[2], cols, 23);
    const TensorView* views[] = {&m0.view, &m1.view, &m2.view};
    on_every_target([&] {
      for (size_t T : {1, 7})
        for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &one, &two, &three}) {
          std::vector<float> sep[3], many[3];
          kernels::MatmulOut outs[3];
          for (size_t i = 0; i < 3; ++i) {
            const TensorView* b = i == 0 ? &bias : nullptr;
            sep[i].assign(T * rows[i], 0.0f);
            many[i].assign(T * rows[i], -1.0f);
            kernels::matmul(*views[i], b, x.data(), T, sep[i].data(), nullptr);
            outs[i] = {views[i], b, many[i].data()};
          }
          kernels::matmul_many(outs, 3, x.data(), T, pool);
          for (size_t i = 0; i < 3; ++i)
            ASSERT_EQ(std::memcmp(sep[i].data(), many[i].data(), sep[i].size() * 4), 0)
                << "product " << i << ", T=" << T << ", threads=" << (pool ? pool->size() : 0);
        }
    });
  }
}

TEST(Kernels, MatmulManyRejectsDifferentWidthsAndTooManyProducts) {
  const Matrix a({QType::F32, 0}, 4, 64, 1), b({QType::F32, 0}, 4, 96, 2);
  const auto x = random_floats(96, 3);
  std::vector<float> ya(4), yb(4);
  const kernels::MatmulOut mixed[] = {{&a.view, nullptr, ya.data()}, {&b.view, nullptr, yb.data()}};
  EXPECT_THROW(kernels::matmul_many(mixed, 2, x.data(), 1, nullptr), Error);
  std::vector<kernels::MatmulOut> many(9, kernels::MatmulOut{&a.view, nullptr, ya.data()});
  EXPECT_THROW(kernels::matmul_many(many.data(), many.size(), x.data(), 1, nullptr), Error);
}

// attend_head against its scalar reference: head sizes that leave vector tails, one to many
// positions, keys and values interleaved in a cache with a stride. The softmax weights sum to 1,
// so each output moves by at most a few f32 roundings of max |v|, plus the scores' rounding
// (relative to sum |q_e k_e|) passed through the exponential.
TEST(Kernels, AttendHeadMatchesReferenceOnEveryTarget) {
  for (size_t head_dim : {1, 7, 64, 80, 128}) {
    for (size_t n_pos : {1, 5, 100}) {
      SCOPED_TRACE("head_dim " + std::to_string(head_dim) + ", positions " + std::to_string(n_pos));
      const size_t stride = 3 * head_dim + 1;
      const auto q = random_floats(head_dim, 1), k = random_floats(n_pos * stride, 2), v = random_floats(n_pos * stride, 3);
      const float scale = 1.0f / std::sqrt(float(head_dim));
      std::vector<float> scores(n_pos), want(head_dim), got(head_dim);
      kernels::attend_head_reference(q.data(), k.data(), v.data(), stride, n_pos, head_dim, scale, scores.data(),
                                     want.data());
      double max_qk = 0, max_v = 0;
      for (size_t j = 0; j < n_pos; ++j) {
        double s = 0;
        for (size_t e = 0; e < head_dim; ++e) {
          s += std::fabs(q[e] * k[j * stride + e]);
          max_v = std::max(max_v, double(std::fabs(v[j * stride + e])));
        }
        max_qk = std::max(max_qk, s * scale);
      }
      // exp(a + da) = exp(a) (1 + da): a score error da changes the weights by ~2 da relative.
      const double score_err = 2.0 * double(head_dim + 2) * FLT_EPSILON * max_qk;
      const float tol = float(max_v * (2.0 * score_err + 4.0 * double(n_pos + 2) * FLT_EPSILON)) + FLT_MIN;
      on_every_target([&] {
        std::fill(got.begin(), got.end(), NAN);
        kernels::attend_head(q.data(), k.data(), v.data(), stride, n_pos, head_dim, scale, scores.data(), got.data());
        for (size_t e = 0; e < head_dim; ++e) ASSERT_NEAR(got[e], want[e], tol) << "element " << e;
      });
    }
  }
}

// The per-token RoPE table (session.cpp rotates every head of a token with one) gives the bits of
// rotate_pairs, and both are a rotation by pos * freq: checked against long double cos/sin.
TEST(Kernels, RotationTableGivesTheBitsOfRotatePairs) {
  const size_t pairs = 32;
  std::vector<double> freqs(pairs);
  for (size_t i = 0; i < pairs; ++i) freqs[i] = std::pow(10000.0, -double(2 * i) / double(2 * pairs));
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  std::vector<float> cs(2 * pairs);
  for (int64_t pos : {int64_t(0), int64_t(1), int64_t(17), int64_t(511), int64_t(100000)}) {
    std::vector<float> v(2 * pairs);
    for (float& x : v) x = u(rng);
    std::vector<float> by_freqs = v, by_table = v;
    kernels::rotate_pairs(by_freqs.data(), pairs, freqs.data(), pos);
    kernels::rotation_table(pairs, freqs.data(), pos, cs.data());
    kernels::rotate_pairs(by_table.data(), pairs, cs.data());
    ASSERT_EQ(std::memcmp(by_freqs.data(), by_table.data(), v.size() * sizeof(float)), 0) << "pos " << pos;
    for (size_t i = 0; i < pairs; ++i) {
      const long double angle = (long double)pos * (long double)freqs[i];
      const long double c = std::cos(angle), s = std::sin(angle), a = v[2 * i], b = v[2 * i + 1];
      EXPECT_NEAR(double(by_table[2 * i]), double(a * c - b * s), 1e-5) << "pos " << pos << " pair " << i;
      EXPECT_NEAR(double(by_table[2 * i + 1]), double(a * s + b * c), 1e-5) << "pos " << pos << " pair " << i;
    }
  }
}

}  // namespace
}  // namespace sf
