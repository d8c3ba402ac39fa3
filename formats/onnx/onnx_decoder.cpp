#include "formats/onnx/onnx_decoder.h"

#include <cmath>
#include <limits>

#include "core/error.h"

namespace sf::onnx_out {

namespace {

std::string scope_of(const std::string& canonical_prefix) {
  std::string s = "/" + canonical_prefix;
  if (s.back() == '.') s.pop_back();
  return s;
}

// The f32 value of a canonical tensor (added once, reused: a tied head reads the embedding's).
std::string weight(GraphBuilder& g, const Weights& w, const std::string& name) {
  auto& memo = g.weight_values;
  if (auto it = memo.find(name); it != memo.end()) return it->second;
  const auto it = w.tensors->find(name);
  if (it == w.tensors->end()) fail("--format onnx: the model has no tensor " + name);
  const std::string scope = g.scope();
  g.set_scope("/" + name);
  std::string v = f32_value(g, it->second);
  g.set_scope(scope);
  return memo[name] = v;
}

bool has(const Weights& w, const std::string& name) { return w.tensors->count(name) > 0; }

// x [rows, n] -> norm(x) * weight (+ bias), per NormKind.
std::string norm(GraphBuilder& g, const ModelDesc& d, const Weights& w, const std::string& x, const std::string& prefix) {
  const std::string wt = weight(g, w, prefix + ".weight");
  const bool bias = has(w, prefix + ".bias");
  switch (d.norm) {
    case NormKind::RMS: {
      // x * 1/sqrt(mean(x^2) + eps) * w, in the executor's order.
      const std::string ms = g.op("ReduceMean", {g.op("Mul", {x, x}), g.i64s({-1})}, {attr_i("keepdims", 1)});
      const std::string inv = g.op("Reciprocal", {g.op("Sqrt", {g.op("Add", {ms, g.f32(float(d.norm_eps))})})});
      std::string y = g.op("Mul", {g.op("Mul", {x, inv}), wt});
      if (bias) y = g.op("Add", {y, weight(g, w, prefix + ".bias")});
      return y;
    }
    case NormKind::Layer: {
      std::vector<std::string> in = {x, wt};
      if (bias) in.push_back(weight(g, w, prefix + ".bias"));
      return g.op("LayerNormalization", in, {attr_i("axis", -1), attr_f("epsilon", float(d.norm_eps))});
    }
  }
  return x;
}

// x [rows, in] -> x W^T (+ b): Gemm on the [out, in] weight as stored.
std::string linear(GraphBuilder& g, const Weights& w, const std::string& prefix, const std::string& x) {
  std::string y = g.op("Gemm", {x, weight(g, w, prefix + ".weight")}, {attr_i("transB", 1)});
  if (has(w, prefix + ".bias")) y = g.op("Add", {y, weight(g, w, prefix + ".bias")});
  return y;
}

// Canonical RoPE on t [seq, heads, head_dim]: pairs (2i, 2i+1) of the first rope_dims dims turn by
// the position's angle; the rest pass.
std::string rope(GraphBuilder& g, const ModelDesc& d, const std::string& cos, const std::string& sin,
                 const std::string& t) {
  const int64_t rd = d.rope_dims, pass = d.head_dim - rd;
  std::string r = t, rest;
  if (pass > 0) {
    const auto parts = g.op_n("Split", {t, g.i64s({rd, pass})}, 2, {attr_i("axis", 2)});
    r = parts[0], rest = parts[1];
  }
  const auto ab = g.op_n("Split", {g.op("Reshape", {r, g.i64s({0, 0, rd / 2, 2})})}, 2,
                         {attr_i("axis", 3), attr_i("num_outputs", 2)});
  const std::string ra = g.op("Sub", {g.op("Mul", {ab[0], cos}), g.op("Mul", {ab[1], sin})});
  const std::string rb = g.op("Add", {g.op("Mul", {ab[0], sin}), g.op("Mul", {ab[1], cos})});
  r = g.op("Reshape", {g.op("Concat", {ra, rb}, {attr_i("axis", 3)}), g.i64s({0, 0, rd})});
  return pass > 0 ? g.op("Concat", {r, rest}, {attr_i("axis", 2)}) : r;
}

bool rotary(const ModelDesc& d) { return d.positional == PositionalKind::Rope; }

// The residual around f, per ResidualKind.
std::string residual(GraphBuilder& g, const ModelDesc& d, const std::string& x, const std::string& xn,
                     const std::string& f) {
  if (d.residual == ResidualKind::ScaledNormInput)
    return g.op("Add", {g.op("Mul", {xn, g.f32(float(d.residual_alpha))}), f});
  return g.op("Add", {x, f});
}

// The FFN's hidden activations from xn, per FfnKind.
std::string ffn_hidden(GraphBuilder& g, const ModelDesc& d, const Weights& w, const std::string& p, const std::string& xn) {
  switch (d.ffn) {
    case FfnKind::SiluGated: {
      const std::string up = linear(g, w, p + "ffn.up", xn), gate = linear(g, w, p + "ffn.gate", xn);
      return g.op("Mul", {up, g.op("Mul", {gate, g.op("Sigmoid", {gate})})});
    }
    case FfnKind::GeluTanh:
      return g.op("Gelu", {linear(g, w, p + "ffn.up", xn)}, {attr_s("approximate", "tanh")});
  }
  return xn;
}

}  // namespace

std::string unsupported_settings(const ModelDesc& d) {
  if (d.positional == PositionalKind::Rope2D) return "2-D RoPE (ChatGLM-6B)";
  if (d.mask == MaskKind::PrefixBidirectional) return "the prefix-bidirectional mask (ChatGLM-6B)";
  if (d.positional == PositionalKind::Rope && (d.rope_dims <= 0 || d.rope_dims % 2 != 0 || d.rope_dims > d.head_dim))
    return "rope_dims " + std::to_string(d.rope_dims);
  return "";
}

int64_t rope_rows(const ModelDesc& d) { return d.max_seq > 0 ? d.max_seq : 4096; }

void rope_tables(const ModelDesc& d, int64_t rows, std::vector<float>& cos, std::vector<float>& sin) {
  const int64_t pairs = d.rope_dims / 2;
  std::vector<double> freq(static_cast<size_t>(pairs));
  for (int64_t i = 0; i < pairs; ++i) freq[size_t(i)] = std::pow(d.rope_theta, -double(2 * i) / double(d.rope_dims));
  cos.resize(size_t(rows * pairs));
  sin.resize(cos.size());
  for (int64_t p = 0; p < rows; ++p)
    for (int64_t i = 0; i < pairs; ++i) {
      const double angle = double(p) * freq[size_t(i)];
      cos[size_t(p * pairs + i)] = float(std::cos(angle));
      sin[size_t(p * pairs + i)] = float(std::sin(angle));
    }
}

Shared shared_values(GraphBuilder& g, const ModelDesc& d, const Weights& w, const std::string& input_ids,
                     const std::string& past) {
  g.set_scope("/shared");
  Shared s;
  const std::string ids = g.op("Reshape", {input_ids, g.i64s({-1})});
  const std::string total = g.op("Add", {past, g.op("Shape", {ids})});
  const std::string past0 = g.op("Squeeze", {past}), total0 = g.op("Squeeze", {total});
  s.positions = g.op("Range", {past0, total0, g.i64(1)});
  // Causal: query at position p sees keys 0 .. p (the cache holds every earlier position).
  const std::string keys = g.op("Range", {g.i64(0), total0, g.i64(1)});
  const std::string hidden = g.op("Greater", {keys, g.op("Unsqueeze", {s.positions, g.i64s({1})})});
  s.mask = g.op("Where", {hidden, g.f32(std::numeric_limits<float>::lowest()), g.f32(0.0f)});
  if (rotary(d)) {
    const int64_t rows = rope_rows(d), pairs = d.rope_dims / 2;
    g.external("rope.cos", kFloat, {rows, pairs}, w.rope_cos);
    g.external("rope.sin", kFloat, {rows, pairs}, w.rope_sin);
    s.cos = g.op("Gather", {"rope.cos", s.positions}, {attr_i("axis", 0)});
    s.sin = g.op("Gather", {"rope.sin", s.positions}, {attr_i("axis", 0)});
  }
  return s;
}

std::string embedding(GraphBuilder& g, const ModelDesc& d, const Weights& w, const std::string& input_ids,
                      const Shared& s) {
  g.set_scope("/embed");
  // An f32 table is gathered by the graph input itself ([1, seq, d_model], then rows): how
  // exporters write it, and what our reader recognises as the token embedding. A stored type's
  // initializers are gathered first, so only the rows read are converted.
  const WrittenWeight& table = w.tensors->at("embed.weight");
  const bool whole = table.type == QType::F32 || !rows_gatherable(table);
  std::string x = whole ? g.op("Gather", {weight(g, w, "embed.weight"), input_ids}, {attr_i("axis", 0)})
                        : f32_rows(g, table, input_ids);
  x = g.op("Reshape", {x, g.i64s({-1, d.d_model})});
  if (d.positional == PositionalKind::Learned)
    x = g.op("Add", {x, g.op("Gather", {weight(g, w, "embed.pos.weight"), s.positions}, {attr_i("axis", 0)})});
  return x;
}

std::string block(GraphBuilder& g, const ModelDesc& d, const Weights& w, int64_t layer, const std::string& x,
                  const Shared& s, const std::string& past_k, const std::string& past_v, const std::string& present_k,
                  const std::string& present_v) {
  const std::string p = block_prefix(layer);
  const int64_t H = d.n_heads, KV = d.n_kv_heads, hd = d.head_dim, groups = H / KV;
  g.set_scope(scope_of(p) + "/attn");
  const std::string xn = norm(g, d, w, x, p + "attn_norm");
  std::string q = g.op("Reshape", {linear(g, w, p + "attn.q", xn), g.i64s({-1, H, hd})});
  std::string k = g.op("Reshape", {linear(g, w, p + "attn.k", xn), g.i64s({-1, KV, hd})});
  const std::string v = g.op("Reshape", {linear(g, w, p + "attn.v", xn), g.i64s({-1, KV, hd})});
  if (rotary(d)) {  // the tables [seq, pairs] as [seq, 1, pairs, 1], against [seq, heads, pairs, 2]
    const std::string shape = g.i64s({-1, 1, d.rope_dims / 2, 1});
    const std::string cos = g.op("Reshape", {s.cos, shape}), sin = g.op("Reshape", {s.sin, shape});
    q = rope(g, d, cos, sin, q), k = rope(g, d, cos, sin, k);
  }
  // Heads first: q [H, seq, hd]; the cache [1, KV, total, hd] gets this call's k and v appended.
  const std::vector<Attr> heads_first = {attr_ints("perm", {1, 0, 2})};
  q = g.op("Transpose", {q}, heads_first);
  g.op_to("Concat", {past_k, g.op("Unsqueeze", {g.op("Transpose", {k}, heads_first), g.i64s({0})})}, {present_k},
          {attr_i("axis", 2)});
  g.op_to("Concat", {past_v, g.op("Unsqueeze", {g.op("Transpose", {v}, heads_first), g.i64s({0})})}, {present_v},
          {attr_i("axis", 2)});
  const std::string K = g.op("Squeeze", {present_k, g.i64s({0})}), V = g.op("Squeeze", {present_v, g.i64s({0})});
  // Grouped k/v: query head h reads kv head h / groups, so the heads of one group stack their rows
  // ([KV, groups * seq, hd]) against that group's keys; the mask was tiled to match.
  if (groups > 1) q = g.op("Reshape", {q, g.i64s({KV, -1, hd})});
  std::string sc = g.op("MatMul", {q, g.op("Transpose", {K}, {attr_ints("perm", {0, 2, 1})})});
  // The mask [seq, total] repeated for each query head of a kv group.
  const std::string mask = groups > 1 ? g.op("Tile", {s.mask, g.i64s({groups, 1})}) : s.mask;
  sc = g.op("Add", {g.op("Mul", {sc, g.f32(1.0f / std::sqrt(float(hd)))}), mask});
  std::string att = g.op("MatMul", {g.op("Softmax", {sc}, {attr_i("axis", -1)}), V});
  if (groups > 1) att = g.op("Reshape", {att, g.i64s({H, -1, hd})});
  att = g.op("Reshape", {g.op("Transpose", {att}, heads_first), g.i64s({-1, H * hd})});
  std::string y = residual(g, d, x, xn, linear(g, w, p + "attn.o", att));

  g.set_scope(scope_of(p) + "/ffn");
  const std::string yn = norm(g, d, w, y, p + "ffn_norm");
  return residual(g, d, y, yn, linear(g, w, p + "ffn.down", ffn_hidden(g, d, w, p, yn)));
}

void head(GraphBuilder& g, const ModelDesc& d, const Weights& w, const std::string& x, const std::string& logits) {
  g.set_scope("/head");
  const std::string xn = norm(g, d, w, x, "head.norm");
  const std::string out = weight(g, w, d.tied_embeddings ? "embed.weight" : "head.output.weight");
  g.op_to("Unsqueeze", {g.op("Gemm", {xn, out}, {attr_i("transB", 1)}), g.i64s({0})}, {logits});
}

void whole_graph(onnx::GraphProto* graph, const ModelDesc& d, const Weights& w) {
  graph->set_name("shardforge_decoder");
  GraphBuilder g(graph);
  const std::vector<int64_t> cache = {1, d.n_kv_heads, -1, d.head_dim};
  g.input("input_ids", kInt64, {1, -1}, {"sequence"});
  for (int64_t i = 0; i < d.n_layers; ++i)
    for (const char* kv : {"key", "value"})
      g.input("past_key_values." + std::to_string(i) + "." + kv, kFloat, cache, {"past_sequence"});
  g.output("logits", kFloat, {1, -1, d.vocab_size}, {"sequence"});
  for (int64_t i = 0; i < d.n_layers; ++i)
    for (const char* kv : {"key", "value"})
      g.output("present." + std::to_string(i) + "." + kv, kFloat, cache, {"total_sequence"});
  g.set_scope("/shared");
  const std::string past = g.op("Shape", {"past_key_values.0.key"}, {attr_i("start", 2), attr_i("end", 3)});
  const Shared s = shared_values(g, d, w, "input_ids", past);
  std::string x = embedding(g, d, w, "input_ids", s);
  for (int64_t i = 0; i < d.n_layers; ++i) {
    const std::string n = std::to_string(i);
    x = block(g, d, w, i, x, s, "past_key_values." + n + ".key", "past_key_values." + n + ".value",
              "present." + n + ".key", "present." + n + ".value");
  }
  head(g, d, w, x, "logits");
}

namespace {

const std::vector<std::string> kHiddenDims = {"sequence"};

// What the per-unit graphs pass on: hidden states [1, seq, d_model] between units; the values the
// whole graph computes once, computed by embedding.onnx and taken by every block.
void shared_io(GraphBuilder& g, const ModelDesc& d, bool in) {
  auto io = [&](const std::string& n, int32_t t, const std::vector<int64_t>& dims, const std::vector<std::string>& names) {
    if (in) g.input(n, t, dims, names);
    else g.output(n, t, dims, names);
  };
  io("attention_mask", kFloat, {-1, -1}, {"sequence", "total_sequence"});
  if (rotary(d)) {
    io("rope_cos", kFloat, {-1, d.rope_dims / 2}, kHiddenDims);
    io("rope_sin", kFloat, {-1, d.rope_dims / 2}, kHiddenDims);
  }
}

void model_graph_name(onnx::GraphProto* graph, const std::string& name) { graph->set_name("shardforge_" + name); }

}  // namespace

void embedding_graph(onnx::GraphProto* graph, const ModelDesc& d, const Weights& w) {
  model_graph_name(graph, "embedding");
  GraphBuilder g(graph);
  g.input("input_ids", kInt64, {1, -1}, {"sequence"});
  g.input("past_length", kInt64, {1});
  g.output("hidden_states", kFloat, {1, -1, d.d_model}, kHiddenDims);
  shared_io(g, d, false);
  const Shared s = shared_values(g, d, w, "input_ids", "past_length");
  const std::string x = embedding(g, d, w, "input_ids", s);
  g.op_to("Unsqueeze", {x, g.i64s({0})}, {"hidden_states"});
  g.op_to("Identity", {s.mask}, {"attention_mask"});
  if (rotary(d)) {
    g.op_to("Identity", {s.cos}, {"rope_cos"});
    g.op_to("Identity", {s.sin}, {"rope_sin"});
  }
}

void block_graph(onnx::GraphProto* graph, const ModelDesc& d, const Weights& w, int64_t layer) {
  model_graph_name(graph, unit_name(UnitKind::Block, layer));
  GraphBuilder g(graph);
  const std::vector<int64_t> cache = {1, d.n_kv_heads, -1, d.head_dim};
  const std::string n = std::to_string(layer);
  g.input("hidden_states", kFloat, {1, -1, d.d_model}, kHiddenDims);
  shared_io(g, d, true);
  g.input("past_key_values." + n + ".key", kFloat, cache, {"past_sequence"});
  g.input("past_key_values." + n + ".value", kFloat, cache, {"past_sequence"});
  g.output("hidden_states_out", kFloat, {1, -1, d.d_model}, kHiddenDims);
  g.output("present." + n + ".key", kFloat, cache, {"total_sequence"});
  g.output("present." + n + ".value", kFloat, cache, {"total_sequence"});
  Shared s{"", "attention_mask", rotary(d) ? "rope_cos" : "", rotary(d) ? "rope_sin" : ""};
  g.set_scope("/input");
  const std::string x = g.op("Reshape", {"hidden_states", g.i64s({-1, d.d_model})});
  const std::string y = block(g, d, w, layer, x, s, "past_key_values." + n + ".key", "past_key_values." + n + ".value",
                              "present." + n + ".key", "present." + n + ".value");
  g.op_to("Unsqueeze", {y, g.i64s({0})}, {"hidden_states_out"});
}

void head_graph(onnx::GraphProto* graph, const ModelDesc& d, const Weights& w) {
  model_graph_name(graph, "head");
  GraphBuilder g(graph);
  g.input("hidden_states", kFloat, {1, -1, d.d_model}, kHiddenDims);
  g.output("logits", kFloat, {1, -1, d.vocab_size}, {"sequence"});
  g.set_scope("/input");
  head(g, d, w, g.op("Reshape", {"hidden_states", g.i64s({-1, d.d_model})}), "logits");
}

}  // namespace sf::onnx_out
