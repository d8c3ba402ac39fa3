// The LLaMA family's recovery (RMSNorm, separate q, k, v; Meta's and Hugging Face's names).
#include "converters/onnx/onnx_recovery.h"

namespace sf::onnx_recovery {

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


void Recovery::emit(const json& config, bool rotate_half, bool tied) {
  const Names& names = rotate_half ? kHfNames : kMetaNames;
  std::map<std::string, LazyTensor> out;
  const auto take = [&](const std::string& onnx_name, const std::string& name, const Linear* linear) {
    take_out_in(out, onnx_name, name, linear);
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
  // A rotation of part of each head is not LLaMA's: ChatGLM2/3 as shardforge's writer gives it.
  if (const auto dims = rotary_table_dims(*first.q.node); dims && *dims < *head_dim)
    return run_chatglm2_separate(hf_config, *n_heads, config["n_kv_heads"].get<int64_t>(), *head_dim, *dims);
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
    // LLaMA's linears have no biases: one left unread would change the logits without a word (an
    // InternLM2 written with biases is such a graph).
    for (const Linear* x : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down})
      if (as_biased_linear(*x->node, g_))
        refuse("block " + std::to_string(i) + "'s " + node_name(*x->node) + " is followed by a bias, which LLaMA's linears do not have");
  }
  emit(config, r.rotate_half, head_is_embedding());
}


}  // namespace sf::onnx_recovery
