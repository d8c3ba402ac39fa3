// The --target-bpw sensitivity pass (pipeline/bit_budget_plan.h) and the block-run helpers it shares
// with the calibration stages (pipeline/calib_run.h): the tap's statistics are the sums of what it is
// fed, a decoded row is the type's round trip, and on a fixture model the pass covers every tensor
// once, keeps the fixed ones, meets the budget, refuses one it cannot reach before running, and gives
// the same result on one thread and two.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "converters/reader_registry.h"
#include "core/error.h"
#include "pipeline/awq_fold.h"
#include "pipeline/bit_budget_plan.h"
#include "pipeline/calib_run.h"

namespace sf {
namespace {

ModelDesc small_desc() {
  ModelDesc d;
  d.d_model = 8;
  d.n_heads = 2;
  d.n_kv_heads = 2;
  d.head_dim = 4;
  d.ffn_dim = 12;
  d.n_layers = 1;
  d.vocab_size = 16;
  return d;
}

TEST(CalibRun, StatsTapSumsWhatItIsFed) {
  const ModelDesc d = small_desc();
  ThreadPool pool(2);
  StatsTap tap(d, true, pool);
  std::mt19937 rng(3);
  std::normal_distribution<float> n;
  const size_t cols = group_width(d, LinearInput::FfnMid), rows = 7;
  std::vector<float> x(rows * cols);
  for (auto& v : x) v = n(rng);
  tap.input(LinearInput::FfnMid, x.data(), 3, cols);  // in two calls, as a run of two chunks
  tap.input(LinearInput::FfnMid, x.data() + 3 * cols, rows - 3, cols);
  tap.finish();
  const InputStats& s = tap.stats[size_t(LinearInput::FfnMid)];
  ASSERT_EQ(s.channels, cols);
  EXPECT_EQ(s.tokens, rows);
  ASSERT_EQ(s.gram.size(), cols * cols);
  for (size_t i = 0; i < cols; ++i) {
    double sq = 0;
    for (size_t r = 0; r < rows; ++r) sq += double(x[r * cols + i]) * x[r * cols + i];
    EXPECT_NEAR(s.sum_sq[i], sq, 1e-9 * (1 + sq));
    for (size_t j = 0; j < cols; ++j) {
      double g = 0;
      for (size_t r = 0; r < rows; ++r) g += double(x[r * cols + i]) * x[r * cols + j];
      EXPECT_NEAR(s.gram[i * cols + j], g, 1e-9 * (1 + std::fabs(g)));
    }
  }
  EXPECT_EQ(tap.stats[size_t(LinearInput::AttnIn)].tokens, 0u);  // nothing fed there
  StatsTap diag(d, false, pool);
  EXPECT_TRUE(diag.stats[0].gram.empty());
}

TEST(CalibRun, DecodedRowIsTheTypesRoundTrip) {
  UnitTensor t;
  t.spec.name = "w";
  t.spec.shape = {2, 64};
  std::mt19937 rng(5);
  std::normal_distribution<float> n;
  t.values.resize(128);
  for (auto& v : t.values) v = n(rng);
  std::vector<float> row;
  std::vector<uint8_t> bytes;
  decoded_row(t, nullptr, 1, row, bytes);
  EXPECT_EQ(row, std::vector<float>(t.values.begin() + 64, t.values.end()));
  const Scheme int8{QType::Int8, 0};
  decoded_row(t, &int8, 1, row, bytes);
  // int8: one scale max|x| / 127 per row, each value within half a step of the original.
  float mx = 0;
  for (size_t j = 0; j < 64; ++j) mx = std::max(mx, std::fabs(t.values[64 + j]));
  const double step = mx / 127.0;
  bool changed = false;
  for (size_t j = 0; j < 64; ++j) {
    EXPECT_LE(std::fabs(row[j] - t.values[64 + j]), step / 2 * (1 + 1e-5) + 1e-7) << j;
    changed = changed || row[j] != t.values[64 + j];
  }
  EXPECT_TRUE(changed);
}

// A fixture model (tests/fixtures/make_fixtures.py) with calibration ids; skipped without SF_FIXTURES.
struct Fixture {
  std::unique_ptr<SourceModel> src;
  CanonicalModel model;
  std::string ids;
};
std::unique_ptr<Fixture> open_fixture(const std::string& name) {
  const char* dir = std::getenv("SF_FIXTURES");
  const std::string path = std::string(dir ? dir : "") + "/" + name;
  if (!dir || !std::filesystem::is_directory(path)) return nullptr;
  auto f = std::make_unique<Fixture>();
  f->src = open_source(path);
  f->model = map_architecture(*f->src);
  f->ids = (std::filesystem::temp_directory_path() / ("sf-unit-bpw-" + std::to_string(::getpid()) + ".ids")).string();
  std::ofstream out(f->ids);
  for (int i = 0; i < 1024; ++i) out << (i * 37) % f->model.desc.vocab_size << ' ';
  return f;
}

// What the quantize stage's policy fixes in any case (pipeline/stages.h policy_fixed_schemes).
std::map<std::string, Scheme> norms_and_biases(const ModelDesc& d) {
  std::map<std::string, Scheme> fixed;
  for (const auto& t : all_tensors(d))
    if (t.role == TensorRole::NormWeight || t.role == TensorRole::NormBias || t.role == TensorRole::LinearBias)
      fixed.emplace(t.name, Scheme{QType::F32, 0});
  return fixed;
}

BitBudgetRequest request(const Fixture& f, double target) {
  return {target, parse_calib_spec("ids:" + f.ids), 1024, 32, {}};
}

TEST(BitBudgetPlan, CoversEveryTensorOnceKeepsTheFixedOnesAndMeetsTheBudget) {
  auto f = open_fixture("hf_gqa");
  if (!f) GTEST_SKIP() << "SF_FIXTURES not set";
  const FormatRules shards{"shards", {}, false};
  std::map<std::string, Scheme> fixed = norms_and_biases(f->model.desc);
  fixed["blocks.0.attn.q.weight"] = Scheme{QType::F16, 0};
  ThreadPool one(1), two(2);
  const BitBudgetResult a = plan_bit_budget(request(*f, 6.0), f->model, nullptr, shards, fixed, "src", one);
  const BitBudgetResult b = plan_bit_budget(request(*f, 6.0), f->model, nullptr, shards, fixed, "src", two);
  std::set<std::string> names;
  for (const auto& t : all_tensors(f->model.desc)) names.insert(t.name);
  std::set<std::string> assigned;
  for (const auto& c : a.assignment.tensors) assigned.insert(c.name);
  EXPECT_EQ(assigned, names);
  for (const auto& [name, scheme] : fixed) {
    EXPECT_EQ(a.chosen.count(name), 0u) << name;
    for (const auto& c : a.assignment.tensors) {
      if (c.name != name) continue;
      EXPECT_EQ(c.scheme, scheme) << name;
    }
  }
  EXPECT_EQ(a.chosen.size() + fixed.size(), names.size());
  EXPECT_LE(a.assignment.achieved_bpw, 6.0);
  EXPECT_GT(a.assignment.achieved_bpw, 5.5);
  // The same choice and the same bits of error whatever the pool's size.
  ASSERT_EQ(a.assignment.tensors.size(), b.assignment.tensors.size());
  for (size_t i = 0; i < a.assignment.tensors.size(); ++i) {
    EXPECT_EQ(a.assignment.tensors[i].scheme, b.assignment.tensors[i].scheme);
    EXPECT_EQ(a.assignment.tensors[i].error, b.assignment.tensors[i].error);
  }
  EXPECT_EQ(a.manifest, b.manifest);
  EXPECT_EQ(a.manifest["sequences"], 32);
  std::filesystem::remove(f->ids);
}

TEST(BitBudgetPlan, UnreachableTargetIsAUsageErrorBeforeTheModelRuns) {
  auto f = open_fixture("hf_gqa");
  if (!f) GTEST_SKIP() << "SF_FIXTURES not set";
  ThreadPool pool(1);
  BitBudgetRequest req = request(*f, 2.0);
  req.calib = parse_calib_spec("ids:/nonexistent/calib.ids");  // never read: the target is refused first
  try {
    plan_bit_budget(req, f->model, nullptr, FormatRules{"shards", {}, false}, {}, "src", pool);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Usage);
    EXPECT_NE(e.message().find("at least"), std::string::npos) << e.message();
  }
  std::filesystem::remove(f->ids);
}

TEST(BitBudgetPlan, SameSchemeGroupsShareOneChoiceAndKeepTheirOwnSizes) {
  auto f = open_fixture("hf_gqa");
  if (!f) GTEST_SKIP() << "SF_FIXTURES not set";
  ThreadPool pool(1);
  BitBudgetRequest req = request(*f, 5.0);
  const std::vector<std::string> qkv = {"blocks.0.attn.q.weight", "blocks.0.attn.k.weight", "blocks.0.attn.v.weight"};
  req.same_scheme = {qkv};
  const auto fixed = norms_and_biases(f->model.desc);
  for (double target : {4.8, 5.0, 6.0, 7.0}) {
    req.target_bpw = target;
    const BitBudgetResult r = plan_bit_budget(req, f->model, nullptr, FormatRules{"shards", {}, false}, fixed, "src", pool);
    std::set<std::string> schemes;
    uint64_t bytes = 0, weights = 0;
    for (const auto& c : r.assignment.tensors) {
      bytes += c.bytes, weights += c.weights;
      if (std::find(qkv.begin(), qkv.end(), c.name) == qkv.end()) continue;
      schemes.insert(c.scheme.name());
      size_t rows = 0, cols = 0;
      for (const auto& t : all_tensors(f->model.desc))
        if (t.name == c.name) rows = size_t(t.shape[0]), cols = size_t(t.shape[1]);
      EXPECT_EQ(c.bytes, scheme_bytes(c.scheme, rows, cols)) << c.name;
      EXPECT_EQ(c.weights, rows * cols) << c.name;
    }
    EXPECT_EQ(schemes.size(), 1u) << target;
    EXPECT_EQ(r.assignment.tensors.size(), all_tensors(f->model.desc).size());
    EXPECT_EQ(bytes, r.assignment.bytes);
    EXPECT_EQ(weights, r.assignment.weights);
    EXPECT_LE(8.0 * double(bytes), target * double(weights));
  }
  std::filesystem::remove(f->ids);
}

TEST(BitBudgetPlan, GgufLadderHasOnlyGgmlTypes) {
  auto f = open_fixture("hf_gqa");
  if (!f) GTEST_SKIP() << "SF_FIXTURES not set";
  ThreadPool pool(1);
  const FormatRules gguf{"gguf", {QType::F32, QType::F16, QType::BF16, QType::Q8_0, QType::Q4_0}, true};
  const BitBudgetResult r = plan_bit_budget(request(*f, 7.0), f->model, nullptr, gguf,
                                            norms_and_biases(f->model.desc), "src", pool);
  for (const auto& c : r.assignment.tensors)
    EXPECT_TRUE(c.scheme.type == QType::F32 || c.scheme.type == QType::F16 || c.scheme.type == QType::Q8_0 ||
                c.scheme.type == QType::Q4_0)
        << c.name << " " << c.scheme.name();
  std::filesystem::remove(f->ids);
}

// hf_st (a safetensors copy of hf_gqa) with block 0's query projection all zeros: every attention
// score is then 0 and the weights uniform whatever the keys, so block 0's output does not depend on
// its key projection. Returns the copy's directory.
std::string blind_query_copy() {
  const char* dir = std::getenv("SF_FIXTURES");
  if (!dir || !std::filesystem::is_directory(std::string(dir) + "/hf_st")) return "";
  const auto out = std::filesystem::temp_directory_path() / ("sf-unit-blind-query-" + std::to_string(::getpid()));
  std::filesystem::remove_all(out);
  std::filesystem::copy(std::string(dir) + "/hf_st", out);
  const std::string file = (out / "model.safetensors").string();
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  uint64_t header_len = 0;
  f.read(reinterpret_cast<char*>(&header_len), 8);  // little-endian, as this machine
  std::string header(header_len, '\0');
  f.read(header.data(), std::streamsize(header_len));
  const auto h = nlohmann::json::parse(header);
  const auto& q = h.at("model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(q.at("dtype"), "F32");
  const uint64_t begin = q.at("data_offsets")[0], end = q.at("data_offsets")[1];
  f.seekp(std::streamoff(8 + header_len + begin));
  const std::string zeros(end - begin, '\0');
  f.write(zeros.data(), std::streamsize(zeros.size()));
  return out.string();
}

TEST(BitBudgetPlan, BlockMeasureSeesWhatTheBlockIgnores) {
  const std::string dir = blind_query_copy();
  if (dir.empty()) GTEST_SKIP() << "SF_FIXTURES not set";
  auto f = std::make_unique<Fixture>();
  f->src = open_source(dir);
  f->model = map_architecture(*f->src);
  f->ids = dir + "/calib.ids";
  {
    std::ofstream out(f->ids);
    for (int i = 0; i < 1024; ++i) out << (i * 37) % f->model.desc.vocab_size << ' ';
  }
  ThreadPool pool(2);
  const auto fixed = norms_and_biases(f->model.desc);
  auto choice = [](const BitBudgetResult& r, const std::string& name) {
    for (const auto& c : r.assignment.tensors)
      if (c.name == name) return c;
    ADD_FAILURE() << name << " not assigned";
    return BudgetChoice{};
  };
  BitBudgetRequest req = request(*f, 6.0);
  req.measure = BudgetMeasure::Block;
  const BitBudgetResult block = plan_bit_budget(req, f->model, nullptr, FormatRules{"shards", {}, false}, fixed, "src", pool);
  req.measure = BudgetMeasure::Layer;
  const BitBudgetResult layer = plan_bit_budget(req, f->model, nullptr, FormatRules{"shards", {}, false}, fixed, "src", pool);
  EXPECT_EQ(block.manifest["measure"], "block");
  EXPECT_EQ(layer.manifest["measure"], "gram");
  // Block 0's key projection changes its own output in every scheme, but not the block's: the
  // block measure finds it costs nothing and gives it the cheapest rung; the layer measure does not.
  const BudgetChoice k_block = choice(block, "blocks.0.attn.k.weight"), k_layer = choice(layer, "blocks.0.attn.k.weight");
  EXPECT_EQ(k_block.error, 0.0);
  EXPECT_EQ(k_block.scheme.name(), "int4:g128:sym");
  EXPECT_GT(k_layer.error, 0.0);
  // Tensors the block's output depends on lose something in the block measure too.
  for (const char* name : {"blocks.0.attn.v.weight", "blocks.0.ffn.up.weight", "blocks.1.attn.k.weight"})
    EXPECT_GT(choice(block, name).error, 0.0) << name;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace sf
