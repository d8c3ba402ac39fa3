// GPT-2 family: Hugging Face transformers' GPT2LMHeadModel (models/gpt2/modeling_gpt2.py).
// Two naming variants of the same weights:
//   hub       GPT2Model's state dict as the openai-community/gpt2 files hold it: wte.weight,
//             h.{i}.*, ln_f.*, with the attention-mask buffers h.{i}.attn.bias / .masked_bias
//   prefixed  GPT2LMHeadModel.state_dict(): the same under "transformer.", plus lm_head.weight
//             (the tied head, saved sharing wte's storage)
// Linear layers are Conv1D, stored [in, out]: every matrix is transposed on the way in, and
// c_attn's columns q | k | v become the rows [q | k | v] of QkvStacked once transposed.
#include <set>
#include <string>

#include "converters/architectures/families.h"
#include "core/error.h"

namespace sf {

namespace {

// GPT2Config switches whose non-default values change the forward.
const std::vector<UnmodelledKey> kGpt2Unmodelled = {
    {"scale_attn_weights", "true", "unscaled attention scores"},
    {"scale_attn_by_inverse_layer_idx", "false", "attention scaled by the inverse layer index"},
    {"add_cross_attention", "false", "cross-attention"},
};

ModelDesc gpt2_hyperparams(const SourceModel& src) {
  if (src.config_kind != "hf_config") fail(src.path + ": GPT-2 needs a config.json beside the checkpoint");
  refuse_unmodelled(src, "gpt2", kGpt2Unmodelled);
  // Both names are the tanh approximation of GELU (ACT2FN); "gelu" (erf) and others are not ours.
  const std::string act = config_string(src, "activation_function", "gelu_new");
  if (act != "gelu_new" && act != "gelu_pytorch_tanh")
    fail(src.path + ": " + config_origin(src) + ": activation_function '" + act +
             "' is not supported (GPT-2's is gelu_new, the tanh approximation)",
         ErrorKind::Unsupported);
  ModelDesc m;
  m.family = "gpt2";
  m.vocab_size = config_int(src, "vocab_size", -1, "vocab_size");
  m.d_model = config_int(src, "n_embd", -1, "d_model");
  m.n_layers = config_int(src, "n_layer", -1, "n_layers");
  m.n_heads = config_int(src, "n_head", -1, "n_heads");
  m.n_kv_heads = m.n_heads;
  // GPT2Attention raises unless n_embd splits evenly into the heads.
  m.head_dim = exact_head_dim(src, m.d_model, "n_embd", m.n_heads, "n_head");
  // n_inner null or absent: 4 * n_embd (GPT2MLP's inner_dim).
  m.ffn_dim = config_int(src, "n_inner", 4 * m.d_model, "ffn_dim");
  m.norm = NormKind::Layer;
  m.norm_bias = true;
  m.norm_eps = config_num(src, "layer_norm_epsilon", 1e-5, "norm_eps");
  m.ffn = FfnKind::GeluTanh;
  m.positional = PositionalKind::Learned;
  m.rope_dims = 0;
  m.max_seq = config_int(src, "n_positions", -1, "max_seq");
  if (m.max_seq < 1) fail(src.path + ": " + config_origin(src) + ": 'n_positions' is 0 (wpe needs at least one row)");
  m.biases = {true, true, true};
  // GPT2LMHeadModel ties lm_head to wte unless the configuration says otherwise.
  m.tied_embeddings = config_bool(src, "tie_word_embeddings", true);
  return m;
}

// NameRule holds C strings; the prefixed variant's names are built once and kept here.
const char* keep(const std::string& s) {
  static std::set<std::string> names;
  return names.insert(s).first->c_str();
}

std::vector<NameRule> rules(const std::string& p) {
  const auto n = [&](const char* name) { return keep(p + name); };
  // A Conv1D matrix (transposed), optionally one part of c_attn.
  const auto conv = [&](const char* canonical, const char* source, Fused fused = Fused::None, int part = 0) {
    return NameRule{canonical, n(source), RopeReorder::None, fused, part, true};
  };
  const auto qkv = Fused::QkvStacked;
  return {
      {"embed.weight", n("wte.weight")},
      {"embed.pos.weight", n("wpe.weight")},
      {"blocks.{i}.attn_norm.weight", n("h.{i}.ln_1.weight")},
      {"blocks.{i}.attn_norm.bias", n("h.{i}.ln_1.bias")},
      conv("blocks.{i}.attn.q.weight", "h.{i}.attn.c_attn.weight", qkv, 0),
      conv("blocks.{i}.attn.k.weight", "h.{i}.attn.c_attn.weight", qkv, 1),
      conv("blocks.{i}.attn.v.weight", "h.{i}.attn.c_attn.weight", qkv, 2),
      conv("blocks.{i}.attn.q.bias", "h.{i}.attn.c_attn.bias", qkv, 0),
      conv("blocks.{i}.attn.k.bias", "h.{i}.attn.c_attn.bias", qkv, 1),
      conv("blocks.{i}.attn.v.bias", "h.{i}.attn.c_attn.bias", qkv, 2),
      conv("blocks.{i}.attn.o.weight", "h.{i}.attn.c_proj.weight"),
      {"blocks.{i}.attn.o.bias", n("h.{i}.attn.c_proj.bias")},
      {"blocks.{i}.ffn_norm.weight", n("h.{i}.ln_2.weight")},
      {"blocks.{i}.ffn_norm.bias", n("h.{i}.ln_2.bias")},
      conv("blocks.{i}.ffn.up.weight", "h.{i}.mlp.c_fc.weight"),
      {"blocks.{i}.ffn.up.bias", n("h.{i}.mlp.c_fc.bias")},
      conv("blocks.{i}.ffn.down.weight", "h.{i}.mlp.c_proj.weight"),
      {"blocks.{i}.ffn.down.bias", n("h.{i}.mlp.c_proj.bias")},
      {"head.norm.weight", n("ln_f.weight")},
      {"head.norm.bias", n("ln_f.bias")},
      // Only an untied configuration (tie_word_embeddings false) reads it.
      {"head.output.weight", "lm_head.weight"},
  };
}

ArchitectureMap variant(const char* name, const std::string& prefix) {
  // GPT2Model (the bare transformer, as some hubs label it) holds the same tensors; its head is
  // the tied embedding.
  return {"gpt2", name, {"GPT2LMHeadModel", "GPT2Model"}, keep(prefix + "h.{i}.attn.c_attn.weight"), rules(prefix),
          // The causal-mask buffers (persistent in older transformers): the executor masks itself.
          {keep(prefix + "h.{i}.attn.bias"), keep(prefix + "h.{i}.attn.masked_bias")},
          gpt2_hyperparams, "lm_head.weight", nullptr};
}

}  // namespace

std::vector<ArchitectureMap> gpt2_maps() { return {variant("hub", ""), variant("prefixed", "transformer.")}; }

}  // namespace sf
