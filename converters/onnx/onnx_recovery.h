#pragma once
// The structure recovery's shared parts (onnx_structure.h): what a linear, a norm and a layer are in
// an ONNX graph, and the Recovery that finds them, whose family rules live one file per family
// (onnx_structure_llama.cpp, onnx_structure_gpt2.cpp, onnx_structure_chatglm2.cpp). Internal to
// converters/onnx.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "onnx/onnx.pb.h"

#include "converters/onnx/onnx_graph.h"
#include "converters/source_model.h"
#include "core/error.h"

namespace sf::onnx_recovery {


using Node = onnx::NodeProto;

// A linear layer: a MatMul (or Gemm) whose weight is a 2-D initializer. torch.onnx.export stores
// constant-folded weights transposed, [in, out]; Gemm with transB = 1 keeps [out, in].
struct Linear {
  const Node* node = nullptr;
  std::string weight;
  bool in_out = true;
  int64_t in = 0, out = 0;
};

inline int64_t int_attribute(const Node& n, const char* name, int64_t fallback) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return a.i();
  return fallback;
}

inline float float_attribute(const Node& n, const char* name, float fallback) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return a.f();
  return fallback;
}

inline std::optional<Linear> as_linear(const Node& n, const OnnxGraph& g) {
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
// it), or MatMul(x, W) or Gemm(x, W) followed by Add(b) (shardforge's writer). `output` is the value after the bias.
struct BiasedLinear {
  Linear linear;
  std::string bias, output;
};

inline std::optional<BiasedLinear> as_biased_linear(const Node& n, const OnnxGraph& g) {
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
  if (gemm && n.input_size() >= 3 && !n.input(2).empty()) {
    if (!is_bias(n.input(2))) return std::nullopt;
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

inline std::string string_attribute(const Node& n, const char* name, const std::string& fallback) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return a.s();
  return fallback;
}

// A constant stored as f32 (1e-5 reads back as 9.99999974e-06): the shortest decimal that is the
// same f32, which is what the exporter was given.
inline double f32_decimal(double v) {
  const float f = float(v);
  for (int digits = 1; digits <= 9; ++digits) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.*g", digits, double(f));
    const double d = std::strtod(buf, nullptr);
    if (float(d) == f) return d;
  }
  return v;
}

inline bool is_dynamic_matmul(const Node& n, const OnnxGraph& g) {
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
inline const char* role_name(Role r) {
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
  // q, k and v as separate projections (shardforge's writer), in that order; c_attn is then their
  // concatenation, and empty here when the graph has the fused one.
  std::vector<BiasedLinear> qkv;
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
inline const char* describe(NormSignature n) { return n == NormSignature::Rms ? "RMSNorm (no mean subtracted)" : "LayerNorm (mean subtracted)"; }
inline const char* describe(PositionSignature p) {
  return p == PositionSignature::Learned ? "a learned position embedding added to the token embedding" : "no learned position embedding";
}
inline const char* describe(ProjectionSignature p) {
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
  // ChatGLM2/3 as shardforge's writer gives it: LLaMA's shape (separate q, k, v and gate, up; the
  // layers found by find_blocks) with RoPE over the first half of each head.
  void run_chatglm2_separate(const json& hf_config, int64_t heads, int64_t groups, int64_t head_dim, int64_t rotary_dims);
  void emit_glm2_separate(const json& config, const std::vector<std::vector<BiasedLinear>>& qkv_biased);

  [[noreturn]] void refuse(const std::string& what) const {
    fail(m_.path + ": not a graph shardforge recognises (" + shape_ + "): " + what, ErrorKind::Unsupported);
  }
  // Every family's output projection maps d_model to the vocabulary.
  void check_head_shape() const {
    if (head_.in != d_model_ || head_.out != vocab_)
      refuse("the output projection is [" + std::to_string(head_.in) + " -> " + std::to_string(head_.out) +
             "], not [d_model " + std::to_string(d_model_) + " -> vocab " + std::to_string(vocab_) + "]");
  }
  // Puts initializer onnx_name into `out` as tensor `name`; a linear's weight as [out, in] (a
  // transposed view where the graph holds [in, out]). One initializer claimed twice is refused.
  void take_out_in(std::map<std::string, LazyTensor>& out, const std::string& onnx_name, const std::string& name,
                   const Linear* linear) const {
    LazyTensor t = *g_.initializer(onnx_name);
    if (linear && linear->in_out) t.shape = {linear->out, linear->in}, t.strides = {1, linear->out};
    t.name = name;
    if (!out.emplace(name, t).second) fail(m_.path + ": initializer " + onnx_name + " is claimed twice");
  }
  // The config.json THUDM's ChatGLM2/3 code reads, as far as it is fixed for the family: the rest
  // (heads, groups, eps, rope) is recovered from the graph or taken from a config beside it.
  json glm2_config(int64_t layers, int64_t ffn_hidden, bool qkv_bias) const {
    return {{"architectures", {"ChatGLMModel"}},
            {"model_type", "chatglm"},
            {"hidden_size", d_model_},
            {"num_layers", layers},
            {"padded_vocab_size", vocab_},
            {"ffn_hidden_size", ffn_hidden},
            {"add_qkv_bias", qkv_bias},
            {"add_bias_linear", false},
            {"multi_query_attention", true},
            {"rmsnorm", true},
            {"post_layer_norm", true},
            {"apply_residual_connection_post_layernorm", false},
            {"tie_word_embeddings", false}};
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
  // The dims a cos table [positions, dims / 2] (row 0 all ones) on q's path to the scores rotates;
  // nullopt when there is none of that shape.
  std::optional<int64_t> rotary_table_dims(const Node& projection) const;
  bool head_is_embedding() const;
  void emit(const json& config, bool rotate_half, bool tied);
};

inline std::string with_layer(const char* pattern, size_t i) {
  std::string s = pattern;
  const auto at = s.find("{i}");
  return at == std::string::npos ? s : s.replace(at, 3, std::to_string(i));
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

}  // namespace sf::onnx_recovery
