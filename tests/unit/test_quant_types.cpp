#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/model_desc.h"
#include "core/quant_types.h"
#include "quantizers/policy.h"
#include "quantizers/scheme.h"

namespace sf {
namespace {

std::vector<float> random_row(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Largest error any element may have: half a quantization step of its group, plus f16 scale rounding.
double step_bound(QType t, const std::vector<float>& x, size_t b, size_t e) {
  float lo = x[b], hi = x[b], amax = 0;
  for (size_t i = b; i < e; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
    amax = std::max(amax, std::fabs(x[i]));
  }
  switch (t) {
    case QType::Int8: return amax / 127.0 * 0.5 + 1e-6;
    case QType::Int4Sym: return amax / 8.0 * 0.5 * 1.01 + 1e-3 * amax;
    case QType::Int4Asym: return (hi - lo) / 15.0 * 0.5 * 1.01 + 2e-3 * std::max(std::fabs(lo), std::fabs(hi));
    case QType::F16: return amax * std::ldexp(1.0, -11);
    case QType::BF16: return amax * std::ldexp(1.0, -8);
    case QType::F32: return 0;
    // Blocks of 32 with an f16 scale: half a step of the block's largest magnitude.
    case QType::Q8_0: return amax / 127.0 * 0.5 + amax * std::ldexp(1.0, -11) * 1.01;  // codes use the unrounded scale
    case QType::Q4_0: return amax / 8.0 * 0.5 * 1.01 + 1e-3 * amax;
  }
  return 0;
}

struct Case { QType type; size_t group; };

TEST(QuantTypes, RoundTripErrorIsWithinHalfAStepForEveryWidth) {
  const Case cases[] = {{QType::F32, 0}, {QType::F16, 0}, {QType::BF16, 0}, {QType::Int8, 0},
                        {QType::Int4Sym, 32}, {QType::Int4Sym, 64}, {QType::Int4Sym, 128},
                        {QType::Int4Asym, 32}, {QType::Int4Asym, 128}, {QType::Q8_0, 32}, {QType::Q4_0, 32}};
  for (const Case& c : cases) {
    const auto& tr = qtype_traits(c.type);
    for (size_t cols : {1, 2, 7, 31, 32, 33, 100, 172, 300}) {
      SCOPED_TRACE(std::string(tr.name) + " cols=" + std::to_string(cols) + " g=" + std::to_string(c.group));
      const auto x = random_row(cols, uint32_t(cols * 31 + c.group));
      std::vector<uint8_t> q(tr.row_bytes(cols, c.group), 0xAB);
      tr.quantize_row(x.data(), cols, c.group, q.data());
      std::vector<float> y(cols);
      tr.dequantize_row(q.data(), cols, c.group, y.data());
      const size_t g = c.group ? c.group : cols;  // q8_0/q4_0: their fixed block of 32
      for (size_t b = 0; b < cols; b += g) {
        const size_t e = std::min(cols, b + g);
        const double bound = step_bound(c.type, x, b, e);
        for (size_t i = b; i < e; ++i) {
          // Symmetric int4 spans [-8d, 7d] with d signed so the largest magnitude is exactly -8d:
          // a value of the other sign beyond 7|d| is clamped, costing up to one whole step.
          const bool clamped = (c.type == QType::Int4Sym || c.type == QType::Q4_0) && std::fabs(x[i]) > bound * 2 * 7 / 1.01;
          ASSERT_LE(std::fabs(double(x[i]) - y[i]), clamped ? 2 * bound : bound) << "i=" << i;
        }
      }
      // The fused dot product computes the same thing as dequantize-then-dot.
      const auto v = random_row(cols, 7);
      double want = 0, mag = 0;
      for (size_t i = 0; i < cols; ++i) {
        want += double(y[i]) * v[i];
        mag += std::fabs(double(y[i]) * v[i]);
      }
      EXPECT_NEAR(tr.dot_row(q.data(), v.data(), cols, c.group), want, 1e-5 * mag + 1e-6);
    }
  }
}

TEST(QuantTypes, RowBytesFollowTheLayout) {
  EXPECT_EQ(qtype_traits(QType::Int4Sym).row_bytes(172, 32), 6 * 2 + 86u);   // 6 groups, last one 12 wide
  EXPECT_EQ(qtype_traits(QType::Int4Asym).row_bytes(172, 256), 1 * 4 + 86u); // group larger than the row
  EXPECT_EQ(qtype_traits(QType::Int4Sym).row_bytes(33, 32), 2 * 2 + 17u);    // odd width: last byte half used
  EXPECT_EQ(qtype_traits(QType::Q4_0).row_bytes(33, 0), 2 * 18u);              // ggml blocks: the last one padded
  EXPECT_EQ(qtype_traits(QType::Q8_0).row_bytes(64, 0), 2 * 34u);
  EXPECT_EQ(qtype_traits(QType::Int8).row_bytes(64, 0), 4 + 64u);
  EXPECT_EQ(qtype_traits(QType::BF16).row_bytes(64, 0), 128u);
}

TEST(QuantTypes, SymmetricInt4MapsTheLargestMagnitudeExactly) {
  const std::vector<float> x = {0.5f, -2.0f, 1.0f, 0.25f};
  const auto& tr = qtype_traits(QType::Int4Sym);
  std::vector<uint8_t> q(tr.row_bytes(4, 32));
  tr.quantize_row(x.data(), 4, 32, q.data());
  std::vector<float> y(4);
  tr.dequantize_row(q.data(), 4, 32, y.data());
  EXPECT_EQ(y[1], -2.0f);
  EXPECT_EQ(y[2], 1.0f);
}

TEST(QuantTypes, ZeroRowsStayZero) {
  for (QType t : {QType::Int8, QType::Int4Sym, QType::Int4Asym, QType::Q8_0, QType::Q4_0}) {
    const auto& tr = qtype_traits(t);
    std::vector<float> x(40, 0.0f), y(40, 1.0f);
    std::vector<uint8_t> q(tr.row_bytes(40, 32));
    tr.quantize_row(x.data(), 40, 32, q.data());
    tr.dequantize_row(q.data(), 40, 32, y.data());
    for (float v : y) EXPECT_EQ(v, 0.0f) << tr.name;
  }
}

// The quantize stage refuses values a type cannot hold by decoding each encoded row and looking for
// inf/nan. That check rests on these: ordinary rows decode finite in every type, and a value past a
// type's range decodes non-finite (directly, or through an overflowing group scale).
TEST(QuantTypes, OverflowDecodesNonFiniteAndOrdinaryRowsDoNot) {
  const std::vector<float> ordinary = random_row(64, 7);
  std::vector<float> big = ordinary;
  big[9] = 1e6f;  // past f16's 65504, and past what an f16 int4 scale (x/8, or range/15) can hold
  for (QType t : {QType::F32, QType::F16, QType::BF16, QType::Int8, QType::Int4Sym, QType::Int4Asym, QType::Q8_0,
                  QType::Q4_0}) {
    const auto& tr = qtype_traits(t);
    auto decoded_finite = [&](const std::vector<float>& x) {
      std::vector<uint8_t> q(tr.row_bytes(x.size(), 32));
      std::vector<float> y(x.size());
      tr.quantize_row(x.data(), x.size(), 32, q.data());
      tr.dequantize_row(q.data(), x.size(), 32, y.data());
      for (float v : y)
        if (!std::isfinite(v)) return false;
      return true;
    };
    EXPECT_TRUE(decoded_finite(ordinary)) << tr.name;
    // q8_0's f16 scale is 1e6/127, inside f16's range; q4_0's is 1e6/8, past it.
    const bool holds_1e6 = t == QType::F32 || t == QType::BF16 || t == QType::Int8 || t == QType::Q8_0;
    EXPECT_EQ(decoded_finite(big), holds_1e6) << tr.name;
  }
}

TEST(Scheme, ContradictoryOrRepeatedOptionsAreUsageErrors) {
  for (const char* bad : {"int4:sym:asym", "int4:asym:sym", "int4:sym:sym", "int4:g32:g64", "int4:g32:g32", "int4:",
                          "int4::g32", "", "int3", "f16:g32"}) {
    try {
      parse_scheme(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Usage) << bad;
    }
  }
}

TEST(Policy, ReportsOverridesMatchingNoTensor) {
  Policy p(parse_scheme("int8"));
  p.add_override("blocks.*.ffn.up.weight=f16");
  p.add_override("blocks.*.mlp.up_proj.weight=f16");  // a source name, not a canonical one
  EXPECT_EQ(p.unmatched_overrides({"embed.weight", "blocks.0.ffn.up.weight"}),
            std::vector<std::string>{"blocks.*.mlp.up_proj.weight=f16"});
}

TEST(Scheme, ParsesNamesAndRejectsTheRest) {
  EXPECT_EQ(parse_scheme("int4"), (Scheme{QType::Int4Sym, 32}));
  EXPECT_EQ(parse_scheme("int4:g128:asym"), (Scheme{QType::Int4Asym, 128}));
  EXPECT_EQ(parse_scheme("q4_0"), (Scheme{QType::Q4_0, 0}));
  EXPECT_EQ(parse_scheme("q8_0"), (Scheme{QType::Q8_0, 0}));
  EXPECT_EQ(parse_scheme("int4:asym:g64").name(), "int4:g64:asym");
  EXPECT_EQ(parse_scheme("bf16"), (Scheme{QType::BF16, 0}));
  EXPECT_THROW(parse_scheme("int3"), Error);
  EXPECT_THROW(parse_scheme("int8:g32"), Error);
  EXPECT_THROW(parse_scheme("int4:g33"), Error);
  EXPECT_THROW(parse_scheme("int4:gx"), Error);
}

// A model with every optional tensor: biases, norm biases, learned positions, an untied head.
ModelDesc every_role_model() {
  ModelDesc m;
  m.vocab_size = 64, m.d_model = 16, m.n_layers = 4, m.n_heads = 2, m.n_kv_heads = 2, m.head_dim = 8;
  m.ffn_dim = 32, m.norm = NormKind::Layer, m.norm_bias = true, m.ffn = FfnKind::GeluTanh;
  m.positional = PositionalKind::Learned, m.rope_dims = 0, m.max_seq = 16, m.biases = {true, true, true};
  m.validate();
  return m;
}

TensorSpec spec(const std::string& name) {
  for (const auto& t : all_tensors(every_role_model()))
    if (t.name == name) return t;
  ADD_FAILURE() << "no tensor " << name;
  return {};
}

TEST(Policy, DefaultsFollowTheRole) {
  Policy p(parse_scheme("int4:g64"));
  EXPECT_EQ(p.scheme_for(spec("blocks.0.attn_norm.weight")).type, QType::F32);
  EXPECT_EQ(p.scheme_for(spec("blocks.0.attn_norm.bias")).type, QType::F32);
  EXPECT_EQ(p.scheme_for(spec("blocks.1.attn.q.bias")).type, QType::F32);
  EXPECT_EQ(p.scheme_for(spec("blocks.1.ffn.down.bias")).type, QType::F32);
  EXPECT_EQ(p.scheme_for(spec("head.norm.bias")).type, QType::F32);
  EXPECT_EQ(p.scheme_for(spec("embed.weight")).type, QType::Int8);
  EXPECT_EQ(p.scheme_for(spec("embed.pos.weight")).type, QType::Int8);
  EXPECT_EQ(p.scheme_for(spec("head.output.weight")).type, QType::Int8);
  EXPECT_EQ(p.scheme_for(spec("blocks.3.ffn.up.weight")), (Scheme{QType::Int4Sym, 64}));
  Policy f(parse_scheme("f16"));
  EXPECT_EQ(f.scheme_for(spec("embed.weight")).type, QType::F16);
  EXPECT_EQ(f.scheme_for(spec("embed.pos.weight")).type, QType::F16);
  EXPECT_EQ(f.scheme_for(spec("head.norm.weight")).type, QType::F32);
  EXPECT_EQ(f.scheme_for(spec("blocks.2.attn.o.bias")).type, QType::F32);
}

TEST(Policy, OverridesWinByName) {
  Policy p(parse_scheme("int4:g64"));
  p.add_override("blocks.*.ffn.*=int8");
  p.add_override("*_norm.weight=bf16");
  EXPECT_EQ(p.scheme_for(spec("blocks.3.ffn.up.weight")).type, QType::Int8);
  EXPECT_EQ(p.scheme_for(spec("blocks.3.ffn.up.bias")).type, QType::Int8);
  EXPECT_EQ(p.scheme_for(spec("blocks.3.attn.q.weight")).type, QType::Int4Sym);
  EXPECT_EQ(p.scheme_for(spec("blocks.0.ffn_norm.weight")).type, QType::BF16);
  EXPECT_EQ(p.scheme_for(spec("blocks.0.ffn_norm.bias")).type, QType::F32);
  EXPECT_THROW(p.add_override("no-equals-sign"), Error);
}

TEST(ModelDesc, TensorsFollowTheSettings) {
  ModelDesc m = every_role_model();
  std::map<std::string, TensorSpec> by_name;
  for (const auto& t : all_tensors(m)) by_name[t.name] = t;
  EXPECT_EQ(by_name.size(), 1u + 1 + 4 * 16 + 3);  // embed, pos; 16 per block (no gate); norm w/b, output
  EXPECT_EQ(by_name["embed.pos.weight"].shape, (std::vector<int64_t>{16, 16}));
  EXPECT_EQ(by_name["blocks.2.attn.q.bias"].layer, 2);
  EXPECT_EQ(by_name["blocks.2.attn.q.bias"].role, TensorRole::LinearBias);
  EXPECT_EQ(by_name["head.output.weight"].layer, -1);
  EXPECT_FALSE(by_name.count("blocks.0.ffn.gate.weight"));
  m.ffn = FfnKind::SiluGated, m.norm = NormKind::RMS, m.norm_bias = false, m.biases = {};
  m.positional = PositionalKind::Rope, m.rope_dims = 8, m.tied_embeddings = true;
  by_name.clear();
  for (const auto& t : all_tensors(m)) by_name[t.name] = t;
  EXPECT_EQ(by_name.size(), 1u + 4 * 9 + 1);
  EXPECT_TRUE(by_name.count("blocks.3.ffn.gate.weight"));
}

TEST(ModelDesc, RoundTripsAndRefusesWhatTheExecutorDoesNotImplement) {
  const ModelDesc m = every_role_model();
  EXPECT_EQ(ModelDesc::from_json(m.to_json()), m);
  for (const auto& [key, value] : std::vector<std::pair<std::string, json>>{
           {"norm", "group"}, {"ffn", "relu"}, {"positional", "alibi"}, {"residual", "post_norm"},
           {"mask", "sliding"}, {"rope_layout", "half"}, {"norm_bias", "yes"}, {"biases", json::array()}}) {
    json j = m.to_json();
    j[key] = value;
    try {
      ModelDesc::from_json(j);
      ADD_FAILURE() << key << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(e.message().find(key), std::string::npos) << e.message();
    }
  }
  json j = m.to_json();
  j.erase("positional");
  EXPECT_THROW(ModelDesc::from_json(j), Error);
  j = m.to_json();
  j["max_seq"] = 0;  // learned positions need their table's size
  EXPECT_THROW(ModelDesc::from_json(j), Error);
}

}  // namespace
}  // namespace sf
