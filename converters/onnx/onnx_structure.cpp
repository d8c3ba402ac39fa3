#include "converters/onnx/onnx_structure.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "core/error.h"

namespace sf {

namespace {

using Node = onnx::NodeProto;

// A linear layer: a MatMul (or Gemm) whose weight is a 2-D initializer. torch.onnx.export stores
// constant-folded weights transposed, [in, out]; Gemm with transB = 1 keeps [out, in].
struct Linear {
  const Node* node = nullptr;
  std::string weight;
  bool in_out = true;
  int64_t in = 0, out = 0;
};

int64_t int_attribute(const Node& n, const char* name, int64_t fallback) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return a.i();
  return fallback;
}

float float_attribute(const Node& n, const char* name, float fallback) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return a.f();
  return fallback;
}

std::optional<Linear> as_linear(const Node& n, const OnnxGraph& g) {
  const bool gemm = n.op_type() == "Gemm";
  if ((n.op_type() != "MatMul" && !gemm) || n.input_size() < 2) return std::nullopt;
  const LazyTensor* w = g.initializer(n.input(1));
  if (!w || w->shape.size() != 2 || g.initializer(n.input(0))) return std::nullopt;
  // A Gemm with a bias, a transposed input or a scale is not a bias-free linear of x.
  if (gemm && ((n.input_size() > 2 && !n.input(2).empty()) || int_attribute(n, "transA", 0) != 0 ||
               float_attribute(n, "alpha", 1.0f) != 1.0f))
    return std::nullopt;
  Linear l;
  l.node = &n;
  l.weight = n.input(1);
  l.in_out = !(gemm && int_attribute(n, "transB", 0) == 1);
  l.in = l.in_out ? w->shape[0] : w->shape[1];
  l.out = l.in_out ? w->shape[1] : w->shape[0];
  return l;
}

// A linear layer with a bias: Gemm(x, W, b) (torch.onnx.export's addmm, as GPT-2's Conv1D computes
// it), or MatMul(x, W) followed by Add(b). `output` is the value after the bias.
struct BiasedLinear {
  Linear linear;
  std::string bias, output;
};

std::optional<BiasedLinear> as_biased_linear(const Node& n, const OnnxGraph& g) {
  const bool gemm = n.op_type() == "Gemm";
  if ((n.op_type() != "MatMul" && !gemm) || n.input_size() < 2) return std::nullopt;
  const LazyTensor* w = g.initializer(n.input(1));
  if (!w || w->shape.size() != 2 || g.initializer(n.input(0))) return std::nullopt;
  if (gemm && (int_attribute(n, "transA", 0) != 0 || float_attribute(n, "alpha", 1.0f) != 1.0f ||
               float_attribute(n, "beta", 1.0f) != 1.0f))
    return std::nullopt;
  BiasedLinear b;
  Linear& l = b.linear;
  l.node = &n;
  l.weight = n.input(1);
  l.in_out = !(gemm && int_attribute(n, "transB", 0) == 1);
  l.in = l.in_out ? w->shape[0] : w->shape[1];
  l.out = l.in_out ? w->shape[1] : w->shape[0];
  const auto is_bias = [&](const std::string& v) {
    const LazyTensor* t = g.initializer(v);
    return t && t->shape.size() == 1 && t->shape[0] == l.out;
  };
  if (gemm) {
    if (n.input_size() < 3 || !is_bias(n.input(2))) return std::nullopt;
    b.bias = n.input(2);
    b.output = n.output(0);
    return b;
  }
  const auto& consumers = g.consumers(n.output(0));
  if (consumers.size() != 1 || consumers[0]->op_type() != "Add" || consumers[0]->input_size() != 2) return std::nullopt;
  const Node& add = *consumers[0];
  const std::string& other = add.input(0) == n.output(0) ? add.input(1) : add.input(0);
  if (!is_bias(other)) return std::nullopt;
  b.bias = other;
  b.output = add.output(0);
  return b;
}

std::string string_attribute(const Node& n, const char* name, const std::string& fallback) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return a.s();
  return fallback;
}

// A constant stored as f32 (1e-5 reads back as 9.99999974e-06): the shortest decimal that is the
// same f32, which is what the exporter was given.
double f32_decimal(double v) {
  const float f = float(v);
  for (int digits = 1; digits <= 9; ++digits) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.*g", digits, double(f));
    const double d = std::strtod(buf, nullptr);
    if (float(d) == f) return d;
  }
  return v;
}

bool is_dynamic_matmul(const Node& n, const OnnxGraph& g) {
  return n.op_type() == "MatMul" && n.input_size() == 2 && !g.initializer(n.input(0)) && !g.initializer(n.input(1));
}

// RoPE tables are [positions, head_dim / 2] floats: 2^24 is 128k positions of head_dim 256.
constexpr size_t kMaxRopeTableElements = size_t(1) << 24;

// The roles of linears, and the module names exporters' scope names give them (Hugging Face,
// Meta / llama2.c). Names are a cross-check on the data flow, and decide where it cannot.
enum class Role { Q, K, V, O, Gate, Up, Down, Head, Qkv, GateUp };
struct RoleName {
  const char* module;
  Role role;
};
constexpr RoleName kRoleNames[] = {
    {"q_proj", Role::Q},       {"wq", Role::Q},    {"k_proj", Role::K},  {"wk", Role::K},
    {"v_proj", Role::V},       {"wv", Role::V},    {"o_proj", Role::O},  {"wo", Role::O},
    {"gate_proj", Role::Gate}, {"w1", Role::Gate}, {"up_proj", Role::Up}, {"w3", Role::Up},
    {"down_proj", Role::Down}, {"w2", Role::Down}, {"lm_head", Role::Head}, {"output", Role::Head},
};
const char* role_name(Role r) {
  constexpr const char* kNames[] = {"q",    "k",    "v",     "output (o)", "gate", "up", "down", "vocabulary output",
                                    "fused QKV", "fused gate and up"};
  return kNames[int(r)];
}

// GPT-2's module paths (Hugging Face's GPT2LMHeadModel: /transformer/h.3/attn/c_attn/Gemm), by
// their last two modules: c_proj is the attention's or the MLP's.
constexpr RoleName kGpt2RoleNames[] = {
    {"attn/c_attn", Role::Qkv}, {"attn/c_proj", Role::O}, {"mlp/c_fc", Role::Up}, {"mlp/c_proj", Role::Down}, {"lm_head", Role::Head},
};

// ChatGLM2/3's module paths (THUDM's modeling_chatglm.py: /transformer/encoder/layers.3/
// self_attention/query_key_value/MatMul), by their last two modules.
constexpr RoleName kGlm2RoleNames[] = {
    {"self_attention/query_key_value", Role::Qkv}, {"self_attention/dense", Role::O},
    {"mlp/dense_h_to_4h", Role::GateUp},           {"mlp/dense_4h_to_h", Role::Down},
    {"transformer/output_layer", Role::Head},
};

// What the recovery found, per layer.
struct Layer {
  std::string attn_norm, ffn_norm;
  Linear q, k, v, o, gate, up, down;
};

// A LayerNorm with weight and bias: a LayerNormalization op, or torch's decomposition
// ReduceMean → Sub → Pow → ReduceMean → Add eps → Sqrt → Div → Mul weight → Add bias.
struct LayerNormAt {
  const Node* node = nullptr;  // the LayerNormalization, or the Mul by the weight
  std::string weight, bias, output;
  double eps = 0;
};

// What the recovery found per GPT-2 block: c_attn is the fused [d, 3d] QKV projection, split after.
struct Gpt2Layer {
  LayerNormAt ln_1, ln_2;
  BiasedLinear c_attn, attn_proj, c_fc, mlp_proj;
  std::string q;  // the first third of c_attn's output (Reshaped to [.., heads, head_dim])
};

// What the recovery found per ChatGLM2 block: query_key_value is the fused [q heads | k groups |
// v groups] projection, dense_h_to_4h the fused [gate | up] one.
struct Glm2Layer {
  std::string attn_norm, ffn_norm;
  Linear qkv, dense, h_to_4h, down;
  std::string qkv_bias;  // empty: the projection has none (add_qkv_bias false)
  std::string q, k;      // q's and k's parts of query_key_value's output
  int64_t q_width = 0, kv_width = 0;
};

// What a graph's data flow shows before any family's rules are applied.
enum class NormSignature { Rms, Layer };
enum class PositionSignature { None, Learned };
// The first norm's output feeds q, k and v as separate linears, or one fused projection split after.
enum class ProjectionSignature { Separate, Fused };
const char* describe(NormSignature n) { return n == NormSignature::Rms ? "RMSNorm (no mean subtracted)" : "LayerNorm (mean subtracted)"; }
const char* describe(PositionSignature p) {
  return p == PositionSignature::Learned ? "a learned position embedding added to the token embedding" : "no learned position embedding";
}
const char* describe(ProjectionSignature p) {
  return p == ProjectionSignature::Fused ? "one fused attention input projection" : "separate q, k and v projections";
}

class Recovery {
 public:
  Recovery(SourceModel& m, const OnnxGraph& g) : m_(m), g_(g) {}

  void run(const json& hf_config);

 private:
  SourceModel& m_;
  const OnnxGraph& g_;
  const char* shape_ = "a LLaMA-, GPT-2- or ChatGLM2-shaped decoder";  // what the refusal says was looked for
  std::string embed_, pos_embed_;
  const Node* token_gather_ = nullptr;
  int64_t vocab_ = 0, d_model_ = 0;
  std::vector<Layer> layers_;
  std::string final_norm_;
  Linear head_;
  std::vector<Gpt2Layer> gpt2_layers_;
  LayerNormAt gpt2_final_norm_;
  std::vector<Glm2Layer> glm2_layers_;

  // Family recoveries, chosen by the graph's signature (kFamilies below).
  struct Family {
    const char* name;
    const char* shape;
    NormSignature norm;
    PositionSignature positions;
    ProjectionSignature projections;
    void (Recovery::*recover)(const json& hf_config);
  };
  static const Family kFamilies[];
  void run_llama(const json& hf_config);
  void run_gpt2(const json& hf_config);
  void run_chatglm2(const json& hf_config);

  [[noreturn]] void refuse(const std::string& what) const {
    fail(m_.path + ": not a graph shardforge recognises (" + shape_ + "): " + what, ErrorKind::Unsupported);
  }
  // Every family's output projection maps d_model to the vocabulary.
  void check_head_shape() const {
    if (head_.in != d_model_ || head_.out != vocab_)
      refuse("the output projection is [" + std::to_string(head_.in) + " -> " + std::to_string(head_.out) +
             "], not [d_model " + std::to_string(d_model_) + " -> vocab " + std::to_string(vocab_) + "]");
  }
  NormSignature norm_signature() const;
  ProjectionSignature projection_signature() const;
  PositionSignature find_position_embedding();
  std::optional<LayerNormAt> layer_norm(const Node& n) const;
  BiasedLinear next_biased_linear(const std::string& from, const std::string& what) const;
  std::pair<std::optional<int64_t>, std::optional<int64_t>> heads_after(const std::string& value, int64_t width) const;
  // A value cut along its feature axis into `n` consecutive parts (a Split, or Slices of it or of a
  // Reshape of it); a part's width is unknown when its bounds are computed from shapes at run time.
  struct Part {
    std::string value;
    std::optional<int64_t> width;
  };
  std::vector<Part> parts_of(const std::string& value, size_t n, int64_t total, const std::string& what) const;
  std::vector<std::string> qkv_parts(const std::string& qkv, const std::string& block) const;
  // Refuses when a linear's module path (its last two modules, from `names`) says another role than
  // the data flow found.
  template <size_t N>
  void check_module_path(const RoleName (&names)[N], const Linear& l, Role role, const std::string& block) const;
  void check_gpt2_name(const Linear& l, Role role, const std::string& block) const { check_module_path(kGpt2RoleNames, l, role, block); }
  void check_glm2_name(const Linear& l, Role role, const std::string& block) const { check_module_path(kGlm2RoleNames, l, role, block); }
  void glm2_attention(Glm2Layer& layer, const Linear& qkv, const std::string& block);
  void glm2_ffn(Glm2Layer& layer, const Linear& h_to_4h, const std::string& block);
  void refuse_bias(const Linear& l, const std::string& what) const;
  void emit_glm2(const json& config);
  void gpt2_attention(Gpt2Layer& layer, const std::string& block);
  void gpt2_ffn(Gpt2Layer& layer, const std::string& block);
  void emit_gpt2(const json& config, bool tied);
  std::string node_name(const Node& n) const { return "node '" + n.name() + "' (" + n.op_type() + ")"; }

  void find_embedding();
  void find_blocks();
  void assign_attention(Layer& layer, const std::vector<Linear>& qkv);
  void assign_ffn(Layer& layer, const std::vector<Linear>& gate_up);
  std::optional<Role> named_role(const Node& n) const;
  // Refuses when the node's scope name says another role than the data flow found.
  void check_name(const Linear& l, Role role, const std::string& block) const;
  Linear next_linear(const std::string& from, const std::string& what) const;
  std::pair<std::optional<int64_t>, std::optional<int64_t>> heads_of(const Linear& l) const;
  double norm_eps(const Node& norm) const;
  struct Rope {
    bool rotate_half = false;
    std::optional<double> theta;
    int64_t max_positions = 0;
  };
  // The rotary embedding on `q` (the value out of `projection`) before the scores MatMul, over
  // `rotary_dims` dims of each head: cos/sin tables [positions, rotary_dims / 2] (or [positions,
  // rotary_dims] with both halves alike when `doubled_tables`), one [positions, rotary_dims / 2, 2]
  // table of (cos, sin) pairs, or the inverse frequencies.
  Rope rope(const Node& projection, const std::string& q, int64_t rotary_dims, bool doubled_tables) const;
  bool head_is_embedding() const;
  void emit(const json& config, bool rotate_half, bool tied);
};

void Recovery::find_embedding() {
  // The token embedding is a Gather of a 2-D initializer by a graph input (the token ids).
  std::vector<const Node*> found;
  for (const Node* n : g_.order()) {
    if (n->op_type() != "Gather" || n->input_size() != 2) continue;
    const LazyTensor* t = g_.initializer(n->input(0));
    if (t && t->shape.size() == 2 && g_.is_graph_input(n->input(1))) found.push_back(n);
  }
  if (found.empty()) refuse("no token embedding (a Gather of a [vocab, d_model] initializer by the input ids)");
  if (found.size() == 2) {
    // Positions given as an input (position_ids): two Gathers whose outputs are added. The token
    // table is the one with as many rows as the output projection (the last linear) has outputs.
    int64_t logits = 0;
    for (const Node* n : g_.order())
      if (const auto l = as_linear(*n, g_)) logits = l->out;
    bool summed = false;
    for (const Node* c : g_.consumers(found[0]->output(0)))
      for (const auto& in : c->input()) summed |= c->op_type() == "Add" && in == found[1]->output(0);
    std::vector<const Node*> tokens;
    for (const Node* n : found)
      if (g_.initializer(n->input(0))->shape[0] == logits) tokens.push_back(n);
    if (summed && tokens.size() == 1) found = tokens;
  }
  if (found.size() > 1) refuse("several Gathers of initializers by graph inputs; cannot tell the token embedding");
  token_gather_ = found[0];
  embed_ = found[0]->input(0);
  vocab_ = g_.initializer(embed_)->shape[0];
  d_model_ = g_.initializer(embed_)->shape[1];
}

Linear Recovery::next_linear(const std::string& from, const std::string& what) const {
  const auto hit = g_.find_forward(from, [&](const Node& n, int input) { return input == 0 && as_linear(n, g_); });
  if (!hit.node) refuse("no " + what);
  return *as_linear(*hit.node, g_);
}

void Recovery::find_blocks() {
  // A pre-norm block: Mul(normalised x, weight[d_model]) feeding three linears (q, k, v), later
  // another feeding two (gate, up); the last norm feeds the output projection alone.
  std::vector<std::pair<const Node*, std::vector<Linear>>> norms;
  for (const Node* n : g_.order()) {
    if (n->op_type() != "Mul" || n->input_size() != 2 || n->output_size() != 1) continue;
    int w = -1;
    for (int i = 0; i < 2; ++i)
      if (const LazyTensor* t = g_.initializer(n->input(i)); t && t->shape.size() == 1 && t->shape[0] == d_model_) w = i;
    if (w < 0) continue;
    std::vector<Linear> fed;
    for (const Node* c : g_.consumers(n->output(0)))
      if (auto l = as_linear(*c, g_); l && c->input(0) == n->output(0)) fed.push_back(*l);
    if (!fed.empty()) norms.push_back({n, fed});
  }
  size_t i = 0;
  for (; i + 1 < norms.size() && norms[i].second.size() == 3; i += 2) {
    if (norms[i + 1].second.size() != 2)
      refuse("after the attention of block " + std::to_string(layers_.size()) + ", no norm feeding a gate and an up projection");
    Layer layer;
    const auto weight_of = [&](const Node* n) { return g_.initializer(n->input(1)) ? n->input(1) : n->input(0); };
    layer.attn_norm = weight_of(norms[i].first);
    layer.ffn_norm = weight_of(norms[i + 1].first);
    assign_attention(layer, norms[i].second);
    assign_ffn(layer, norms[i + 1].second);
    layers_.push_back(std::move(layer));
  }
  if (layers_.empty()) refuse("no attention block (a norm weight [d_model] feeding q, k and v projections)");
  if (i + 1 != norms.size() || norms[i].second.size() != 1)
    refuse("after block " + std::to_string(layers_.size() - 1) + ", no final norm feeding the output projection alone");
  const Node* last = norms[i].first;
  final_norm_ = g_.initializer(last->input(1)) ? last->input(1) : last->input(0);
  head_ = norms[i].second[0];
  check_name(head_, Role::Head, "the model");
  check_head_shape();
}

void Recovery::assign_attention(Layer& layer, const std::vector<Linear>& qkv) {
  // q and k meet in the scores MatMul (q first, k second); v is the second input of the MatMul
  // after the softmax. o is the first linear after that.
  const std::string block = "block " + std::to_string(layers_.size());
  std::vector<OnnxGraph::Hit> hits;
  for (const auto& l : qkv)
    hits.push_back(g_.find_forward(l.node->output(0), [&](const Node& n, int) { return is_dynamic_matmul(n, g_); }));
  int q = -1, k = -1;
  for (int a = 0; a < 3; ++a)
    for (int b = 0; b < 3; ++b)
      if (a != b && hits[a].node && hits[a].node == hits[b].node && hits[a].input == 0 && hits[b].input == 1) q = a, k = b;
  const int v = q < 0 ? -1 : 3 - q - k;
  if (q >= 0 && hits[v].node && hits[v].input == 1) {
    layer.q = qkv[q], layer.k = qkv[k], layer.v = qkv[v];
    layer.o = next_linear(hits[v].node->output(0), "output projection after the attention of " + block);
  } else {
    // The attention is not plain MatMuls (a fused or custom op): the scope names may still say.
    const auto by_name = [&](Role role) -> const Linear* {
      const Linear* found = nullptr;
      for (const auto& l : qkv)
        if (named_role(*l.node) == role) found = found ? nullptr : &l;
      return found;
    };
    const Linear *nq = by_name(Role::Q), *nk = by_name(Role::K), *nv = by_name(Role::V);
    if (!nq || !nk || !nv)
      refuse("no attention MatMuls taking q, k and v in " + block + ", and the node names do not say which projection is which");
    layer.q = *nq, layer.k = *nk, layer.v = *nv;
    layer.o = next_linear(layer.v.node->output(0), "output projection after the attention of " + block);
  }
  check_name(layer.q, Role::Q, block);
  check_name(layer.k, Role::K, block);
  check_name(layer.v, Role::V, block);
  check_name(layer.o, Role::O, block);
}

void Recovery::assign_ffn(Layer& layer, const std::vector<Linear>& gate_up) {
  // SwiGLU: silu(gate) * up; torch.onnx.export writes silu as x * Sigmoid(x).
  const std::string block = "block " + std::to_string(layers_.size());
  const auto feeds_sigmoid = [&](const Linear& l) {
    for (const Node* c : g_.consumers(l.node->output(0)))
      if (c->op_type() == "Sigmoid") return true;
    return false;
  };
  const bool first = feeds_sigmoid(gate_up[0]), second = feeds_sigmoid(gate_up[1]);
  int gate = first != second ? (first ? 0 : 1) : -1;
  if (gate < 0) {
    const auto a = named_role(*gate_up[0].node), b = named_role(*gate_up[1].node);
    if (a == Role::Gate && b == Role::Up) gate = 0;
    if (a == Role::Up && b == Role::Gate) gate = 1;
  }
  if (gate < 0)
    refuse(block + "'s FFN is not SwiGLU as exported (exactly one of its two input projections should feed a Sigmoid), "
           "and the node names do not say which is the gate");
  layer.gate = gate_up[gate];
  layer.up = gate_up[1 - gate];
  layer.down = next_linear(layer.up.node->output(0), "down projection in " + block);
  check_name(layer.gate, Role::Gate, block);
  check_name(layer.up, Role::Up, block);
  check_name(layer.down, Role::Down, block);
}

// What a linear's scope name says it is: the module before the op, "/model/layers.3/self_attn/
// q_proj/MatMul" (torch.onnx.export), "/layers.3/self_attn/q_proj/Linear" (MNN), "/wq_1/MatMul"
// (torch 1.13 numbers repeated module names).
std::optional<Role> Recovery::named_role(const Node& n) const {
  const std::string& name = n.name();
  const size_t last = name.rfind('/');
  if (last == std::string::npos || last == 0) return std::nullopt;
  const size_t before = name.rfind('/', last - 1);
  std::string module = name.substr(before == std::string::npos ? 0 : before + 1, last - (before == std::string::npos ? 0 : before + 1));
  if (const size_t u = module.rfind('_'); u != std::string::npos && u + 1 < module.size() &&
                                          module.find_first_not_of("0123456789", u + 1) == std::string::npos)
    module.resize(u);
  for (const auto& r : kRoleNames)
    if (module == r.module) return r.role;
  return std::nullopt;
}

void Recovery::check_name(const Linear& l, Role role, const std::string& block) const {
  const auto named = named_role(*l.node);
  if (named && *named != role)
    refuse(node_name(*l.node) + " is named as the " + role_name(*named) + " projection, but the data flow makes it " + block +
           "'s " + role_name(role) + " projection");
}

// Heads and head_dim from the Reshape that splits a projection's output: [batch, seq, heads, head_dim].
std::pair<std::optional<int64_t>, std::optional<int64_t>> Recovery::heads_of(const Linear& l) const {
  return heads_after(l.node->output(0), l.out);
}

// The same from a value `width` wide (GPT-2's q, a third of the fused QKV projection's output).
std::pair<std::optional<int64_t>, std::optional<int64_t>> Recovery::heads_after(const std::string& value, int64_t width) const {
  const auto hit = g_.find_forward(value, [](const Node& n, int input) { return n.op_type() == "Reshape" && input == 0; }, 64);
  if (!hit.node || hit.node->input_size() < 2) return {};
  const auto shape = g_.int_values(hit.node->input(1));
  if (!shape || shape->size() < 2) return {};
  std::optional<int64_t> heads = (*shape)[shape->size() - 2], dim = (*shape)[shape->size() - 1];
  if (heads && *heads <= 0) heads.reset();
  if (dim && *dim <= 0) dim.reset();
  if (!heads && dim && width % *dim == 0) heads = width / *dim;
  if (heads && !dim && width % *heads == 0) dim = width / *heads;
  return {heads, dim};
}

// RMSNorm's epsilon: x * 1/sqrt(mean(x^2) + eps). A mean subtracted first is LayerNorm.
double Recovery::norm_eps(const Node& norm) const {
  const std::string data = g_.initializer(norm.input(1)) ? norm.input(0) : norm.input(1);
  for (const Node* n : g_.ancestors(data, [](const Node&) { return false; }, 24)) {
    if (n->op_type() == "Sub") {
      for (const auto& in : n->input())
        if (const Node* p = g_.producer(in); p && p->op_type() == "ReduceMean")
          refuse("the norms subtract the mean (LayerNorm); LLaMA uses RMSNorm");
    }
    if (n->op_type() != "Add" || n->input_size() != 2) continue;
    for (int i = 0; i < 2; ++i) {
      const Node* p = g_.producer(n->input(i));
      if (p && p->op_type() == "ReduceMean")
        if (auto eps = g_.scalar_value(n->input(1 - i))) return f32_decimal(*eps);
    }
  }
  refuse("no RMSNorm epsilon (an Add of a constant to the mean of squares) before " + node_name(norm));
}

Recovery::Rope Recovery::rope(const Node& projection, const std::string& q, int64_t rotary_dims, bool doubled_tables) const {
  const auto scores = g_.find_forward(q, [&](const Node& n, int) { return is_dynamic_matmul(n, g_); });
  if (!scores.node) refuse("no attention scores MatMul after block 0's q projection, to find its rotary embedding on");
  // Nodes between q's projection and the scores: rotate-half RoPE negates one half (Neg);
  // interleaved pairs do not.
  std::set<const Node*> after_q;
  g_.find_forward(q, [&](const Node& n, int) { after_q.insert(&n); return &n == scores.node; }, 512);
  Rope r;
  bool rotary = false;
  const int64_t half = rotary_dims / 2;
  std::optional<std::vector<float>> cos_table, sin_table;
  for (const Node* n : g_.ancestors(scores.node->input(0), [&](const Node& n) { return &n == &projection; }, 512)) {
    if (after_q.count(n) && n->op_type() == "Neg") r.rotate_half = true;
    for (const auto& in : n->input()) {
      if (projection.input_size() > 1 && in == projection.input(1)) continue;
      const auto t = g_.float_tensor(in, kMaxRopeTableElements);
      if (!t) continue;
      // One table of (cos, sin) pairs (ChatGLM's rope cache): row 0 is (1, 0) for every frequency.
      if (t->shape.size() == 3 && t->shape[1] == half && t->shape[2] == 2 && t->shape[0] >= 2) {
        bool first_row = true;
        for (int64_t j = 0; j < half; ++j) first_row &= t->values[2 * j] == 1.0f && t->values[2 * j + 1] == 0.0f;
        if (!first_row) continue;
        cos_table.emplace(), sin_table.emplace();
        for (size_t i = 0; i + 1 < t->values.size(); i += 2)
          cos_table->push_back(t->values[i]), sin_table->push_back(t->values[i + 1]);
        r.max_positions = t->shape[0], rotary = true;
        continue;
      }
      // Tables [positions, rotary_dims/2] (or [positions, rotary_dims] with both halves alike).
      if (t->shape.size() == 2 && (t->shape[1] == half || (doubled_tables && t->shape[1] == rotary_dims)) && t->shape[0] >= 2) {
        const int64_t w = t->shape[1];
        bool ones = true, zeros = true;
        for (int64_t j = 0; j < w; ++j) ones &= t->values[j] == 1.0f, zeros &= t->values[j] == 0.0f;
        // Row 0 is position 0: cos 1, sin 0 for every frequency.
        if (ones) cos_table = t->values, r.max_positions = t->shape[0], rotary = true;
        else if (zeros) sin_table = t->values, rotary = true;
        continue;
      }
      if (t->shape.size() == 1 && t->shape[0] == half) {
        const auto& f = t->values;
        if (half >= 2 && f[0] == 1.0f && f[1] > 0 && f[1] < 1) r.theta = std::pow(double(f[1]), -double(rotary_dims) / 2), rotary = true;
      }
    }
  }
  if (cos_table && sin_table && cos_table->size() == sin_table->size() && cos_table->size() >= 2 * 2 &&
      cos_table->size() / r.max_positions >= 2) {
    // Column 1 holds frequency theta^(-2/rotary_dims) at position 1 (column 1 of either layout).
    const int64_t w = int64_t(cos_table->size()) / r.max_positions;
    const double f = std::atan2(double((*sin_table)[w + 1]), double((*cos_table)[w + 1]));
    if (f > 0) r.theta = std::pow(f, -double(rotary_dims) / 2);
  }
  if (!rotary)
    refuse("no rotary embedding over " + std::to_string(rotary_dims) + " dims of each head on q's path to the attention scores in block 0");
  if (r.theta) {
    // Tables are stored in f32: the theta they give is exact to about 1e-6; exporters' are integers.
    const double rounded = std::round(*r.theta);
    if (std::abs(*r.theta - rounded) <= 1e-4 * rounded) r.theta = rounded;
  }
  return r;
}

bool Recovery::head_is_embedding() const {
  // torch.onnx.export gives a tied output projection its own transposed copy: the same bytes.
  // Compared a block of vocabulary rows at a time (a real vocabulary's f32 copies are gigabytes);
  // the first block differs for an untied head, so that costs one block.
  const LazyTensor& e = *g_.initializer(embed_);
  const LazyTensor& h = *g_.initializer(head_.weight);
  if (e.dtype != h.dtype) return false;
  const uint64_t es = dtype_size(e.dtype), d = uint64_t(d_model_), vocab = uint64_t(vocab_);
  const uint64_t block = std::max<uint64_t>(1, (uint64_t(1) << 22) / (d * es));
  std::vector<uint8_t> rows, col;
  for (uint64_t v0 = 0; v0 < vocab; v0 += block) {
    const uint64_t n = std::min(block, vocab - v0);
    rows.resize(n * d * es);
    e.storage->read(v0 * d * es, rows.data(), rows.size());
    if (!head_.in_out) {  // [vocab, d] as the embedding
      col.resize(rows.size());
      h.storage->read(v0 * d * es, col.data(), col.size());
      if (col != rows) return false;
      continue;
    }
    col.resize(n * es);  // [d, vocab]: row j holds column j of the embedding
    for (uint64_t j = 0; j < d; ++j) {
      h.storage->read((j * vocab + v0) * es, col.data(), col.size());
      for (uint64_t v = 0; v < n; ++v)
        if (std::memcmp(col.data() + v * es, rows.data() + (v * d + j) * es, es) != 0) return false;
    }
  }
  return true;
}

// Canonical source names: Meta's (llama2.c) for interleaved RoPE pairs, Hugging Face's for
// rotate-half, whose q/k rows the llama map reorders on load.
struct Names {
  const char *embed, *attn_norm, *q, *k, *v, *o, *ffn_norm, *gate, *up, *down, *norm, *output;
};
constexpr Names kMetaNames = {"tok_embeddings.weight", "layers.{i}.attention_norm.weight", "layers.{i}.attention.wq.weight",
                              "layers.{i}.attention.wk.weight", "layers.{i}.attention.wv.weight", "layers.{i}.attention.wo.weight",
                              "layers.{i}.ffn_norm.weight", "layers.{i}.feed_forward.w1.weight", "layers.{i}.feed_forward.w3.weight",
                              "layers.{i}.feed_forward.w2.weight", "norm.weight", "output.weight"};
constexpr Names kHfNames = {"model.embed_tokens.weight", "model.layers.{i}.input_layernorm.weight",
                            "model.layers.{i}.self_attn.q_proj.weight", "model.layers.{i}.self_attn.k_proj.weight",
                            "model.layers.{i}.self_attn.v_proj.weight", "model.layers.{i}.self_attn.o_proj.weight",
                            "model.layers.{i}.post_attention_layernorm.weight", "model.layers.{i}.mlp.gate_proj.weight",
                            "model.layers.{i}.mlp.up_proj.weight", "model.layers.{i}.mlp.down_proj.weight", "model.norm.weight",
                            "lm_head.weight"};

// Hyper-parameters by Meta's params.json key and the config.json key that states the same.
struct ConfigKey {
  const char* meta;
  const char* hf;
};
constexpr ConfigKey kConfigKeys[] = {
    {"dim", "hidden_size"},          {"n_layers", "num_hidden_layers"},
    {"n_heads", "num_attention_heads"}, {"n_kv_heads", "num_key_value_heads"},
    {"vocab_size", "vocab_size"},    {"hidden_dim", "intermediate_size"},
    {"norm_eps", "rms_norm_eps"},    {"rope_theta", "rope_theta"},
    {"max_seq_len", "max_position_embeddings"},
};

std::string with_layer(const char* pattern, size_t i) {
  std::string s = pattern;
  const auto at = s.find("{i}");
  return at == std::string::npos ? s : s.replace(at, 3, std::to_string(i));
}

void Recovery::emit(const json& config, bool rotate_half, bool tied) {
  const Names& names = rotate_half ? kHfNames : kMetaNames;
  std::map<std::string, LazyTensor> out;
  const auto take = [&](const std::string& onnx_name, const std::string& name, const Linear* linear) {
    LazyTensor t = *g_.initializer(onnx_name);
    if (linear && linear->in_out) t.shape = {linear->out, linear->in}, t.strides = {1, linear->out};
    t.name = name;
    if (!out.emplace(name, t).second) fail(m_.path + ": initializer " + onnx_name + " is claimed twice");
  };
  take(embed_, names.embed, nullptr);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    take(l.attn_norm, with_layer(names.attn_norm, i), nullptr);
    take(l.ffn_norm, with_layer(names.ffn_norm, i), nullptr);
    const std::pair<const char*, const Linear*> linears[] = {{names.q, &l.q}, {names.k, &l.k}, {names.v, &l.v},
                                                             {names.o, &l.o}, {names.gate, &l.gate}, {names.up, &l.up},
                                                             {names.down, &l.down}};
    for (const auto& [pattern, linear] : linears) take(linear->weight, with_layer(pattern, i), linear);
  }
  take(final_norm_, names.norm, nullptr);
  if (!tied) take(head_.weight, names.output, &head_);
  m_.tensors = std::move(out);
  if (rotate_half) {
    json hf = {{"architectures", {"LlamaForCausalLM"}}, {"hidden_act", "silu"}, {"tie_word_embeddings", tied}};
    for (const auto& k : kConfigKeys)
      if (config.contains(k.meta)) hf[k.hf] = config[k.meta];
    m_.config = hf;
    m_.config_kind = "hf_config";
  } else {
    m_.config = config;
    m_.config_kind = "onnx_graph";
  }
}

void Recovery::run_llama(const json& hf_config) {
  find_blocks();
  const Layer& first = layers_.front();
  auto [n_heads, head_dim] = heads_of(first.q);
  auto [n_kv_heads, kv_head_dim] = heads_of(first.k);
  json config = {{"dim", d_model_}, {"n_layers", int64_t(layers_.size())}, {"vocab_size", vocab_},
                 {"hidden_dim", first.gate.out}};
  // A config.json beside the model states what the graph may not show; its values win.
  if (hf_config.is_object())
    for (const auto& k : kConfigKeys)
      if (hf_config.contains(k.hf)) config[k.meta] = hf_config[k.hf];
  if (config.contains("n_heads") && config["n_heads"].is_number_integer()) n_heads = config["n_heads"].get<int64_t>();
  if (!n_heads) refuse("no head count (no Reshape of q's projection to [.., heads, head_dim]) and no config.json stating num_attention_heads");
  if (*n_heads <= 0 || first.q.out % *n_heads) refuse("q's projection width " + std::to_string(first.q.out) + " is not a multiple of the head count");
  head_dim = first.q.out / *n_heads;
  if (!n_kv_heads && kv_head_dim && *kv_head_dim > 0) n_kv_heads = first.k.out / *kv_head_dim;
  if (!n_kv_heads) n_kv_heads = first.k.out / *head_dim;
  config["n_heads"] = *n_heads;
  if (!config.contains("n_kv_heads")) config["n_kv_heads"] = *n_kv_heads;
  if (!config.contains("norm_eps")) {
    const Node* norm = g_.producer(first.q.node->input(0));  // find_blocks found q as a consumer of this Mul
    config["norm_eps"] = norm_eps(*norm);
  }
  const Rope r = rope(*first.q.node, first.q.node->output(0), *head_dim, true);
  if (!config.contains("rope_theta")) {
    if (!r.theta) refuse("no RoPE theta (no cos/sin tables or inverse frequencies in the graph) and no config.json stating rope_theta");
    config["rope_theta"] = *r.theta;
  }
  if (!config.contains("max_seq_len") && r.max_positions > 0) config["max_seq_len"] = r.max_positions;
  // Every block must have the shapes of block 0 (the canonical model has one shape per block).
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    const auto expect = [&](const Linear& x, int64_t in, int64_t out, const char* what) {
      if (x.in != in || x.out != out)
        refuse("block " + std::to_string(i) + "'s " + what + " is [" + std::to_string(x.in) + " -> " + std::to_string(x.out) +
               "], expected [" + std::to_string(in) + " -> " + std::to_string(out) + "]");
    };
    expect(l.q, d_model_, first.q.out, "q projection");
    expect(l.k, d_model_, first.k.out, "k projection");
    expect(l.v, d_model_, first.k.out, "v projection");
    expect(l.o, first.q.out, d_model_, "output projection");
    expect(l.gate, d_model_, first.gate.out, "gate projection");
    expect(l.up, d_model_, first.gate.out, "up projection");
    expect(l.down, first.gate.out, d_model_, "down projection");
  }
  emit(config, r.rotate_half, head_is_embedding());
}

// ---- Family by signature ----

// RMSNorm or LayerNorm: a LayerNormalization op, or a mean subtracted (Sub of a ReduceMean), makes
// the graph's norms LayerNorm.
NormSignature Recovery::norm_signature() const {
  for (const Node* n : g_.order()) {
    if (n->op_type() == "LayerNormalization") return NormSignature::Layer;
    if (n->op_type() != "Sub") continue;
    for (const auto& in : n->input())
      if (const Node* p = g_.producer(in); p && p->op_type() == "ReduceMean") return NormSignature::Layer;
  }
  return NormSignature::Rms;
}

// A learned position embedding: the token embedding's output added to a Gather of another
// [positions, d_model] initializer (by an arange of the sequence length, or by a position input).
PositionSignature Recovery::find_position_embedding() {
  const Node* tokens = token_gather_;
  for (const Node* add : g_.consumers(tokens->output(0))) {
    if (add->op_type() != "Add" || add->input_size() != 2) continue;
    const std::string& other = add->input(0) == tokens->output(0) ? add->input(1) : add->input(0);
    const Node* p = g_.producer(other);
    if (!p || p->op_type() != "Gather" || p->input_size() != 2) continue;
    const LazyTensor* t = g_.initializer(p->input(0));
    if (t && t != g_.initializer(embed_) && t->shape.size() == 2 && t->shape[1] == d_model_ && t->shape[0] >= 1) {
      pos_embed_ = p->input(0);
      return PositionSignature::Learned;
    }
  }
  return PositionSignature::None;
}

// The first linear after the token embedding: whether the value it reads feeds other linears too.
ProjectionSignature Recovery::projection_signature() const {
  const auto is_linear = [&](const Node& n) { return as_linear(n, g_).has_value() || as_biased_linear(n, g_).has_value(); };
  const auto hit = g_.find_forward(token_gather_->output(0), [&](const Node& n, int input) { return input == 0 && is_linear(n); });
  if (!hit.node) refuse("no linear layer (a MatMul or Gemm by a 2-D initializer) after the token embedding");
  size_t fed = 0;
  for (const Node* c : g_.consumers(hit.node->input(0)))
    if (c->input_size() > 0 && c->input(0) == hit.node->input(0) && is_linear(*c)) ++fed;
  return fed == 1 ? ProjectionSignature::Fused : ProjectionSignature::Separate;
}

const Recovery::Family Recovery::kFamilies[] = {
    {"LLaMA", "a LLaMA-shaped decoder", NormSignature::Rms, PositionSignature::None, ProjectionSignature::Separate,
     &Recovery::run_llama},
    {"GPT-2", "a GPT-2-shaped decoder", NormSignature::Layer, PositionSignature::Learned, ProjectionSignature::Fused,
     &Recovery::run_gpt2},
    {"ChatGLM2/3", "a ChatGLM2-shaped decoder", NormSignature::Rms, PositionSignature::None, ProjectionSignature::Fused,
     &Recovery::run_chatglm2},
};

void Recovery::run(const json& hf_config) {
  find_embedding();
  const PositionSignature positions = find_position_embedding();
  const NormSignature norm = norm_signature();
  const ProjectionSignature projections = projection_signature();
  std::string known;
  for (const Family& f : kFamilies) {
    if (f.norm == norm && f.positions == positions && f.projections == projections) {
      shape_ = f.shape;
      (this->*f.recover)(hf_config);
      return;
    }
    known += std::string(known.empty() ? "" : "; ") + f.name + ": " + describe(f.norm) + ", " + describe(f.positions) + ", " +
             describe(f.projections);
  }
  refuse(std::string("the data flow shows ") + describe(norm) + ", " + describe(positions) + " and " + describe(projections) +
         ", which no family read has (" + known + ")");
}

// ---- GPT-2 ----

std::optional<LayerNormAt> Recovery::layer_norm(const Node& n) const {
  const auto is_vector = [&](const std::string& v) {
    const LazyTensor* t = g_.initializer(v);
    return t && t->shape.size() == 1 && t->shape[0] == d_model_;
  };
  LayerNormAt ln;
  ln.node = &n;
  if (n.op_type() == "LayerNormalization") {
    if (n.input_size() < 3 || !is_vector(n.input(1)) || !is_vector(n.input(2)) || int_attribute(n, "axis", -1) != -1)
      return std::nullopt;
    ln.weight = n.input(1), ln.bias = n.input(2), ln.output = n.output(0);
    ln.eps = f32_decimal(float_attribute(n, "epsilon", 1e-5f));
    return ln;
  }
  if (n.op_type() != "Mul" || n.input_size() != 2) return std::nullopt;
  const int w = is_vector(n.input(1)) ? 1 : is_vector(n.input(0)) ? 0 : -1;
  if (w < 0) return std::nullopt;
  const auto& after = g_.consumers(n.output(0));
  if (after.size() != 1 || after[0]->op_type() != "Add" || after[0]->input_size() != 2) return std::nullopt;
  const std::string& bias = after[0]->input(0) == n.output(0) ? after[0]->input(1) : after[0]->input(0);
  if (!is_vector(bias)) return std::nullopt;
  // (x - mean) / sqrt(mean((x - mean)^2) + eps): walked back from the Mul, not past the Sub or the
  // ReduceMean (beyond them is the previous block).
  bool centred = false;
  std::optional<double> eps;
  const auto stop = [](const Node& p) { return p.op_type() == "Sub" || p.op_type() == "ReduceMean"; };
  for (const Node* p : g_.ancestors(n.input(1 - w), stop, 24)) {
    if (p->op_type() == "Sub")
      for (const auto& in : p->input())
        if (const Node* q = g_.producer(in); q && q->op_type() == "ReduceMean") centred = true;
    if (p->op_type() != "Add" || p->input_size() != 2 || eps) continue;
    for (int i = 0; i < 2 && !eps; ++i)
      if (const Node* q = g_.producer(p->input(i)); q && q->op_type() == "ReduceMean") eps = g_.scalar_value(p->input(1 - i));
  }
  if (!centred || !eps) return std::nullopt;
  ln.weight = n.input(w), ln.bias = bias, ln.output = after[0]->output(0), ln.eps = f32_decimal(*eps);
  return ln;
}

BiasedLinear Recovery::next_biased_linear(const std::string& from, const std::string& what) const {
  const auto hit = g_.find_forward(from, [&](const Node& n, int input) { return input == 0 && as_biased_linear(n, g_); });
  if (!hit.node) refuse("no " + what);
  return *as_biased_linear(*hit.node, g_);
}

// The parts in column order. A Split states its sizes (or cuts equal parts); Slices are chained: the
// first starts at 0 and each next one where the previous ends, by constant or by the same value
// (torch.chunk exports bounds computed from the shape, one Slice's end being the next's start).
std::vector<Recovery::Part> Recovery::parts_of(const std::string& value, size_t n, int64_t total, const std::string& what) const {
  std::vector<std::string> sources{value};
  for (const Node* c : g_.consumers(value))
    if (c->op_type() == "Reshape" && c->input(0) == value) sources.push_back(c->output(0));
  for (const auto& src : sources)
    for (const Node* c : g_.consumers(src)) {
      if (c->op_type() != "Split" || c->input(0) != src) continue;
      if (size_t(c->output_size()) != n)
        refuse(what + " is split into " + std::to_string(c->output_size()) + " parts, not " + std::to_string(n));
      std::vector<Part> parts;
      const auto sizes = c->input_size() > 1 && !c->input(1).empty() ? g_.int_values(c->input(1)) : std::nullopt;
      int64_t sum = 0;
      for (size_t i = 0; i < n; ++i) {
        std::optional<int64_t> width;
        if (!sizes && total % int64_t(n) == 0) width = total / int64_t(n);  // no sizes: equal parts
        if (sizes && sizes->size() == n) width = (*sizes)[i];
        if (!width || *width <= 0 || *width > total) refuse(what + "'s Split has no constant sizes within its width");
        sum += *width;
        parts.push_back({c->output(int(i)), width});
      }
      if (sum != total) refuse(what + "'s Split sizes add up to " + std::to_string(sum) + ", not its width " + std::to_string(total));
      return parts;
    }
  struct Bound {
    std::optional<int64_t> at;  // the constant, when it is one
    std::string value;          // the value holding it
  };
  struct Cut {
    const Node* node;
    Bound start, end;
  };
  const auto bound = [&](const Node& s, int input) {
    Bound b{std::nullopt, s.input(input)};
    const auto v = g_.int_values(s.input(input));
    if (v && v->size() != 1) refuse(what + " is sliced by " + node_name(s) + " along several axes");
    if (v) b.at = (*v)[0];
    return b;
  };
  std::vector<Cut> cuts;
  for (const auto& src : sources)
    for (const Node* c : g_.consumers(src)) {
      if (c->op_type() != "Slice" || c->input(0) != src) continue;
      const auto axes = c->input_size() >= 4 ? g_.int_values(c->input(3)) : std::nullopt;
      if (!axes || axes->size() != 1 || !(*axes)[0] || *(*axes)[0] == 0 ||
          (c->input_size() >= 5 && !c->input(4).empty() && g_.int_values(c->input(4)) != std::vector<std::optional<int64_t>>{1}))
        refuse(what + " is sliced by " + node_name(*c) + ", not one range of the feature axis");
      cuts.push_back({c, bound(*c, 1), bound(*c, 2)});
    }
  std::vector<Part> parts;
  std::optional<int64_t> at = 0;  // where the next part starts
  std::string at_value;
  int64_t covered = 0;
  while (parts.size() < cuts.size()) {
    const Cut* next = nullptr;
    for (const Cut& c : cuts)
      if ((c.start.at && at && *c.start.at == *at) || (!at && c.start.value == at_value)) next = next ? nullptr : &c;
    if (!next) break;
    std::optional<int64_t> width;
    if (next->end.at && at) {
      const int64_t end = std::min(*next->end.at, total);  // the last part's end is often "to the end" (INT64_MAX)
      if (end <= *at) refuse(what + " is sliced by " + node_name(*next->node) + " into an empty range");
      width = end - *at;
      covered = end;
    }
    parts.push_back({next->node->output(0), width});
    at = next->end.at && at ? std::optional<int64_t>(std::min(*next->end.at, total)) : std::nullopt;
    at_value = next->end.value;
  }
  if (parts.size() != n || parts.size() != cuts.size())
    refuse("no Split (or " + std::to_string(n) + " Slices, each starting where the previous ends) of " + what);
  if (at && covered != total)
    refuse(what + "'s parts cover " + std::to_string(covered) + " of its " + std::to_string(total) + " columns");
  return parts;
}

// q, k and v of GPT-2's fused projection: three parts of d_model each.
std::vector<std::string> Recovery::qkv_parts(const std::string& qkv, const std::string& block) const {
  const std::string what = block + "'s fused QKV projection";
  std::vector<std::string> out;
  for (const Part& p : parts_of(qkv, 3, 3 * d_model_, what)) {
    if (p.width != d_model_) refuse(what + " is not cut into three parts of " + std::to_string(d_model_));
    out.push_back(p.value);
  }
  return out;
}

template <size_t N>
void Recovery::check_module_path(const RoleName (&names)[N], const Linear& l, Role role, const std::string& block) const {
  const std::string& name = l.node->name();
  const size_t last = name.rfind('/');
  if (last == std::string::npos || last == 0) return;
  std::string path = name.substr(0, last);
  // torch 1.13 numbered repeated module names (c_proj_1).
  if (const size_t u = path.rfind('_'); u != std::string::npos && u + 1 < path.size() && path.find('/', u) == std::string::npos &&
                                        path.find_first_not_of("0123456789", u + 1) == std::string::npos)
    path.resize(u);
  for (const auto& r : names) {
    const std::string module = std::string("/") + r.module;
    if (path.size() < module.size() || path.compare(path.size() - module.size(), module.size(), module) != 0) continue;
    if (r.role != role)
      refuse(node_name(*l.node) + " is named as the " + role_name(r.role) + " projection, but the data flow makes it " + block +
             "'s " + role_name(role) + " projection");
    return;
  }
}

void Recovery::gpt2_attention(Gpt2Layer& layer, const std::string& block) {
  const std::string d = std::to_string(d_model_);
  layer.c_attn = next_biased_linear(layer.ln_1.output, "fused QKV projection (a linear with bias) after " + block + "'s ln_1");
  const Linear& qkv = layer.c_attn.linear;
  if (qkv.in != d_model_ || qkv.out != 3 * d_model_)
    refuse(block + "'s first linear after ln_1 is [" + std::to_string(qkv.in) + " -> " + std::to_string(qkv.out) +
           "], not the fused QKV projection [" + d + " -> 3 × " + d + "]");
  // The Split (or three Slices) into thirds; which third is q, k and v is read from where each
  // goes: q and k meet in the scores MatMul (q first), v is the second input of the MatMul after
  // the softmax.
  const std::vector<std::string> parts = qkv_parts(layer.c_attn.output, block);
  std::vector<OnnxGraph::Hit> hits;
  for (int i = 0; i < 3; ++i)
    hits.push_back(g_.find_forward(parts[i], [&](const Node& n, int) { return is_dynamic_matmul(n, g_); }));
  if (!hits[0].node || hits[0].node != hits[1].node || hits[0].input != 0 || hits[1].input != 1 || !hits[2].node ||
      hits[2].node == hits[0].node || hits[2].input != 1)
    refuse(block + "'s fused QKV projection is not split as q | k | v (the first part into the scores MatMul's first input, "
                   "the second into its second, the third into the MatMul after the softmax)");
  layer.q = parts[0];
  layer.attn_proj = next_biased_linear(hits[2].node->output(0), "output projection (c_proj) after the attention of " + block);
  check_gpt2_name(layer.c_attn.linear, Role::Qkv, block);
  check_gpt2_name(layer.attn_proj.linear, Role::O, block);
  if (layer.attn_proj.linear.in != d_model_ || layer.attn_proj.linear.out != d_model_)
    refuse(block + "'s attention output projection is not [" + d + " -> " + d + "]");
}

void Recovery::gpt2_ffn(Gpt2Layer& layer, const std::string& block) {
  layer.c_fc = next_biased_linear(layer.ln_2.output, "FFN input projection (c_fc) after " + block + "'s ln_2");
  // GELU's tanh approximation: a Tanh (torch writes gelu_new as its formula), or a Gelu op with
  // approximate = "tanh". Erf is the exact GELU, which GPT-2 does not use.
  const auto act = g_.find_forward(layer.c_fc.output, [&](const Node& n, int input) {
    static const char* const kActivations[] = {"Tanh", "Gelu", "Erf", "Sigmoid", "Relu"};
    for (const char* a : kActivations)
      if (n.op_type() == a) return true;
    return input == 0 && as_biased_linear(n, g_).has_value();
  });
  const bool tanh_gelu = act.node && (act.node->op_type() == "Tanh" ||
                                      (act.node->op_type() == "Gelu" && string_attribute(*act.node, "approximate", "none") == "tanh"));
  if (!tanh_gelu)
    refuse(block + "'s FFN activation is " + (act.node ? node_name(*act.node) : std::string("not found")) +
           ", not GELU's tanh approximation (a Tanh, or Gelu with approximate = tanh)");
  layer.mlp_proj = next_biased_linear(layer.c_fc.output, "FFN output projection (c_proj) in " + block);
  check_gpt2_name(layer.c_fc.linear, Role::Up, block);
  check_gpt2_name(layer.mlp_proj.linear, Role::Down, block);
  if (layer.mlp_proj.linear.in != layer.c_fc.linear.out || layer.mlp_proj.linear.out != d_model_)
    refuse(block + "'s FFN output projection is [" + std::to_string(layer.mlp_proj.linear.in) + " -> " +
           std::to_string(layer.mlp_proj.linear.out) + "], not [" + std::to_string(layer.c_fc.linear.out) + " -> " +
           std::to_string(d_model_) + "]");
}

// GPT-2 config.json keys a config.json beside the graph may state (its values win). The activation
// and the tied head are what the graph shows.
constexpr const char* kGpt2ConfigKeys[] = {"n_embd", "n_layer", "n_head", "vocab_size", "n_positions", "n_inner",
                                          "layer_norm_epsilon"};

void Recovery::run_gpt2(const json& hf_config) {
  // Pre-LayerNorm blocks: ln_1 → fused QKV → attention → c_proj, ln_2 → c_fc → GELU → c_proj; the
  // last LayerNorm (ln_f) feeds the output projection.
  std::vector<LayerNormAt> norms;
  for (const Node* n : g_.order())
    if (auto ln = layer_norm(*n)) norms.push_back(*ln);
  if (norms.size() < 3 || norms.size() % 2 == 0)
    refuse(std::to_string(norms.size()) + " LayerNorms with a [d_model " + std::to_string(d_model_) +
           "] weight and bias; a GPT-2 of n blocks has 2n + 1 (ln_1, ln_2 per block, ln_f)");
  for (size_t i = 0; i + 1 < norms.size(); i += 2) {
    const std::string block = "block " + std::to_string(gpt2_layers_.size());
    Gpt2Layer layer;
    layer.ln_1 = norms[i];
    layer.ln_2 = norms[i + 1];
    gpt2_attention(layer, block);
    gpt2_ffn(layer, block);
    gpt2_layers_.push_back(std::move(layer));
  }
  gpt2_final_norm_ = norms.back();
  head_ = next_linear(gpt2_final_norm_.output, "output projection after the final LayerNorm");
  check_gpt2_name(head_, Role::Head, "the model");
  check_head_shape();
  const Gpt2Layer& first = gpt2_layers_.front();
  for (size_t i = 0; i < gpt2_layers_.size(); ++i) {
    const Gpt2Layer& l = gpt2_layers_[i];
    if (l.c_fc.linear.out != first.c_fc.linear.out)
      refuse("block " + std::to_string(i) + "'s FFN is " + std::to_string(l.c_fc.linear.out) + " wide, block 0's " +
             std::to_string(first.c_fc.linear.out));
    for (const LayerNormAt* ln : {&l.ln_1, &l.ln_2})
      if (ln->eps != first.ln_1.eps) refuse("the LayerNorms' epsilons differ (block " + std::to_string(i) + ")");
  }
  if (gpt2_final_norm_.eps != first.ln_1.eps) refuse("the final LayerNorm's epsilon differs from the blocks'");
  json config = {{"architectures", {"GPT2LMHeadModel"}},
                 {"model_type", "gpt2"},
                 {"n_embd", d_model_},
                 {"n_layer", int64_t(gpt2_layers_.size())},
                 {"vocab_size", vocab_},
                 {"n_positions", g_.initializer(pos_embed_)->shape[0]},
                 {"n_inner", first.c_fc.linear.out},
                 {"layer_norm_epsilon", first.ln_1.eps},
                 {"activation_function", "gelu_new"}};
  if (const auto [heads, head_dim] = heads_after(first.q, d_model_); heads) config["n_head"] = *heads;
  if (hf_config.is_object())
    for (const char* k : kGpt2ConfigKeys)
      if (hf_config.contains(k)) config[k] = hf_config[k];
  if (!config.contains("n_head"))
    refuse("no head count (no Reshape of q to [.., heads, head_dim]) and no config.json stating n_head");
  const bool tied = head_is_embedding();
  config["tie_word_embeddings"] = tied;
  emit_gpt2(config, tied);
}

// Hugging Face's GPT-2 names (the hub's, GPT2Model's state dict); Conv1D weights are [in, out],
// the layout MatMul and Gemm (transB = 0) keep them in.
struct Gpt2Names {
  const char *ln_1, *ln_1_bias, *c_attn, *c_attn_bias, *attn_proj, *attn_proj_bias, *ln_2, *ln_2_bias, *c_fc, *c_fc_bias,
      *mlp_proj, *mlp_proj_bias;
};
constexpr Gpt2Names kGpt2Names = {"h.{i}.ln_1.weight",        "h.{i}.ln_1.bias",        "h.{i}.attn.c_attn.weight",
                                  "h.{i}.attn.c_attn.bias",   "h.{i}.attn.c_proj.weight", "h.{i}.attn.c_proj.bias",
                                  "h.{i}.ln_2.weight",        "h.{i}.ln_2.bias",        "h.{i}.mlp.c_fc.weight",
                                  "h.{i}.mlp.c_fc.bias",      "h.{i}.mlp.c_proj.weight", "h.{i}.mlp.c_proj.bias"};

void Recovery::emit_gpt2(const json& config, bool tied) {
  std::map<std::string, LazyTensor> out;
  enum class Layout { AsStored, InOut, OutIn };  // the target layout of a linear's weight
  const auto take = [&](const std::string& onnx_name, const std::string& name, const Linear* linear, Layout layout) {
    LazyTensor t = *g_.initializer(onnx_name);
    if (linear && layout == Layout::InOut && !linear->in_out) t.shape = {linear->in, linear->out}, t.strides = {1, linear->in};
    if (linear && layout == Layout::OutIn && linear->in_out) t.shape = {linear->out, linear->in}, t.strides = {1, linear->out};
    t.name = name;
    if (!out.emplace(name, t).second) fail(m_.path + ": initializer " + onnx_name + " is claimed twice");
  };
  take(embed_, "wte.weight", nullptr, Layout::AsStored);
  take(pos_embed_, "wpe.weight", nullptr, Layout::AsStored);
  for (size_t i = 0; i < gpt2_layers_.size(); ++i) {
    const Gpt2Layer& l = gpt2_layers_[i];
    const auto norm = [&](const LayerNormAt& ln, const char* w, const char* b) {
      take(ln.weight, with_layer(w, i), nullptr, Layout::AsStored);
      take(ln.bias, with_layer(b, i), nullptr, Layout::AsStored);
    };
    const auto conv = [&](const BiasedLinear& x, const char* w, const char* b) {
      take(x.linear.weight, with_layer(w, i), &x.linear, Layout::InOut);
      take(x.bias, with_layer(b, i), nullptr, Layout::AsStored);
    };
    const Gpt2Names& n = kGpt2Names;
    norm(l.ln_1, n.ln_1, n.ln_1_bias);
    conv(l.c_attn, n.c_attn, n.c_attn_bias);
    conv(l.attn_proj, n.attn_proj, n.attn_proj_bias);
    norm(l.ln_2, n.ln_2, n.ln_2_bias);
    conv(l.c_fc, n.c_fc, n.c_fc_bias);
    conv(l.mlp_proj, n.mlp_proj, n.mlp_proj_bias);
  }
  take(gpt2_final_norm_.weight, "ln_f.weight", nullptr, Layout::AsStored);
  take(gpt2_final_norm_.bias, "ln_f.bias", nullptr, Layout::AsStored);
  if (!tied) take(head_.weight, "lm_head.weight", &head_, Layout::OutIn);  // nn.Linear's [vocab, d_model]
  m_.tensors = std::move(out);
  m_.config = config;
  m_.config_kind = "hf_config";
}

// ---- ChatGLM2/3 ----

// A bias after a linear the released ChatGLM2/3 (add_bias_linear false) has none on: refused, as a
// bias left unread would change the logits without a word.
void Recovery::refuse_bias(const Linear& l, const std::string& what) const {
  if (as_biased_linear(*l.node, g_))
    refuse(what + " " + node_name(*l.node) + " is followed by a bias (add_bias_linear), which the ONNX reader does not read");
}

void Recovery::glm2_attention(Glm2Layer& layer, const Linear& qkv, const std::string& block) {
  // query_key_value → Split into q heads | k groups | v groups; which part is which is read from
  // where each goes, as for GPT-2's c_attn; the widths give the groups.
  layer.qkv = qkv;
  std::string out = qkv.node->output(0);
  if (const auto biased = as_biased_linear(*qkv.node, g_)) layer.qkv_bias = biased->bias, out = biased->output;
  const std::string what = block + "'s fused QKV projection";
  const std::vector<Part> parts = parts_of(out, 3, qkv.out, what);
  std::vector<OnnxGraph::Hit> hits;
  for (const Part& p : parts) hits.push_back(g_.find_forward(p.value, [&](const Node& n, int) { return is_dynamic_matmul(n, g_); }));
  if (!hits[0].node || hits[0].node != hits[1].node || hits[0].input != 0 || hits[1].input != 1 || !hits[2].node ||
      hits[2].node == hits[0].node || hits[2].input != 1)
    refuse(what + " is not split as q | k | v (the first part into the scores MatMul's first input, the second into its "
                  "second, the third into the MatMul after the softmax)");
  if (!parts[0].width || !parts[1].width || parts[1].width != parts[2].width)
    refuse(what + " is not cut into q and two equal k and v parts of constant widths");
  layer.q = parts[0].value, layer.k = parts[1].value;
  layer.q_width = *parts[0].width, layer.kv_width = *parts[1].width;
  layer.dense = next_linear(hits[2].node->output(0), "output projection (dense) after the attention of " + block);
  check_glm2_name(layer.qkv, Role::Qkv, block);
  check_glm2_name(layer.dense, Role::O, block);
  refuse_bias(layer.dense, block + "'s output projection");
  if (layer.dense.in != layer.q_width || layer.dense.out != d_model_)
    refuse(block + "'s attention output projection is [" + std::to_string(layer.dense.in) + " -> " +
           std::to_string(layer.dense.out) + "], not [" + std::to_string(layer.q_width) + " -> " + std::to_string(d_model_) + "]");
}

void Recovery::glm2_ffn(Glm2Layer& layer, const Linear& h_to_4h, const std::string& block) {
  // dense_h_to_4h → chunk(2): silu(first half) * second half → dense_4h_to_h. torch.onnx.export
  // writes silu as x * Sigmoid(x).
  layer.h_to_4h = h_to_4h;
  check_glm2_name(layer.h_to_4h, Role::GateUp, block);
  refuse_bias(layer.h_to_4h, block + "'s FFN input projection");
  const std::string what = block + "'s fused gate and up projection";
  if (h_to_4h.out % 2 != 0) refuse(what + " is " + std::to_string(h_to_4h.out) + " wide, not two equal halves");
  const std::vector<Part> parts = parts_of(h_to_4h.node->output(0), 2, h_to_4h.out, what);
  for (const Part& p : parts)
    if (p.width && *p.width != h_to_4h.out / 2) refuse(what + " is not cut into two halves");
  const auto feeds_sigmoid = [&](const std::string& v) {
    for (const Node* c : g_.consumers(v))
      if (c->op_type() == "Sigmoid") return true;
    return false;
  };
  if (!feeds_sigmoid(parts[0].value) || feeds_sigmoid(parts[1].value))
    refuse(what + " is not SwiGLU over [gate | up] (the first half, and only it, should feed a Sigmoid)");
  layer.down = next_linear(parts[0].value, "down projection (dense_4h_to_h) in " + block);
  if (next_linear(parts[1].value, "down projection after the up half in " + block).node != layer.down.node)
    refuse(block + "'s gate and up halves do not meet before the same down projection");
  check_glm2_name(layer.down, Role::Down, block);
  refuse_bias(layer.down, block + "'s FFN output projection");
  if (layer.down.in != h_to_4h.out / 2 || layer.down.out != d_model_)
    refuse(block + "'s FFN output projection is [" + std::to_string(layer.down.in) + " -> " + std::to_string(layer.down.out) +
           "], not [" + std::to_string(h_to_4h.out / 2) + " -> " + std::to_string(d_model_) + "]");
}

// ChatGLM2/3 config.json keys a config.json beside the graph may state (its values win).
constexpr const char* kGlm2ConfigKeys[] = {"hidden_size",     "num_layers",        "num_attention_heads", "multi_query_group_num",
                                          "kv_channels",     "ffn_hidden_size",   "padded_vocab_size",   "layernorm_epsilon",
                                          "seq_length",      "rope_ratio"};
// ChatGLM's rotary base before ChatGLM3's rope_ratio multiplies it (converters/architectures/chatglm.cpp).
constexpr double kGlm2RopeBase = 10000;

void Recovery::run_chatglm2(const json& hf_config) {
  // Pre-RMSNorm blocks, each norm's Mul by its weight feeding one linear: input_layernorm →
  // query_key_value, post_attention_layernorm → dense_h_to_4h, and final_layernorm → output_layer.
  std::vector<std::pair<const Node*, Linear>> norms;
  for (const Node* n : g_.order()) {
    if (n->op_type() != "Mul" || n->input_size() != 2 || n->output_size() != 1) continue;
    bool weighted = false;
    for (int i = 0; i < 2; ++i)
      if (const LazyTensor* t = g_.initializer(n->input(i)); t && t->shape.size() == 1 && t->shape[0] == d_model_) weighted = true;
    if (!weighted) continue;
    std::vector<Linear> fed;
    for (const Node* c : g_.consumers(n->output(0)))
      if (auto l = as_linear(*c, g_); l && c->input(0) == n->output(0)) fed.push_back(*l);
    if (fed.size() > 1) refuse(node_name(*n) + " (a norm) feeds " + std::to_string(fed.size()) + " linears; ChatGLM2's feed one");
    if (fed.size() == 1) norms.push_back({n, fed[0]});
  }
  if (norms.size() < 3 || norms.size() % 2 == 0)
    refuse(std::to_string(norms.size()) + " RMSNorms feeding a linear; a ChatGLM2 of n blocks has 2n + 1 (input_layernorm, "
           "post_attention_layernorm per block, final_layernorm)");
  const auto weight_of = [&](const Node* n) { return g_.initializer(n->input(1)) ? n->input(1) : n->input(0); };
  for (size_t i = 0; i + 1 < norms.size(); i += 2) {
    const std::string block = "block " + std::to_string(glm2_layers_.size());
    Glm2Layer layer;
    layer.attn_norm = weight_of(norms[i].first);
    layer.ffn_norm = weight_of(norms[i + 1].first);
    glm2_attention(layer, norms[i].second, block);
    glm2_ffn(layer, norms[i + 1].second, block);
    glm2_layers_.push_back(std::move(layer));
  }
  final_norm_ = weight_of(norms.back().first);
  head_ = norms.back().second;
  check_glm2_name(head_, Role::Head, "the model");
  check_head_shape();
  const Glm2Layer& first = glm2_layers_.front();
  for (size_t i = 0; i < glm2_layers_.size(); ++i) {
    const Glm2Layer& l = glm2_layers_[i];
    if (l.q_width != first.q_width || l.kv_width != first.kv_width || l.h_to_4h.out != first.h_to_4h.out ||
        l.qkv_bias.empty() != first.qkv_bias.empty())
      refuse("block " + std::to_string(i) + "'s projections differ from block 0's in width or bias");
  }
  json config = {{"architectures", {"ChatGLMModel"}},
                 {"model_type", "chatglm"},
                 {"hidden_size", d_model_},
                 {"num_layers", int64_t(glm2_layers_.size())},
                 {"padded_vocab_size", vocab_},
                 {"ffn_hidden_size", first.h_to_4h.out / 2},
                 {"add_qkv_bias", !first.qkv_bias.empty()},
                 {"add_bias_linear", false},
                 {"multi_query_attention", true},
                 {"rmsnorm", true},
                 {"post_layer_norm", true},
                 {"apply_residual_connection_post_layernorm", false},
                 {"tie_word_embeddings", false}};
  // Heads and groups from the Reshapes of q and k to [.., heads, kv_channels].
  const auto [heads, head_dim] = heads_after(first.q, first.q_width);
  const auto [groups, kv_dim] = heads_after(first.k, first.kv_width);
  if (heads) config["num_attention_heads"] = *heads;
  if (head_dim) config["kv_channels"] = *head_dim;
  if (groups) config["multi_query_group_num"] = *groups;
  if (hf_config.is_object())
    for (const char* k : kGlm2ConfigKeys)
      if (hf_config.contains(k)) config[k] = hf_config[k];
  for (const char* k : {"num_attention_heads", "kv_channels", "multi_query_group_num"})
    if (!config.contains(k) || !config[k].is_number_integer() || config[k].get<int64_t>() <= 0)
      refuse(std::string("no ") + k + " (no Reshape of q and k to [.., heads, kv_channels]) and no config.json stating it");
  const int64_t hd = config["kv_channels"].get<int64_t>();
  // Compared by division: stated or hostile counts may be too large to multiply.
  const auto spans = [&](const char* count, int64_t width) {
    const int64_t c = config[count].get<int64_t>();
    return width % c == 0 && width / c == hd;
  };
  if (!spans("num_attention_heads", first.q_width) || !spans("multi_query_group_num", first.kv_width))
    refuse("heads x kv_channels do not give q's width " + std::to_string(first.q_width) + " and k's " +
           std::to_string(first.kv_width));
  if (hd % 4 != 0) refuse("kv_channels " + std::to_string(hd) + " is not a multiple of 4 (RoPE rotates pairs of its first half)");
  if (!config.contains("layernorm_epsilon")) config["layernorm_epsilon"] = norm_eps(*norms.front().first);
  // RoPE on the first half of each head as interleaved pairs (no Neg: not rotate-half).
  const Rope r = rope(*first.qkv.node, first.q, hd / 2, false);
  if (r.rotate_half) refuse("the rotary embedding on q negates a half (rotate-half); ChatGLM2 rotates interleaved pairs");
  if (!config.contains("rope_ratio")) {
    if (!r.theta) refuse("no RoPE base (no rotary cache or inverse frequencies in the graph) and no config.json stating rope_ratio");
    if (*r.theta != kGlm2RopeBase) config["rope_ratio"] = *r.theta / kGlm2RopeBase;
  }
  if (!config.contains("seq_length") && r.max_positions > 0) config["seq_length"] = r.max_positions;
  emit_glm2(config);
}

// THUDM's ChatGLM2/3 names (the chatglm2 architecture map reads them); nn.Linear weights [out, in].
struct Glm2Names {
  const char *attn_norm, *qkv, *qkv_bias, *dense, *ffn_norm, *h_to_4h, *down;
};
constexpr Glm2Names kGlm2Names = {"transformer.encoder.layers.{i}.input_layernorm.weight",
                                  "transformer.encoder.layers.{i}.self_attention.query_key_value.weight",
                                  "transformer.encoder.layers.{i}.self_attention.query_key_value.bias",
                                  "transformer.encoder.layers.{i}.self_attention.dense.weight",
                                  "transformer.encoder.layers.{i}.post_attention_layernorm.weight",
                                  "transformer.encoder.layers.{i}.mlp.dense_h_to_4h.weight",
                                  "transformer.encoder.layers.{i}.mlp.dense_4h_to_h.weight"};

void Recovery::emit_glm2(const json& config) {
  std::map<std::string, LazyTensor> out;
  const auto take = [&](const std::string& onnx_name, const std::string& name, const Linear* linear) {
    LazyTensor t = *g_.initializer(onnx_name);
    if (linear && linear->in_out) t.shape = {linear->out, linear->in}, t.strides = {1, linear->out};
    t.name = name;
    if (!out.emplace(name, t).second) fail(m_.path + ": initializer " + onnx_name + " is claimed twice");
  };
  take(embed_, "transformer.embedding.word_embeddings.weight", nullptr);
  for (size_t i = 0; i < glm2_layers_.size(); ++i) {
    const Glm2Layer& l = glm2_layers_[i];
    const Glm2Names& n = kGlm2Names;
    take(l.attn_norm, with_layer(n.attn_norm, i), nullptr);
    take(l.qkv.weight, with_layer(n.qkv, i), &l.qkv);
    if (!l.qkv_bias.empty()) take(l.qkv_bias, with_layer(n.qkv_bias, i), nullptr);
    take(l.dense.weight, with_layer(n.dense, i), &l.dense);
    take(l.ffn_norm, with_layer(n.ffn_norm, i), nullptr);
    take(l.h_to_4h.weight, with_layer(n.h_to_4h, i), &l.h_to_4h);
    take(l.down.weight, with_layer(n.down, i), &l.down);
  }
  take(final_norm_, "transformer.encoder.final_layernorm.weight", nullptr);
  // ChatGLM2 never ties: a head that is the embedding's copy is still read as output_layer.
  take(head_.weight, "transformer.output_layer.weight", &head_);
  m_.tensors = std::move(out);
  m_.config = config;
  m_.config_kind = "hf_config";
}

}  // namespace

void recover_structure(SourceModel& m, const OnnxGraph& graph, const json& hf_config) {
  Recovery(m, graph).run(hf_config);
}

}  // namespace sf
