// GPT-2's recovery (LayerNorm, learned positions, biases, GELU).
#include "converters/onnx/onnx_recovery.h"

namespace sf::onnx_recovery {

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

void Recovery::gpt2_attention(Gpt2Layer& layer, const std::string& block) {
  const std::string d = std::to_string(d_model_);
  // shardforge's writer: q, k and v as three linears with biases reading ln_1's output, each
  // [d -> d]; torch.onnx.export: one fused c_attn [d -> 3d] cut into thirds after.
  for (const Node* c : g_.consumers(layer.ln_1.output))
    if (c->input_size() > 0 && c->input(0) == layer.ln_1.output)
      if (const auto b = as_biased_linear(*c, g_)) layer.qkv.push_back(*b);
  if (layer.qkv.size() != 3) layer.qkv.clear();
  std::vector<std::string> parts;
  for (const BiasedLinear& b : layer.qkv) {
    if (b.linear.in != d_model_ || b.linear.out != d_model_)
      refuse(block + "'s three linears after ln_1 are not q, k and v projections [" + d + " -> " + d + "] each");
    parts.push_back(b.output);
  }
  if (layer.qkv.empty()) {
    layer.c_attn = next_biased_linear(layer.ln_1.output, "fused QKV projection (a linear with bias) after " + block + "'s ln_1");
    const Linear& qkv = layer.c_attn.linear;
    if (qkv.in != d_model_ || qkv.out != 3 * d_model_)
      refuse(block + "'s first linear after ln_1 is [" + std::to_string(qkv.in) + " -> " + std::to_string(qkv.out) +
             "], not the fused QKV projection [" + d + " -> 3 × " + d + "]");
    // The Split (or three Slices) into thirds, which must be q | k | v in that order.
    parts = qkv_parts(layer.c_attn.output, block);
  }
  // Which part is q, k and v is read from where each goes: q and k meet in the scores MatMul (q
  // first), v is the second input of the MatMul after the softmax.
  std::vector<OnnxGraph::Hit> hits;
  for (int i = 0; i < 3; ++i)
    hits.push_back(g_.find_forward(parts[size_t(i)], [&](const Node& n, int) { return is_dynamic_matmul(n, g_); }));
  if (!layer.qkv.empty()) {  // separate projections come in any order: put them as q, k, v
    std::vector<size_t> order = {0, 1, 2};
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      const auto is_q = [&](size_t i) { return hits[i].node && hits[i].input == 0; };
      const auto with_q = [&](size_t i) {
        for (size_t k = 0; k < 3; ++k)
          if (is_q(k) && hits[i].node == hits[k].node) return true;
        return false;
      };
      const auto rank = [&](size_t i) { return is_q(i) ? 0 : with_q(i) ? 1 : 2; };
      return rank(a) < rank(b);
    });
    std::vector<BiasedLinear> qkv;
    std::vector<std::string> p;
    std::vector<OnnxGraph::Hit> h;
    for (size_t i : order) qkv.push_back(layer.qkv[i]), p.push_back(parts[i]), h.push_back(hits[i]);
    layer.qkv = qkv, parts = p, hits = h;
  }
  if (!hits[0].node || hits[0].node != hits[1].node || hits[0].input != 0 || hits[1].input != 1 || !hits[2].node ||
      hits[2].node == hits[0].node || hits[2].input != 1)
    refuse(block + "'s " + (layer.qkv.empty() ? "fused QKV projection is not split as q | k | v" : "q, k and v projections do not reach the attention as q, k, v") +
           " (the first part into the scores MatMul's first input, the second into its second, the third into the MatMul after the softmax)");
  layer.q = parts[0];
  layer.attn_proj = next_biased_linear(hits[2].node->output(0), "output projection (c_proj) after the attention of " + block);
  if (layer.qkv.empty()) check_gpt2_name(layer.c_attn.linear, Role::Qkv, block);
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
  // Separate q, k, v: c_attn [in, 3 × out] is their [in, out] views side by side, its bias theirs
  // one after another (a LazyTensor of parts, read in place).
  const auto concat_qkv = [&](const std::vector<BiasedLinear>& qkv, const std::string& w, const std::string& b) {
    LazyTensor weight, bias;
    weight.name = w, bias.name = b;
    weight.concat_axis = 1, bias.concat_axis = 0;
    for (const BiasedLinear& x : qkv) {
      LazyTensor p = *g_.initializer(x.linear.weight);
      if (!x.linear.in_out) p.shape = {x.linear.in, x.linear.out}, p.strides = {1, x.linear.in};
      p.name = w;
      weight.dtype = p.dtype;
      weight.parts.push_back(p);
      LazyTensor pb = *g_.initializer(x.bias);
      pb.name = b;
      bias.dtype = pb.dtype;
      bias.parts.push_back(pb);
    }
    weight.shape = {d_model_, 3 * d_model_}, bias.shape = {3 * d_model_};
    if (!out.emplace(w, weight).second || !out.emplace(b, bias).second) fail(m_.path + ": " + w + " is claimed twice");
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
    if (l.qkv.empty()) conv(l.c_attn, n.c_attn, n.c_attn_bias);
    else concat_qkv(l.qkv, with_layer(n.c_attn, i), with_layer(n.c_attn_bias, i));
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


}  // namespace sf::onnx_recovery
