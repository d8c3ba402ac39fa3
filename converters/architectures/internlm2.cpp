// InternLM2 family: the Hugging Face remote code of internlm/internlm2-* (modeling_internlm2.py,
// InternLM2ForCausalLM). A LLaMA-shaped forward (RMSNorm, rotate-half RoPE, SwiGLU) whose q, k and
// v come from one wqkv matrix packed per kv group: [kv heads][its q heads.., k, v][head_dim].
#include "converters/architectures/families.h"
#include "core/error.h"

namespace sf {

namespace {

// rope_scaling is handled in internlm2_hyperparams: its "dynamic" type changes nothing the executor runs.
const std::vector<UnmodelledKey> kInternlm2Unmodelled = {
    {"sliding_window", nullptr, "sliding-window attention"},
    {"partial_rotary_factor", "1", "partial rotary embedding"},
};

// Dynamic NTK scaling recomputes the frequencies only for sequences longer than
// max_position_embeddings; below it the original runs plain RoPE. max_seq is that length, and
// every command refuses to run past max_seq (or warns that results there are not meaningful), so
// the forward is the original's wherever shardforge calls it meaningful. Linear scaling divides
// every position and is not modelled.
void check_rope_scaling(const SourceModel& src, int64_t max_seq) {
  const auto it = src.config.find("rope_scaling");
  if (it == src.config.end() || it->is_null()) return;
  const bool dynamic = it->is_object() && it->contains("type") && (*it)["type"] == "dynamic";
  if (!dynamic)
    refuse_config_value(src, "internlm2", "rope_scaling",
                        "RoPE scaling (only the dynamic type, which changes nothing within "
                        "max_position_embeddings, is accepted)");
  if (max_seq < 1)
    fail(src.path + ": " + config_origin(src) +
         ": dynamic rope_scaling needs max_position_embeddings, the length up to which it is plain RoPE");
}

ModelDesc internlm2_hyperparams(const SourceModel& src) {
  if (src.config_kind != "hf_config") fail(src.path + ": InternLM2 needs a config.json beside the checkpoint");
  refuse_unmodelled(src, "internlm2", kInternlm2Unmodelled);
  ModelDesc m;
  m.family = "internlm2";
  m.vocab_size = config_int(src, "vocab_size", -1, "vocab_size");
  m.d_model = config_int(src, "hidden_size", -1, "d_model");
  m.n_layers = config_int(src, "num_hidden_layers", -1, "n_layers");
  m.n_heads = config_int(src, "num_attention_heads", -1, "n_heads");
  m.n_kv_heads = config_int(src, "num_key_value_heads", m.n_heads, "n_kv_heads");
  // InternLM2Attention raises unless hidden_size splits evenly into the heads.
  m.head_dim = exact_head_dim(src, m.d_model, "hidden_size", m.n_heads, "num_attention_heads");
  m.ffn_dim = config_int(src, "intermediate_size", -1, "ffn_dim");
  // Defaults are InternLM2Config's.
  m.norm_eps = config_num(src, "rms_norm_eps", 1e-6, "norm_eps");
  m.rope_theta = config_num(src, "rope_theta", 10000.0, "rope_theta");
  m.rope_dims = m.head_dim;
  m.max_seq = config_int(src, "max_position_embeddings", 2048, "max_seq");
  check_rope_scaling(src, m.max_seq);
  const std::string act = config_string(src, "hidden_act", "silu");
  if (act != "silu")
    fail(src.path + ": " + config_origin(src) + ": hidden_act '" + act + "' is not supported (InternLM2 uses silu)",
         ErrorKind::Unsupported);
  // config.bias puts a bias on wqkv and wo; the MLP's w1/w3/w2 never have one. InternLM2Config's
  // default is true (released checkpoints say false).
  const bool bias = config_bool(src, "bias", true);
  m.biases = {bias, bias, false};
  m.tied_embeddings = config_bool(src, "tie_word_embeddings", false);
  return m;
}

constexpr const char* kWqkv = "model.layers.{i}.attention.wqkv.weight";
constexpr const char* kWqkvBias = "model.layers.{i}.attention.wqkv.bias";

}  // namespace

std::vector<ArchitectureMap> internlm2_maps() {
  using R = RopeReorder;
  using F = Fused;
  return {
      {"internlm2", "hf", {"InternLM2ForCausalLM"}, kWqkv,
       {
           {"embed.weight", "model.tok_embeddings.weight"},
           {"blocks.{i}.attn_norm.weight", "model.layers.{i}.attention_norm.weight"},
           {"blocks.{i}.attn.q.weight", kWqkv, R::RotateHalf, F::QkvPerKvGroup, 0},
           {"blocks.{i}.attn.k.weight", kWqkv, R::RotateHalf, F::QkvPerKvGroup, 1},
           {"blocks.{i}.attn.v.weight", kWqkv, R::None, F::QkvPerKvGroup, 2},
           {"blocks.{i}.attn.q.bias", kWqkvBias, R::RotateHalf, F::QkvPerKvGroup, 0},
           {"blocks.{i}.attn.k.bias", kWqkvBias, R::RotateHalf, F::QkvPerKvGroup, 1},
           {"blocks.{i}.attn.v.bias", kWqkvBias, R::None, F::QkvPerKvGroup, 2},
           {"blocks.{i}.attn.o.weight", "model.layers.{i}.attention.wo.weight"},
           {"blocks.{i}.attn.o.bias", "model.layers.{i}.attention.wo.bias"},
           {"blocks.{i}.ffn_norm.weight", "model.layers.{i}.ffn_norm.weight"},
           {"blocks.{i}.ffn.gate.weight", "model.layers.{i}.feed_forward.w1.weight"},
           {"blocks.{i}.ffn.up.weight", "model.layers.{i}.feed_forward.w3.weight"},
           {"blocks.{i}.ffn.down.weight", "model.layers.{i}.feed_forward.w2.weight"},
           {"head.norm.weight", "model.norm.weight"},
           {"head.output.weight", "output.weight"},
       },
       // Non-persistent in the released code; older exports may still carry it.
       {"model.layers.{i}.attention.rotary_emb.inv_freq"},
       internlm2_hyperparams, "output.weight", nullptr},
  };
}

}  // namespace sf
