// The backward pass end-to-end scale tuning relies on: its forward pass against the executor's
// block (an independent implementation), and every gradient against central differences of that
// forward pass in double precision of the loss.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>

#include "executor/block.h"
#include "f32_block_views.h"
#include "formats/shard_file.h"
#include "core/thread_pool.h"
#include "quantizers/block_backprop.h"
#include "quantizers/scale_tune.h"

namespace sf {
namespace {

// Three settings the backward pass covers: LLaMA's (RMS norm, RoPE, grouped kv heads, gated FFN),
// GPT-2's (layer norm with biases, learned positions, GELU FFN, linear biases) and partial RoPE
// with q/k/v biases (InternLM2 / ChatGLM2 style).
ModelDesc desc_of(int kind) {
  ModelDesc d;
  d.d_model = 12, d.n_heads = 4, d.n_kv_heads = 2, d.head_dim = 4, d.ffn_dim = 10, d.n_layers = 1, d.vocab_size = 9;
  d.rope_dims = 4;
  if (kind == 1) {
    d.family = "gpt2";
    d.norm = NormKind::Layer, d.norm_bias = true, d.ffn = FfnKind::GeluTanh, d.positional = PositionalKind::Learned;
    d.rope_dims = 0, d.n_kv_heads = 4;
    d.biases = {true, true, true};
  }
  if (kind == 2) d.rope_dims = 2, d.biases.qkv = true, d.rope_theta = 500.0;
  return d;
}

struct RandomBlock {
  std::map<std::string, std::vector<float>> values;  // by name after "blocks.0."
  std::map<std::string, std::vector<int64_t>> shapes;
  std::vector<TensorView> views;

  RandomBlock(const ModelDesc& d, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd;
    const std::string prefix = block_prefix(0);
    for (const auto& spec : unit_tensors(d, UnitKind::Block, 0)) {
      const std::string n = spec.name.substr(prefix.size());
      size_t count = 1;
      for (auto s : spec.shape) count *= size_t(s);
      auto& v = values[n];
      v.resize(count);
      const float scale = spec.role == TensorRole::LinearWeight ? 1.0f / std::sqrt(float(spec.shape.back())) : 0.2f;
      for (auto& x : v) x = nd(rng) * scale + (spec.role == TensorRole::NormWeight ? 1.0f : 0.0f);
      shapes[n] = spec.shape;
    }
  }
  BlockWeightsF32 f32() {
    return block_weights_f32([this](const std::string& n) { return values.count(n) ? values[n].data() : nullptr; });
  }
  LayerWeights exec() { return f32_block_views(values, shapes, views); }
};

std::vector<float> random_rows(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<float> x(n);
  for (auto& v : x) v = nd(rng);
  return x;
}

TEST(BlockBackprop, ForwardIsTheExecutorsBlock) {
  for (int kind = 0; kind < 3; ++kind) {
    const ModelDesc d = desc_of(kind);
    RandomBlock b(d, 7 + unsigned(kind));
    const size_t ctx = 5, n_seq = 3, D = size_t(d.d_model);
    const std::vector<float> x0 = random_rows(n_seq * ctx * D, 11);
    std::vector<float> ours = x0, exec = x0;
    BlockBackprop bp(d, ctx);
    bp.forward(b.f32(), ours.data(), n_seq);
    const std::vector<int32_t> tokens(n_seq * ctx, 1);
    run_block_on_sequences(d, b.exec(), tokens.data(), exec.data(), n_seq, ctx, nullptr, nullptr);
    for (size_t i = 0; i < ours.size(); ++i) ASSERT_NEAR(ours[i], exec[i], 1e-4 * (1 + std::fabs(exec[i]))) << kind << " " << i;
    double moved = 0;
    for (size_t i = 0; i < ours.size(); ++i) moved += std::fabs(ours[i] - x0[i]);
    EXPECT_GT(moved, 0.1 * double(ours.size()));  // the block did something
  }
}

// L = sum c . block(x): dL/dy = c. Its derivative by x and by each linear's weights against central
// differences (steps of 1e-2 on values of order 1; the forward pass is f32, so 2e-3 of tolerance).
TEST(BlockBackprop, GradientsAreTheLossDerivatives) {
  for (int kind = 0; kind < 3; ++kind) {
    const ModelDesc d = desc_of(kind);
    RandomBlock b(d, 21 + unsigned(kind));
    const size_t ctx = 4, n_seq = 2, D = size_t(d.d_model), n = n_seq * ctx * D;
    const std::vector<float> x0 = random_rows(n, 5), c = random_rows(n, 6);
    BlockBackprop bp(d, ctx);
    auto loss = [&](const std::vector<float>& x) {
      std::vector<float> y = x;
      BlockBackprop f(d, ctx);
      f.forward(b.f32(), y.data(), n_seq);
      double l = 0;
      for (size_t i = 0; i < n; ++i) l += double(c[i]) * y[i];
      return l;
    };
    std::vector<float> y = x0, dx = c;
    bp.forward(b.f32(), y.data(), n_seq);
    BlockLinearGrads g;
    for (size_t i = 0; i < kBlockLinears; ++i) {
      const std::string name = std::string(block_linear_name(BlockLinear(i))) + ".weight";
      if (b.values.count(name)) g.dw[i].assign(b.values[name].size(), 0.0f);
    }
    bp.backward(b.f32(), dx.data(), g);
    const float h = 1e-2f;
    auto central = [&](float& v, const std::vector<float>& x) {
      const float keep = v;
      v = keep + h;
      const double up = loss(x);
      v = keep - h;
      const double down = loss(x);
      v = keep;
      return (up - down) / (2 * h);
    };
    std::vector<float> xs = x0;
    for (size_t i = 0; i < n; i += 7) {
      const double num = central(xs[i], xs);
      EXPECT_NEAR(dx[i], num, 2e-3 * (1 + std::fabs(num))) << "kind " << kind << " dx[" << i << "]";
    }
    int checked = 0;
    for (size_t l = 0; l < kBlockLinears; ++l) {
      if (g.dw[l].empty()) continue;
      auto& w = b.values[std::string(block_linear_name(BlockLinear(l))) + ".weight"];
      for (size_t i = 0; i < w.size(); i += 5, ++checked) {
        const double num = central(w[i], x0);
        EXPECT_NEAR(g.dw[l][i], num, 2e-3 * (1 + std::fabs(num))) << "kind " << kind << " " << block_linear_name(BlockLinear(l)) << "[" << i << "]";
      }
    }
    EXPECT_GT(checked, 50);
  }
}

TEST(BlockBackprop, HeadKlIsZeroAtTheReferenceAndItsGradientTheDerivative) {
  for (int kind = 0; kind < 2; ++kind) {
    const ModelDesc d = desc_of(kind);
    const size_t n = 6, D = size_t(d.d_model), V = size_t(d.vocab_size);
    const std::vector<float> x0 = random_rows(n * D, 3), out = random_rows(V * D, 4), xr = random_rows(n * D, 8);
    std::vector<float> nw = random_rows(D, 9), nb = random_rows(D, 10);
    for (auto& v : nw) v = 1 + 0.2f * v;
    const float* bias = d.norm_bias ? nb.data() : nullptr;
    std::vector<float> ref(n * V), dx(n * D);
    head_log_probs(d, nw.data(), bias, out.data(), x0.data(), n, ref.data());
    for (size_t t = 0; t < n; ++t) {
      double s = 0;
      for (size_t v = 0; v < V; ++v) s += std::exp(double(ref[t * V + v]));
      EXPECT_NEAR(s, 1.0, 1e-5);
    }
    EXPECT_NEAR(head_kl_backward(d, nw.data(), bias, out.data(), x0.data(), ref.data(), n, dx.data()), 0.0, 1e-6);
    for (float v : dx) EXPECT_NEAR(v, 0.0f, 1e-5);
    // Away from the reference: positive, and its gradient the derivative.
    std::vector<float> x = xr;
    const double kl = head_kl_backward(d, nw.data(), bias, out.data(), x.data(), ref.data(), n, dx.data());
    EXPECT_GT(kl, 1e-3);
    std::vector<float> scratch(n * D);
    for (size_t i = 0; i < n * D; i += 3) {
      const float keep = x[i], h = 1e-2f;
      x[i] = keep + h;
      const double up = head_kl_backward(d, nw.data(), bias, out.data(), x.data(), ref.data(), n, scratch.data());
      x[i] = keep - h;
      const double down = head_kl_backward(d, nw.data(), bias, out.data(), x.data(), ref.data(), n, scratch.data());
      x[i] = keep;
      const double num = (up - down) / (2 * h);
      EXPECT_NEAR(dx[i], num, 2e-3 * (1 + std::fabs(num))) << "kind " << kind << " dx[" << i << "]";
    }
  }
}

TEST(BlockBackprop, RefusesWhatItDoesNotImplement) {
  ModelDesc d = desc_of(0);
  EXPECT_EQ(backprop_unsupported(d), nullptr);
  d.positional = PositionalKind::Rope2D;
  EXPECT_NE(backprop_unsupported(d), nullptr);
  d = desc_of(0);
  d.mask = MaskKind::PrefixBidirectional;
  EXPECT_NE(backprop_unsupported(d), nullptr);
}

// Every integer type's rescale_group multiplies the values of one scale group, and only those, by
// the factor (up to the rounding of its stored scales), leaving the codes as they were.
TEST(ScaleTune, RescaleGroupScalesOneGroupThroughItsScales) {
  const size_t cols = 70, group = 16;
  const std::vector<float> x = random_rows(cols, 12);
  for (QType t : {QType::Int8, QType::Int4Sym, QType::Int4Asym, QType::Q8_0, QType::Q4_0}) {
    const QTypeTraits& tr = qtype_traits(t);
    ASSERT_NE(tr.rescale_group, nullptr) << tr.name;
    std::vector<uint8_t> row(tr.row_bytes(cols, group));
    tr.quantize_row(x.data(), cols, group, row.data());
    std::vector<float> before(cols), after(cols);
    tr.dequantize_row(row.data(), cols, group, before.data());
    const size_t width = tr.scale_width(cols, group), groups = (cols + width - 1) / width, g = groups - 1;
    const float f = 1.3f;
    std::vector<uint8_t> scaled = row;
    tr.rescale_group(scaled.data(), cols, group, g, f);
    tr.dequantize_row(scaled.data(), cols, group, after.data());
    size_t changed_bytes = 0;
    for (size_t i = 0; i < row.size(); ++i) changed_bytes += row[i] != scaled[i];
    EXPECT_LE(changed_bytes, 4u) << tr.name;  // one f32 or one or two f16 stored scales
    EXPECT_GT(changed_bytes, 0u) << tr.name;
    for (size_t c = 0; c < cols; ++c) {
      const float want = c / width == g ? before[c] * f : before[c];
      EXPECT_NEAR(after[c], want, 2e-3f * std::fabs(want) + 1e-7f) << tr.name << " col " << c;
    }
  }
  EXPECT_EQ(qtype_traits(QType::F16).rescale_group, nullptr);
}

// A two-block model whose linears are int4 encodings of random weights, the reference its f32
// weights: tuning lowers the KL divergence, changes scales and never codes, and gives the same
// bytes on one thread or three.
TEST(ScaleTune, LowersTheKlThroughScalesAloneWhateverTheThreads) {
  ModelDesc d = desc_of(0);
  d.n_layers = 2;
  const size_t ctx = 6, n_seq = 4, D = size_t(d.d_model), V = size_t(d.vocab_size), group = 4;
  std::vector<RandomBlock> blocks = {RandomBlock(d, 31), RandomBlock(d, 32)};
  const std::vector<float> x0 = random_rows(n_seq * ctx * D, 33), out = random_rows(V * D, 34);
  std::vector<float> norm(D, 1.0f), ref = x0;
  BlockBackprop f32(d, ctx);
  for (auto& b : blocks) f32.forward(b.f32(), ref.data(), n_seq);
  auto encode = [&](RandomBlock& b) {
    std::vector<EncodedTensor> enc;
    for (size_t i = 0; i < kBlockLinears; ++i) {
      const std::string name = std::string(block_linear_name(BlockLinear(i))) + ".weight";
      EncodedTensor e;
      e.name = name, e.type = QType::Int4Sym, e.group = group, e.shape = b.shapes[name];
      const size_t rows = size_t(e.rows()), cols = size_t(e.cols()), rb = e.row_bytes();
      e.data.resize(rows * rb);
      for (size_t r = 0; r < rows; ++r)
        qtype_traits(e.type).quantize_row(&b.values[name][r * cols], cols, group, &e.data[r * rb]);
      enc.push_back(std::move(e));
    }
    return enc;
  };
  auto tune = [&](size_t threads, std::vector<std::vector<EncodedTensor>>& enc) {
    ScaleTuneModel m{d, ctx, n_seq, x0.data(), ref.data(), norm.data(), nullptr, out.data(), {}};
    for (size_t b = 0; b < blocks.size(); ++b) {
      TuneBlock tb;
      tb.f32 = blocks[b].f32();
      for (size_t i = 0; i < kBlockLinears; ++i) {
        const EncodedTensor& e = enc[b][i];
        tb.encoded[i] = {e.name, e.type, e.group, size_t(e.rows()), size_t(e.cols()), e.data.data()};
      }
      m.blocks.push_back(tb);
    }
    ScaleTuneParams p;
    p.steps = 40, p.lr = 1e-2, p.batch = 2;
    ThreadPool pool(threads);
    const ScaleTuneResult r = tune_scales(m, p, pool);
    if (r.kept)
      for (size_t b = 0; b < blocks.size(); ++b)
        for (size_t i = 0; i < kBlockLinears; ++i) {
          EncodedTensor& e = enc[b][i];
          apply_scale_factors(e.type, e.group, size_t(e.rows()), size_t(e.cols()), r.factors[b][i], e.data.data());
        }
    return r;
  };
  std::vector<std::vector<EncodedTensor>> one = {encode(blocks[0]), encode(blocks[1])}, three = one;
  const auto before = one;
  const ScaleTuneResult r = tune(1, one);
  EXPECT_TRUE(r.kept);
  EXPECT_GT(r.kl_before, 0.0);
  EXPECT_LT(r.kl_after, 0.9 * r.kl_before);
  EXPECT_EQ(r.groups, 2u * (16 * 3 + 8 * 3 + 8 * 3 + 12 * 4 + 10 * 3 + 10 * 3 + 12 * 3));  // rows x groups per row
  const ScaleTuneResult r3 = tune(3, three);
  EXPECT_EQ(r3.kl_after, r.kl_after);
  size_t scales_changed = 0;
  for (size_t b = 0; b < 2; ++b)
    for (size_t i = 0; i < kBlockLinears; ++i) {
      const EncodedTensor &e = one[b][i], &e0 = before[b][i];
      EXPECT_EQ(e.data, three[b][i].data);
      const size_t rb = e.row_bytes(), scale_bytes = 2 * ((size_t(e.cols()) + group - 1) / group);
      for (size_t r = 0; r < size_t(e.rows()); ++r)
        for (size_t k = 0; k < rb; ++k) {
          if (k < scale_bytes) scales_changed += e.data[r * rb + k] != e0.data[r * rb + k];
          else ASSERT_EQ(e.data[r * rb + k], e0.data[r * rb + k]) << e.name << " codes changed";
        }
    }
  EXPECT_GT(scales_changed, 50u);
}

}  // namespace
}  // namespace sf
