// The executor's block entry point (executor/block.h) computes what Session computes, bit for bit,
// on several independent sequences at once; AWQ's fold (pipeline/awq_fold.h) leaves a block's f32
// output unchanged for random positive scales wherever its rules allow a fold, and the rules that
// refuse one (ChatGLM-6B's alpha * LN(x) residual, a GELU FFN, grouped-query v -> o) refuse it for
// a reason: folding there anyway changes the output.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/fs_util.h"
#include "executor/block.h"
#include "f32_block_views.h"
#include "executor/kernels.h"
#include "executor/session.h"
#include "pipeline/awq_fold.h"
#include "pipeline/calib_data.h"
#include "fixture_convert.h"

namespace sf {
namespace {

std::string convert_calib_fixture(const std::string& name, const std::string& scheme) {
  return test::convert_fixture(name, scheme, "sf-unit-calib-");
}

std::vector<int32_t> random_tokens(size_t n, int64_t vocab, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& id : t) id = int32_t(rng() % uint32_t(vocab));
  return t;
}

// Logits of each sequence through the entry point: embedding rows (+ learned positions), every
// block with run_block_on_sequences, then the head — as a calibration stage would chain them.
std::vector<float> logits_through_entry_point(const ExecModel& m, const std::vector<int32_t>& tokens, size_t n_seq,
                                              size_t ctx, ThreadPool* pool) {
  const ModelDesc& d = m.desc();
  const size_t D = size_t(d.d_model), V = size_t(d.vocab_size), rows = n_seq * ctx;
  std::vector<float> x(rows * D), pos(D), xn(rows * D), logits(rows * V);
  for (size_t t = 0; t < rows; ++t) {
    kernels::dequantize_row(m.embed(), tokens[t], &x[t * D]);
    if (m.pos_embed()) {
      const SequencePrefix p = sequence_prefix(d, &tokens[t - t % ctx], ctx);
      kernels::dequantize_row(*m.pos_embed(), place_row(d, p, int64_t(t % ctx)).pos_a, pos.data());
      for (size_t i = 0; i < D; ++i) x[t * D + i] += pos[i];
    }
  }
  for (int64_t l = 0; l < d.n_layers; ++l) run_block_on_sequences(d, m.layer(l), tokens.data(), x.data(), n_seq, ctx, pool, nullptr);
  kernels::norm(d.norm, x.data(), rows, D, m.head_norm(), m.head_norm_bias(), d.norm_eps, xn.data());
  kernels::matmul(m.output(), nullptr, xn.data(), rows, logits.data(), pool);
  return logits;
}

TEST(BlockEntryPoint, ComputesWhatSessionComputesBitForBit) {
  // A GQA LLaMA quantized, ChatGLM-6B (2-D RoPE, prefix-bidirectional, alpha residual), GPT-2
  // (learned positions, LayerNorm, GELU).
  // The last case has sequences long enough (1500) that they run two calls of at most 4096 rows.
  struct Case {
    const char *name, *scheme;
    size_t ctx;
  };
  const Case cases[] = {{"hf_gqa", "int4:g32", 12}, {"chatglm_6b", "f32", 12}, {"gpt2_hub", "q8_0", 12},
                        {"internlm2_bias", "int8", 12}, {"hf_gqa", "q4_0", 1500}};
  for (const auto& [name, scheme, ctx] : cases) {
    const std::string out = convert_calib_fixture(name, scheme);
    if (out.empty()) GTEST_SKIP() << "fixture " << name << " missing (ctest generates it)";
    {
      const ExecModel m(out);
      const size_t n_seq = 3, V = size_t(m.desc().vocab_size);
      std::vector<int32_t> tokens = random_tokens(n_seq * ctx, m.desc().vocab_size, 7);
      if (m.desc().mask == MaskKind::PrefixBidirectional) {
        // A prompt then generation in the second sequence: [gMASK] at 3, <sop> at 6.
        tokens[ctx + 3] = int32_t(m.desc().special.gmask);
        tokens[ctx + 6] = int32_t(m.desc().special.bos);
      }
      ThreadPool pool(2);
      const std::vector<float> got = logits_through_entry_point(m, tokens, n_seq, ctx, &pool);
      for (size_t s = 0; s < n_seq; ++s) {
        Session session(m, int64_t(ctx), nullptr);
        const float* want = session.forward(&tokens[s * ctx], ctx, 0);
        EXPECT_EQ(std::memcmp(want, &got[s * ctx * V], ctx * V * sizeof(float)), 0)
            << name << " " << scheme << " sequence " << s;
      }
    }
    std::filesystem::remove_all(out);
  }
}

// One block's f32 weights, owned here, and views over them.
struct OwnedBlock {
  std::map<std::string, std::vector<float>> values;  // by name after "blocks.0."
  std::map<std::string, std::vector<int64_t>> shapes;
  std::vector<TensorView> views;

  OwnedBlock(const ExecModel& m) {
    const std::string prefix = block_prefix(0);
    for (const auto& spec : unit_tensors(m.desc(), UnitKind::Block, 0)) {
      const TensorView& v = m.artifact().tensor(spec.name);
      const float* f = reinterpret_cast<const float*>(v.data);
      const std::string n = spec.name.substr(prefix.size());
      values[n].assign(f, f + v.nbytes / sizeof(float));
      shapes[n] = v.shape;
    }
  }
  LayerWeights weights() { return f32_block_views(values, shapes, views); }
  BlockValues lookup() {
    return [this](const std::string& n) { return values.count(n) ? &values[n] : nullptr; };
  }
};

std::vector<float> run_block(const ModelDesc& d, OwnedBlock& b, const std::vector<int32_t>& tokens,
                             const std::vector<float>& x0, size_t n_seq, size_t ctx) {
  std::vector<float> x = x0;
  run_block_on_sequences(d, b.weights(), tokens.data(), x.data(), n_seq, ctx, nullptr, nullptr);
  return x;
}

double max_relative_difference(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0, scale = 0;
  for (float v : a) scale = std::max(scale, double(std::fabs(v)));
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, double(std::fabs(a[i] - b[i])));
  return worst / std::max(scale, 1e-30);
}

TEST(AwqFold, LeavesTheF32BlockUnchangedWhereTheRulesAllowAndChangesItWhereTheyRefuse) {
  // hf_tied: LLaMA with n_kv == n_heads (all four groups fold); gpt2_hub: LayerNorm with bias and
  // a GELU FFN; chatglm_6b: the alpha residual; meta_params: grouped-query attention.
  for (const char* name : {"hf_tied", "gpt2_hub", "chatglm_6b", "meta_params"}) {
    const std::string out = convert_calib_fixture(name, "f32");
    if (out.empty()) GTEST_SKIP() << "fixture " << name << " missing (ctest generates it)";
    {
      const ExecModel m(out);
      const ModelDesc& d = m.desc();
      const size_t n_seq = 2, ctx = 10, D = size_t(d.d_model);
      const std::vector<int32_t> tokens = random_tokens(n_seq * ctx, d.vocab_size, 3);
      std::mt19937 rng(11);
      std::normal_distribution<float> normal(0.0f, 1.0f);
      std::vector<float> x0(n_seq * ctx * D);
      for (auto& v : x0) v = normal(rng);
      std::uniform_real_distribution<float> scale(0.25f, 4.0f);
      for (const auto& rule : awq_fold_rules()) {
        OwnedBlock block(m);
        const std::vector<float> want = run_block(d, block, tokens, x0, n_seq, ctx);
        std::vector<float> s(group_width(d, rule.input));
        for (auto& v : s) v = scale(rng);
        const std::string what = std::string(name) + " " + linear_input_name(rule.input);
        if (!rule.cannot_fold(d)) {
          awq_fold(d, rule.input, s, block.lookup());
          EXPECT_LT(max_relative_difference(want, run_block(d, block, tokens, x0, n_seq, ctx)), 1e-5) << what;
          continue;
        }
        EXPECT_THROW(awq_fold(d, rule.input, s, block.lookup()), Error) << what;
        // The fold done by hand anyway (columns times s, the op before divided by s; for GQA, o's
        // columns against v's shared rows as if they were not shared): the block's output moves.
        for (const auto& n : group_linears(d, rule.input)) {
          auto& w = block.values[n];
          for (size_t i = 0; i < w.size(); ++i) w[i] *= s[i % s.size()];
        }
        for (const std::string suffix : {".weight", ".bias"}) {
          auto it = block.values.find(std::string(rule.preceding) + suffix);
          if (it == block.values.end()) continue;
          auto& p = it->second;
          const size_t outputs = std::min(p.size(), block.shapes[it->first].size() == 2
                                                        ? size_t(block.shapes[it->first][0])
                                                        : p.size());
          const size_t per = p.size() / outputs;
          for (size_t j = 0; j < outputs; ++j)
            for (size_t i = 0; i < per; ++i) p[j * per + i] /= s[j % s.size()];
        }
        EXPECT_GT(max_relative_difference(want, run_block(d, block, tokens, x0, n_seq, ctx)), 1e-3) << what;
      }
    }
    std::filesystem::remove_all(out);
  }
}

// Gathers every group's input statistics of a block run.
struct Gather : BlockTap {
  InputStats stats[kLinearInputs];
  Gather(const ModelDesc& d) {
    for (size_t g = 0; g < kLinearInputs; ++g) stats[g].reset(group_width(d, LinearInput(g)), true, 7);
  }
  void input(LinearInput where, const float* x, size_t rows, size_t) override {
    stats[size_t(where)].add(x, rows, nullptr);
  }
};

void expect_close(const std::vector<double>& a, const std::vector<double>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  double scale = 0;
  for (double v : a) scale = std::max(scale, std::fabs(v));
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-4 * scale) << what << " [" << i << "]";
}

TEST(AwqFold, RescaledStatisticsAreThoseOfTheFoldedBlocksInputs) {
  const std::string out = convert_calib_fixture("hf_tied", "f32");
  if (out.empty()) GTEST_SKIP() << "fixture hf_tied missing (ctest generates it)";
  {
    const ExecModel m(out);
    const ModelDesc& d = m.desc();
    const size_t n_seq = 2, ctx = 9;
    const std::vector<int32_t> tokens = random_tokens(n_seq * ctx, d.vocab_size, 5);
    std::mt19937 rng(2);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> x0(n_seq * ctx * size_t(d.d_model));
    for (auto& v : x0) v = normal(rng);
    std::uniform_real_distribution<float> scale(0.25f, 4.0f);
    OwnedBlock block(m);
    Gather before(d);
    std::vector<float> x = x0;
    run_block_on_sequences(d, block.weights(), tokens.data(), x.data(), n_seq, ctx, nullptr, &before);
    // Every group folded at once, as the stage does; each group's statistics rescaled by its scales.
    for (const auto& rule : awq_fold_rules()) {
      std::vector<float> s(group_width(d, rule.input));
      for (auto& v : s) v = scale(rng);
      awq_fold(d, rule.input, s, block.lookup());
      rescale_stats(before.stats[size_t(rule.input)], s);
    }
    Gather after(d);
    x = x0;
    run_block_on_sequences(d, block.weights(), tokens.data(), x.data(), n_seq, ctx, nullptr, &after);
    for (size_t g = 0; g < kLinearInputs; ++g) {
      const std::string what = linear_input_name(LinearInput(g));
      expect_close(before.stats[g].sum_sq, after.stats[g].sum_sq, what + " sum_sq");
      expect_close(before.stats[g].sum_abs, after.stats[g].sum_abs, what + " sum_abs");
      expect_close(before.stats[g].gram, after.stats[g].gram, what + " gram");
      const auto& a = before.stats[g].sample;
      const auto& b = after.stats[g].sample;
      expect_close(std::vector<double>(a.begin(), a.end()), std::vector<double>(b.begin(), b.end()), what + " sample");
    }
  }
  std::filesystem::remove_all(out);
}

TEST(CalibData, WindowsOfAnIdsFileAndItsRefusals) {
  ModelDesc d;
  d.vocab_size = 50;
  const std::string dir = (std::filesystem::temp_directory_path() / ("sf-unit-calib-data-" + std::to_string(::getpid()))).string();
  std::filesystem::create_directories(dir);
  auto write = [&](const std::string& name, const std::string& text) {
    const std::string p = dir + "/" + name;
    FILE* f = std::fopen(p.c_str(), "w");
    std::fputs(text.c_str(), f);
    std::fclose(f);
    return p;
  };
  std::string list;
  for (int i = 0; i < 23; ++i) list += std::to_string(i) + (i % 5 == 4 ? "\n" : ", ");
  const std::string good = write("good.ids", list);
  // No tokenizer: the ids as given, in windows of ctx; 23 ids, at most 20 wanted: 3 windows of 6.
  const CalibData c = read_calib_data(parse_calib_spec("ids:" + good), nullptr, d, 20, 6);
  EXPECT_EQ(c.n_seq, 3u);
  EXPECT_EQ(c.file_tokens, 23u);
  ASSERT_EQ(c.tokens.size(), 18u);
  for (size_t i = 0; i < 18; ++i) EXPECT_EQ(c.tokens[i], int32_t(i));
  EXPECT_EQ(c.sha256.size(), 64u);
  EXPECT_EQ(recorded_calib_spec(parse_calib_spec("ids:" + good)), "ids:good.ids");
  auto message = [&](const std::function<void()>& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([&] { read_calib_data(parse_calib_spec("ids:" + good), nullptr, d, 100, 24); })
                .find("fewer than one calibration sequence"),
            std::string::npos);
  const std::string bad = write("bad.ids", "1 2 50");
  EXPECT_NE(message([&] { read_calib_data(parse_calib_spec("ids:" + bad), nullptr, d, 100, 2); }).find("bad.ids"),
            std::string::npos);
  EXPECT_NE(message([&] { read_calib_data(parse_calib_spec(good), nullptr, d, 100, 2); }).find("tokenizer"),
            std::string::npos);
  // Context: 512 by default, capped at a stated context; a learned table bounds a given one.
  EXPECT_EQ(calib_ctx(d, 0), 512);
  d.max_seq = 128;
  EXPECT_EQ(calib_ctx(d, 0), 128);
  EXPECT_EQ(calib_ctx(d, 300), 300);  // RoPE: longer than trained is the user's choice
  d.positional = PositionalKind::Learned;
  EXPECT_THROW(calib_ctx(d, 300), Error);
  // The refusal names the setting as the caller gives it: the option, or a pipeline stage's key.
  EXPECT_NE(message([&] { calib_ctx(d, 300); }).find("--calib-ctx 300"), std::string::npos);
  const std::string key = message([&] { calib_ctx(d, 300, "calib_mse stage: 'ctx'"); });
  EXPECT_NE(key.find("calib_mse stage: 'ctx' 300"), std::string::npos) << key;
  EXPECT_EQ(key.find("--calib-ctx"), std::string::npos) << key;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace sf
