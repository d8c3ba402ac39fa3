// ChatGLM2/3's recovery (RMSNorm, fused query_key_value, partial RoPE).
#include "converters/onnx/onnx_recovery.h"

namespace sf::onnx_recovery {

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
  json config = glm2_config(int64_t(glm2_layers_.size()), first.h_to_4h.out / 2, !first.qkv_bias.empty());
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
    take_out_in(out, onnx_name, name, linear);
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


void Recovery::run_chatglm2_separate(const json& hf_config, int64_t heads, int64_t groups, int64_t head_dim,
                                     int64_t rotary_dims) {
  shape_ = "a ChatGLM2-shaped decoder";
  if (rotary_dims * 2 != head_dim)
    refuse("the rotary embedding turns " + std::to_string(rotary_dims) + " of each head's " + std::to_string(head_dim) +
           " dims; LLaMA turns all, ChatGLM2 the first half");
  // q, k and v all with biases (add_qkv_bias) or none; no other linear has one (add_bias_linear).
  std::vector<std::vector<BiasedLinear>> qkv_biased;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    const std::string block = "block " + std::to_string(i);
    std::vector<BiasedLinear> biased;
    for (const Linear* x : {&l.q, &l.k, &l.v})
      if (const auto b = as_biased_linear(*x->node, g_)) biased.push_back(*b);
    if (!biased.empty() && biased.size() != 3) refuse(block + "'s q, k and v are not all with a bias or all without");
    if (i > 0 && biased.empty() != qkv_biased.front().empty()) refuse(block + "'s q, k and v biases differ from block 0's");
    qkv_biased.push_back(std::move(biased));
    refuse_bias(l.o, block + "'s dense");
    refuse_bias(l.gate, block + "'s dense_h_to_4h");
    refuse_bias(l.up, block + "'s dense_h_to_4h");
    refuse_bias(l.down, block + "'s dense_4h_to_h");
  }
  const Layer& first = layers_.front();
  json config = glm2_config(int64_t(layers_.size()), first.gate.out, !qkv_biased.front().empty());
  config["num_attention_heads"] = heads;
  config["multi_query_group_num"] = groups;
  config["kv_channels"] = head_dim;
  if (hf_config.is_object())
    for (const char* k : kGlm2ConfigKeys)
      if (hf_config.contains(k)) config[k] = hf_config[k];
  if (!config.contains("layernorm_epsilon")) config["layernorm_epsilon"] = norm_eps(*g_.producer(first.q.node->input(0)));
  const Rope r = rope(*first.q.node, first.q.node->output(0), rotary_dims, false);
  if (r.rotate_half) refuse("the rotary embedding on q negates a half (rotate-half); ChatGLM2 rotates interleaved pairs");
  if (!config.contains("rope_ratio")) {
    if (!r.theta) refuse("no RoPE base (no rotary tables in the graph) and no config.json stating rope_ratio");
    if (*r.theta != kGlm2RopeBase) config["rope_ratio"] = *r.theta / kGlm2RopeBase;
  }
  if (!config.contains("seq_length") && r.max_positions > 0) config["seq_length"] = r.max_positions;
  emit_glm2_separate(config, qkv_biased);
}

void Recovery::emit_glm2_separate(const json& config, const std::vector<std::vector<BiasedLinear>>& qkv_biased) {
  std::map<std::string, LazyTensor> out;
  // A weight [out, in] as nn.Linear keeps it (a transposed view of a MatMul's [in, out]).
  const auto as_linear_weight = [&](const Linear& l, const std::string& name) {
    LazyTensor t = *g_.initializer(l.weight);
    if (l.in_out) t.shape = {l.out, l.in}, t.strides = {1, l.out};
    t.name = name;
    return t;
  };
  const auto put = [&](LazyTensor t) {
    const std::string name = t.name;
    if (!out.emplace(name, std::move(t)).second) fail(m_.path + ": " + name + " is claimed twice");
  };
  const auto take = [&](const std::string& onnx_name, const std::string& name) {
    LazyTensor t = *g_.initializer(onnx_name);
    t.name = name;
    put(std::move(t));
  };
  // The fused projections THUDM stores: their parts' rows one after another (read in place).
  const auto stacked = [&](const std::string& name, std::vector<LazyTensor> parts) {
    LazyTensor t;
    t.name = name;
    t.dtype = parts.front().dtype;
    t.shape = parts.front().shape;
    t.shape[0] = 0;
    for (const auto& p : parts) t.shape[0] += p.shape[0];
    t.parts = std::move(parts);
    put(std::move(t));
  };
  take(embed_, "transformer.embedding.word_embeddings.weight");
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    const Glm2Names& n = kGlm2Names;
    const std::string qkv = with_layer(n.qkv, i), h_to_4h = with_layer(n.h_to_4h, i);
    take(l.attn_norm, with_layer(n.attn_norm, i));
    stacked(qkv, {as_linear_weight(l.q, qkv), as_linear_weight(l.k, qkv), as_linear_weight(l.v, qkv)});
    if (!qkv_biased[i].empty()) {
      std::vector<LazyTensor> biases;
      for (const BiasedLinear& b : qkv_biased[i]) biases.push_back(*g_.initializer(b.bias));
      stacked(with_layer(n.qkv_bias, i), biases);
    }
    put(as_linear_weight(l.o, with_layer(n.dense, i)));
    take(l.ffn_norm, with_layer(n.ffn_norm, i));
    stacked(h_to_4h, {as_linear_weight(l.gate, h_to_4h), as_linear_weight(l.up, h_to_4h)});
    put(as_linear_weight(l.down, with_layer(n.down, i)));
  }
  take(final_norm_, "transformer.encoder.final_layernorm.weight");
  put(as_linear_weight(head_, "transformer.output_layer.weight"));
  m_.tensors = std::move(out);
  m_.config = config;
  m_.config_kind = "hf_config";
}

}  // namespace sf::onnx_recovery
