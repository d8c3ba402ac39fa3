// Mixed precision to a bit budget: the sensitivity measure against the layer's outputs computed
// directly from explicit input rows, the allocator against brute force over every assignment, the
// budget's edges, determinism, and the candidate ladder's respect for what a format stores.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "quantizers/bit_budget.h"

namespace sf {
namespace {

std::vector<float> random_matrix(size_t rows, size_t cols, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> n(0.0f, scale);
  std::vector<float> m(rows * cols);
  for (float& v : m) v = n(rng);
  return m;
}

// What the stored tensor decodes to: each row quantized and decoded again.
std::vector<float> decoded(const std::vector<float>& w, size_t rows, size_t cols, const Scheme& s) {
  const QTypeTraits& tr = qtype_traits(s.type);
  std::vector<float> out(rows * cols);
  for (size_t r = 0; r < rows; ++r) {
    std::vector<uint8_t> bytes(tr.row_bytes(cols, s.group), 0);
    tr.quantize_row(&w[r * cols], cols, s.group, bytes.data());
    tr.dequantize_row(bytes.data(), cols, s.group, &out[r * cols]);
  }
  return out;
}

// Mean over the tokens of |X Wᵀ - X Ŵᵀ|², straight from the input rows.
double direct_output_error(const std::vector<float>& x, size_t tokens, const std::vector<float>& w,
                           const std::vector<float>& w_hat, size_t rows, size_t cols) {
  double total = 0;
  for (size_t t = 0; t < tokens; ++t)
    for (size_t r = 0; r < rows; ++r) {
      double y = 0, y_hat = 0;
      for (size_t j = 0; j < cols; ++j) {
        y += double(x[t * cols + j]) * w[r * cols + j];
        y_hat += double(x[t * cols + j]) * w_hat[r * cols + j];
      }
      total += (y - y_hat) * (y - y_hat);
    }
  return total / double(tokens);
}

// The statistics written out here rather than through InputStats::add, so the test does not
// depend on how the calibration code gathers them.
InputStats stats_of(const std::vector<float>& x, size_t tokens, size_t cols, bool with_gram) {
  InputStats s;
  s.channels = cols;
  s.tokens = tokens;
  s.sum_sq.assign(cols, 0.0);
  s.sum_abs.assign(cols, 0.0);
  s.with_gram = with_gram;
  if (with_gram) s.gram.assign(cols * cols, 0.0);
  for (size_t t = 0; t < tokens; ++t)
    for (size_t i = 0; i < cols; ++i) {
      const double xi = x[t * cols + i];
      s.sum_sq[i] += xi * xi;
      s.sum_abs[i] += std::fabs(xi);
      if (with_gram)
        for (size_t j = 0; j < cols; ++j) s.gram[i * cols + j] += xi * x[t * cols + j];
    }
  return s;
}

const char* kSchemes[] = {"int4:g16", "int4:g32:asym", "int4:g128", "q4_0", "int8", "q8_0", "f16", "bf16"};

TEST(BitBudget, OutputErrorWithGramIsTheMeanSquaredOutputChange) {
  std::mt19937 rng(1);
  const size_t rows = 37, cols = 72, tokens = 50;  // rows not whole blocks of 16, cols not of 32
  const auto w = random_matrix(rows, cols, rng);
  auto x = random_matrix(tokens, cols, rng);
  for (size_t t = 0; t < tokens; ++t) x[t * cols + 3] += 4.0f * x[t * cols];  // correlated channels
  const InputStats stats = stats_of(x, tokens, cols, true);
  for (const char* name : kSchemes) {
    const Scheme s = parse_scheme(name);
    const double expected = direct_output_error(x, tokens, w, decoded(w, rows, cols, s), rows, cols);
    EXPECT_GT(expected, 0) << name;
    EXPECT_NEAR(output_error(w.data(), rows, cols, s, stats), expected, 1e-9 * expected) << name;
  }
  const std::vector<float> zero(rows * cols, 0.0f);
  const double energy = direct_output_error(x, tokens, w, zero, rows, cols);
  EXPECT_NEAR(output_energy(w.data(), rows, cols, stats), energy, 1e-9 * energy);
}

TEST(BitBudget, OutputErrorWithDiagonalStatsIsExactForUncorrelatedChannels) {
  // Each token drives one channel, so Σ x xᵀ is diagonal and the diagonal form is exact; with the
  // Gram matrix dropped the function must use sum_sq alone.
  std::mt19937 rng(2);
  const size_t rows = 20, cols = 48, tokens = 3 * cols;
  const auto w = random_matrix(rows, cols, rng);
  std::vector<float> x(tokens * cols, 0.0f);
  std::uniform_real_distribution<float> mag(0.1f, 3.0f);
  for (size_t t = 0; t < tokens; ++t) x[t * cols + (t * 7) % cols] = mag(rng);
  const InputStats diag = stats_of(x, tokens, cols, false);
  for (const char* name : kSchemes) {
    const Scheme s = parse_scheme(name);
    const double expected = direct_output_error(x, tokens, w, decoded(w, rows, cols, s), rows, cols);
    EXPECT_NEAR(output_error(w.data(), rows, cols, s, diag), expected, 1e-9 * expected) << name;
  }
  // On correlated inputs the diagonal form differs from the outputs: it is the approximation.
  auto xc = random_matrix(tokens, cols, rng);
  for (size_t t = 0; t < tokens; ++t)
    for (size_t j = 1; j < cols; ++j) xc[t * cols + j] += xc[t * cols];
  const Scheme s = parse_scheme("int4:g16");
  const double exact = direct_output_error(xc, tokens, w, decoded(w, rows, cols, s), rows, cols);
  EXPECT_NEAR(output_error(w.data(), rows, cols, s, stats_of(xc, tokens, cols, true)), exact, 1e-9 * exact);
  EXPECT_GT(std::fabs(output_error(w.data(), rows, cols, s, stats_of(xc, tokens, cols, false)) - exact), 1e-3 * exact);
}

TEST(BitBudget, OutputErrorIsTheSameBitsWhateverThePool) {
  std::mt19937 rng(3);
  const size_t rows = 301, cols = 40, tokens = 30;  // 5 blocks of 64 rows, the last short
  const auto w = random_matrix(rows, cols, rng);
  const auto x = random_matrix(tokens, cols, rng);
  for (bool gram : {false, true}) {
    const InputStats stats = stats_of(x, tokens, cols, gram);
    const Scheme s = parse_scheme("int4:g16");
    const double serial = output_error(w.data(), rows, cols, s, stats, nullptr);
    for (size_t threads : {1, 2, 3, 5}) {
      ThreadPool pool(threads);
      EXPECT_EQ(output_error(w.data(), rows, cols, s, stats, &pool), serial) << threads << " threads, gram " << gram;
    }
  }
}

TEST(BitBudget, RowsThatCannotBeStoredOrHoldNonFiniteWeights) {
  std::mt19937 rng(4);
  const size_t rows = 6, cols = 32, tokens = 10;
  auto w = random_matrix(rows, cols, rng);
  const auto x = random_matrix(tokens, cols, rng);
  const InputStats stats = stats_of(x, tokens, cols, true);
  // f16 cannot hold 1e6 (past 65504): that scheme is not a candidate for this tensor.
  w[2 * cols + 5] = 1e6f;
  EXPECT_TRUE(std::isinf(output_error(w.data(), rows, cols, parse_scheme("f16"), stats)));
  EXPECT_TRUE(std::isfinite(output_error(w.data(), rows, cols, parse_scheme("int8"), stats)));
  const std::vector<Scheme> ladder = {parse_scheme("int8"), parse_scheme("f16")};
  const BudgetTensor t = measure_linear("blocks.0.attn.q.weight", w.data(), rows, cols, ladder, stats);
  ASSERT_EQ(t.options.size(), 1u);
  EXPECT_EQ(t.options[0].scheme.name(), "int8");
  // A row with a NaN (kept under --allow-non-finite) adds nothing: the rest is measured as without it.
  w[2 * cols + 5] = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> without(w.begin(), w.begin() + 2 * cols);
  without.insert(without.end(), w.begin() + 3 * cols, w.end());
  const Scheme s = parse_scheme("int4:g16");
  const double expected = direct_output_error(x, tokens, without, decoded(without, rows - 1, cols, s), rows - 1, cols);
  EXPECT_NEAR(output_error(w.data(), rows, cols, s, stats), expected, 1e-9 * expected);
  // Statistics of another width are a programming error, reported rather than read out of bounds.
  EXPECT_THROW(output_error(w.data(), rows, cols + 1, s, stats), Error);
}

TEST(BitBudget, LookupErrorWeighsRowsByTheirShareOfTokens) {
  std::mt19937 rng(5);
  const size_t rows = 30, cols = 24;
  const auto w = random_matrix(rows, cols, rng);
  std::vector<double> share(rows);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  double sum = 0;
  for (double& p : share) sum += (p = u(rng));
  for (double& p : share) p /= sum;
  const Scheme s = parse_scheme("int4:g8");
  const auto w_hat = decoded(w, rows, cols, s);
  double weighted = 0, uniform = 0;
  for (size_t r = 0; r < rows; ++r) {
    double d2 = 0;
    for (size_t j = 0; j < cols; ++j) d2 += double(w_hat[r * cols + j] - w[r * cols + j]) * (w_hat[r * cols + j] - w[r * cols + j]);
    weighted += share[r] * d2;
    uniform += d2 / rows;
  }
  EXPECT_NEAR(lookup_error(w.data(), rows, cols, s, share), weighted, 1e-12);
  EXPECT_NEAR(lookup_error(w.data(), rows, cols, s, {}), uniform, 1e-12);
}

TEST(BitBudget, MeasuredOptionsAreErrorsOverEnergyWithExactBytes) {
  std::mt19937 rng(6);
  const size_t rows = 16, cols = 100, tokens = 20;
  const auto w = random_matrix(rows, cols, rng);
  const auto x = random_matrix(tokens, cols, rng);
  const InputStats stats = stats_of(x, tokens, cols, true);
  const std::vector<Scheme> ladder = {parse_scheme("int4:g128"), parse_scheme("q4_0"), parse_scheme("int8")};
  const BudgetTensor t = measure_linear("blocks.1.ffn.down.weight", w.data(), rows, cols, ladder, stats);
  EXPECT_EQ(t.weights, rows * cols);
  const std::vector<float> zero(rows * cols, 0.0f);
  const double energy = direct_output_error(x, tokens, w, zero, rows, cols);
  // Sizes from the layouts of docs/format.md: int4 g128 = 1 f16 scale + 50 code bytes a row,
  // q4_0 = 4 blocks of 18 bytes (the last zero-padded), int8 = f32 scale + 100 codes.
  const uint64_t bytes[] = {rows * (2 + 50), rows * 4 * 18, rows * (4 + 100)};
  ASSERT_EQ(t.options.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(t.options[i].bytes, bytes[i]) << ladder[i].name();
    const double err = direct_output_error(x, tokens, w, decoded(w, rows, cols, ladder[i]), rows, cols) / energy;
    EXPECT_NEAR(t.options[i].error, err, 1e-9 * err) << ladder[i].name();
  }
  EXPECT_GT(t.options[0].error, t.options[2].error);  // int8 loses less than int4
  // A layer that outputs nothing on the calibration data loses nothing.
  const BudgetTensor z = measure_linear("z", zero.data(), rows, cols, ladder, stats);
  for (const auto& o : z.options) EXPECT_EQ(o.error, 0.0);
}

TEST(BitBudget, ATiedEmbeddingAddsTheErrorsOfItsTwoUses) {
  const BudgetTensor lookup{"embed.weight", 100, {{parse_scheme("int4"), 60, 0.5}, {parse_scheme("int8"), 104, 0.1},
                                                  {parse_scheme("f16"), 200, 0.001}}};
  const BudgetTensor output{"head.output.weight", 100, {{parse_scheme("int8"), 104, 0.2}, {parse_scheme("int4"), 60, 0.7}}};
  const BudgetTensor t = combine_uses(lookup, output);
  EXPECT_EQ(t.name, "embed.weight");
  EXPECT_EQ(t.weights, 100u);
  ASSERT_EQ(t.options.size(), 2u);  // f16 was not measured for the output use
  EXPECT_EQ(t.options[0].scheme.name(), "int4:g32:sym");
  EXPECT_DOUBLE_EQ(t.options[0].error, 0.5 + 0.7);
  EXPECT_EQ(t.options[1].bytes, 104u);
  EXPECT_DOUBLE_EQ(t.options[1].error, 0.1 + 0.2);
  EXPECT_THROW(combine_uses(lookup, BudgetTensor{"x", 100, {{parse_scheme("q8_0"), 106, 0.1}}}), Error);
}

// ---------------------------------------------------------------- allocator

struct Brute {
  double error = std::numeric_limits<double>::infinity();
  uint64_t bytes = 0;
};
// Every assignment whose bytes fit `max_bytes`: the least total error.
Brute brute_force(const std::vector<BudgetTensor>& ts, uint64_t max_bytes) {
  Brute best;
  std::vector<size_t> pick(ts.size(), 0);
  for (;;) {
    uint64_t bytes = 0;
    double error = 0;
    for (size_t i = 0; i < ts.size(); ++i) bytes += ts[i].options[pick[i]].bytes, error += ts[i].options[pick[i]].error;
    if (bytes <= max_bytes && error < best.error) best = {error, bytes};
    size_t i = 0;
    while (i < ts.size() && ++pick[i] == ts[i].options.size()) pick[i++] = 0;
    if (i == ts.size()) return best;
  }
}

std::vector<BudgetTensor> random_instance(std::mt19937& rng, uint64_t byte_scale, bool monotone) {
  std::uniform_int_distribution<int> count(3, 6);
  std::uniform_int_distribution<uint64_t> weights(8, 64), extra(1, 3 * byte_scale);
  std::uniform_real_distribution<double> err(0.0, 1.0);
  std::vector<BudgetTensor> ts(count(rng));
  for (size_t i = 0; i < ts.size(); ++i) {
    ts[i].name = std::string(1, 't').append(std::to_string(i));
    ts[i].weights = weights(rng);
    uint64_t bytes = ts[i].weights * byte_scale / 4;
    double e = 1.0 + err(rng);
    const char* names[] = {"int4", "int8", "f16"};
    for (const char* n : names) {
      ts[i].options.push_back({parse_scheme(n), bytes, e});
      bytes += extra(rng);
      e = monotone ? e * err(rng) : err(rng);
    }
  }
  return ts;
}

uint64_t total_weights(const std::vector<BudgetTensor>& ts) {
  uint64_t w = 0;
  for (const auto& t : ts) w += t.weights;
  return w;
}

// The budget as documented: floor(target x weights / 8) bytes.
uint64_t allowed_bytes(double target, const std::vector<BudgetTensor>& ts) {
  return uint64_t(std::floor((long double)target * (long double)total_weights(ts) / 8.0L));
}

TEST(BitBudget, AllocatorMatchesBruteForceOnSmallInstances) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 400; ++trial) {
    const auto ts = random_instance(rng, 8, trial % 2 == 0);
    uint64_t lo = 0, hi = 0;
    for (const auto& t : ts) lo += t.options.front().bytes, hi += t.options.back().bytes;
    const uint64_t budget_bytes = std::uniform_int_distribution<uint64_t>(lo, hi)(rng);
    const double target = 8.0 * double(budget_bytes) / double(total_weights(ts));
    const uint64_t allowed = allowed_bytes(target, ts);
    EXPECT_LE(budget_bytes - allowed, 1u);  // the target's rounding costs a byte at most
    const Brute best = brute_force(ts, allowed);
    const BudgetAssignment a = allocate_bit_budget(ts, target);
    EXPECT_LE(a.bytes, allowed) << "trial " << trial;
    EXPECT_LE(a.achieved_bpw, target) << "trial " << trial;
    EXPECT_NEAR(a.total_error, best.error, 1e-12) << "trial " << trial;
    // The assignment's own bytes and errors add up to what it reports.
    uint64_t bytes = 0;
    double error = 0;
    for (const auto& c : a.tensors) bytes += c.bytes, error += c.error;
    EXPECT_EQ(bytes, a.bytes);
    EXPECT_NEAR(error, a.total_error, 1e-12);
  }
}

TEST(BitBudget, CoarseBudgetStepsStillMeetTheBudgetAndComeClose) {
  // Megabyte-sized options: the knapsack works in steps of ceil(spare / 65536) bytes, each
  // option's extra bytes rounded up, so it always fits and is at least as good as the exact
  // optimum of a budget smaller by one step per tensor.
  std::mt19937 rng(8);
  for (int trial = 0; trial < 80; ++trial) {
    const auto ts = random_instance(rng, 1 << 22, trial % 2 == 0);
    uint64_t lo = 0, hi = 0;
    for (const auto& t : ts) lo += t.options.front().bytes, hi += t.options.back().bytes;
    // Half the budgets a byte short of some assignment's size, where rounding down would overspend.
    uint64_t budget_bytes = std::uniform_int_distribution<uint64_t>(lo, hi - 1)(rng);
    if (trial % 4 >= 2) {
      uint64_t some = 0;
      for (const auto& t : ts) some += t.options[std::uniform_int_distribution<size_t>(0, 2)(rng)].bytes;
      budget_bytes = std::max(lo, some - 1);
    }
    const double target = 8.0 * double(budget_bytes) / double(total_weights(ts));
    const uint64_t allowed = allowed_bytes(target, ts);
    const uint64_t step = std::max<uint64_t>(1, (allowed - lo + 65535) / 65536);
    const BudgetAssignment a = allocate_bit_budget(ts, target);
    EXPECT_LE(a.bytes, allowed) << "trial " << trial;
    EXPECT_GE(a.total_error, brute_force(ts, allowed).error - 1e-12) << "trial " << trial;
    const uint64_t smaller = allowed - std::min(allowed - lo, step * ts.size());
    EXPECT_LE(a.total_error, brute_force(ts, smaller).error + 1e-12) << "trial " << trial;
  }
}

TEST(BitBudget, RepairSpendsWhatTheStepsLeft) {
  // 200000 spare bytes make steps of 4 bytes: upgrades of 100001 and 99999 bytes round to 25001 +
  // 25000 steps, one more than the 50000 there are, though their 200000 bytes fit exactly. The
  // knapsack takes one; the repair pass must take the other.
  std::vector<BudgetTensor> ts = {
      {"a", 500000, {{parse_scheme("int4"), 300000, 2.0}, {parse_scheme("int8"), 400001, 1.0},
                     {parse_scheme("f16"), 600000, 0.5}}},
      {"b", 500000, {{parse_scheme("int4"), 300000, 2.0}, {parse_scheme("int8"), 399999, 1.0},
                     {parse_scheme("f16"), 600000, 0.5}}},
  };
  const double target = 6.4;  // 800000 bytes
  ASSERT_EQ(allowed_bytes(target, ts), 800000u);
  const BudgetAssignment a = allocate_bit_budget(ts, target);
  EXPECT_EQ(a.bytes, 800000u);
  EXPECT_EQ(a.total_error, brute_force(ts, 800000).error);
  EXPECT_EQ(a.total_error, 2.0);
}

std::vector<BudgetTensor> three_tensors() {
  // 100 weights each; options int4 (50 bytes), int8 (100), f16 (200).
  std::vector<BudgetTensor> ts;
  for (const char* name : {"c", "a", "b"}) {
    BudgetTensor t{name, 100, {}};
    t.options = {{parse_scheme("int4"), 50, 4.0}, {parse_scheme("int8"), 100, 1.0}, {parse_scheme("f16"), 200, 0.01}};
    ts.push_back(t);
  }
  ts[0].options[0].error = 8.0;  // "c" gains most from int8
  return ts;
}

TEST(BitBudget, BudgetEdges) {
  auto ts = three_tensors();
  // Below every tensor's smallest scheme (4 bits per weight): a usage error naming what is reachable.
  try {
    allocate_bit_budget(ts, 3.9);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Usage);
    EXPECT_NE(e.message().find("4.0000 bits per weight"), std::string::npos) << e.message();
  }
  // Exactly the smallest: every tensor at its smallest.
  BudgetAssignment a = allocate_bit_budget(ts, 4.0);
  for (const auto& c : a.tensors) EXPECT_EQ(c.scheme.name(), "int4:g32:sym");
  EXPECT_DOUBLE_EQ(a.achieved_bpw, 4.0);
  // At and above the largest: every tensor at its largest.
  for (double t : {16.0, 32.0, 1e30}) {
    a = allocate_bit_budget(ts, t);
    for (const auto& c : a.tensors) EXPECT_EQ(c.scheme.name(), "f16") << t;
  }
  // 5.4 bits per weight = 202 bytes: one upgrade to int8, to the tensor that gains most.
  a = allocate_bit_budget(ts, 5.4);
  EXPECT_EQ(a.tensors[2].name, "c");
  EXPECT_EQ(a.tensors[2].scheme.name(), "int8");
  EXPECT_EQ(a.bytes, 200u);
  for (double bad : {0.0, -1.0, std::nan("")}) {
    try {
      allocate_bit_budget(ts, bad);
      FAIL() << "no error for " << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Usage);
    }
  }
  ts.push_back(ts[0]);  // a name given twice
  EXPECT_THROW(allocate_bit_budget(ts, 8.0), Error);
}

TEST(BitBudget, TiesGoToTheFirstTensorByNameWhateverTheOrderGiven) {
  auto ts = three_tensors();
  ts[0].options[0].error = 4.0;  // all three alike now
  // 220 bytes: one of the three can take int8; "a" does, in any input order.
  const double target = 8.0 * 220 / 300;
  std::mt19937 rng(9);
  for (int round = 0; round < 6; ++round) {
    std::shuffle(ts.begin(), ts.end(), rng);
    const BudgetAssignment a = allocate_bit_budget(ts, target);
    ASSERT_EQ(a.tensors.size(), 3u);
    EXPECT_EQ(a.tensors[0].name, "a");
    EXPECT_EQ(a.tensors[0].scheme.name(), "int8");
    EXPECT_EQ(a.tensors[1].scheme.name(), "int4:g32:sym");
    EXPECT_EQ(a.tensors[2].scheme.name(), "int4:g32:sym");
    EXPECT_EQ(assignment_json(a), assignment_json(allocate_bit_budget(ts, target)));
  }
}

TEST(BitBudget, FixedTensorsCountInTheBudget) {
  auto ts = three_tensors();
  ts.push_back(fixed_tensor("norm.weight", parse_scheme("f32"), 1, 100));
  EXPECT_EQ(ts.back().options[0].bytes, 400u);
  // 400 weights, at least 150 + 400 bytes = 11 bits per weight.
  EXPECT_THROW(allocate_bit_budget(ts, 10.99), Error);
  const BudgetAssignment a = allocate_bit_budget(ts, 11.0);
  EXPECT_EQ(a.bytes, 550u);
  EXPECT_EQ(a.weights, 400u);
}

TEST(BitBudget, JsonAndTable) {
  const BudgetAssignment a = allocate_bit_budget(three_tensors(), 5.4);
  const nlohmann::json j = assignment_json(a);
  EXPECT_EQ(j["target_bpw"].get<double>(), 5.4);
  EXPECT_DOUBLE_EQ(j["achieved_bpw"].get<double>(), 8.0 * 200 / 300);
  EXPECT_EQ(j["tensors"].size(), 3u);
  EXPECT_EQ(j["tensors"]["c"], "int8");
  EXPECT_EQ(j["tensors"]["a"], "int4:g32:sym");
  const std::string table = assignment_table(a, true);
  EXPECT_NE(table.find("int8"), std::string::npos) << table;
  EXPECT_NE(table.find("5.333"), std::string::npos) << table;  // achieved bits per weight
}

TEST(BitBudget, LadderHoldsOnlyWhatTheFormatStores) {
  const FormatRules shards{"shards", {}, false};
  const FormatRules gguf{"gguf", {QType::F32, QType::F16, QType::BF16, QType::Q8_0, QType::Q4_0}, true};
  const FormatRules floats{"floats", {QType::F32, QType::F16}, false};
  const auto names = [](const std::vector<Scheme>& l) {
    std::string s;
    for (const auto& x : l) {
      if (!s.empty()) s += ' ';
      s += x.name();
    }
    return s;
  };
  EXPECT_EQ(names(default_bpw_ladder(shards, 64)), "int4:g128:sym int4:g32:sym int8 f16");
  EXPECT_EQ(names(default_bpw_ladder(shards, 100)), "int4:g128:sym int4:g32:sym int8 f16");
  EXPECT_EQ(names(default_bpw_ladder(gguf, 64)), "q4_0 q8_0 f16");
  EXPECT_EQ(names(default_bpw_ladder(gguf, 100)), "f16");  // not whole blocks of 32
  EXPECT_EQ(names(default_bpw_ladder(floats, 64)), "f16");
  for (const FormatRules* f : {&shards, &gguf, &floats})
    for (const Scheme& s : default_bpw_ladder(*f, 64))
      EXPECT_TRUE(f->types.empty() || std::count(f->types.begin(), f->types.end(), s.type)) << s.name();
}

}  // namespace
}  // namespace sf
