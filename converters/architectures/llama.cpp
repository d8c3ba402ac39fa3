// LLaMA family: Hugging Face LlamaForCausalLM naming (config.json) and Meta / llama2.c naming
// (params.json, or model_args saved inside the checkpoint).
#include "converters/architectures/families.h"
#include "core/error.h"

namespace sf {

namespace {

const LazyTensor& need_tensor(const SourceModel& src, const std::string& name) {
  auto it = src.tensors.find(name);
  if (it == src.tensors.end()) fail(src.path + ": missing tensor " + name);
  if (it->second.shape.size() != 2) fail(src.path + ": tensor " + name + " is not a matrix");
  return it->second;
}

int64_t count_layers(const SourceModel& src, const std::string& prefix, const std::string& suffix) {
  int64_t n = 0;
  while (src.tensors.count(prefix + std::to_string(n) + suffix)) ++n;
  return n;
}

// Keys of LlamaConfig (and of LLaMA-shaped configs saved under that class) whose features the
// canonical forward leaves out.
const std::vector<UnmodelledKey> kHfUnmodelled = {
    {"rope_scaling", nullptr, "RoPE scaling"},
    {"sliding_window", nullptr, "sliding-window attention"},
    {"partial_rotary_factor", "1", "partial rotary embedding"},
    {"attention_bias", "false", "attention projection biases"},
    {"mlp_bias", "false", "MLP projection biases"},
};
// Llama 3.1's params.json switches on its RoPE frequency scaling with this key.
const std::vector<UnmodelledKey> kMetaUnmodelled = {
    {"use_scaled_rope", "false", "RoPE scaling"},
};

ModelDesc hf_hyperparams(const SourceModel& src) {
  if (src.config_kind != "hf_config")
    fail(src.path + ": Hugging Face LLaMA naming needs a config.json beside the checkpoint");
  refuse_unmodelled(src, "llama", kHfUnmodelled);
  const LazyTensor& embed = need_tensor(src, "model.embed_tokens.weight");
  ModelDesc m;
  m.family = "llama";
  m.vocab_size = config_int(src, "vocab_size", embed.shape[0], "vocab_size");
  m.d_model = config_int(src, "hidden_size", -1, "d_model");
  m.n_layers = config_int(src, "num_hidden_layers");
  m.n_heads = config_int(src, "num_attention_heads", -1, "n_heads");
  m.n_kv_heads = config_int(src, "num_key_value_heads", m.n_heads, "n_kv_heads");
  m.head_dim = config_int(src, "head_dim", m.d_model / m.n_heads, "head_dim");
  m.ffn_dim = config_int(src, "intermediate_size", -1, "ffn_dim");
  m.norm_eps = config_num(src, "rms_norm_eps", 1e-6, "norm_eps");
  m.rope_theta = config_num(src, "rope_theta", 10000.0, "rope_theta");
  m.rope_dims = m.head_dim;
  m.max_seq = config_int(src, "max_position_embeddings", 0, "max_seq");
  const std::string act = config_string(src, "hidden_act", "silu");
  if (act != "silu") fail(src.path + ": hidden_act '" + act + "' is not supported (LLaMA uses silu)");
  const bool tie = config_bool(src, "tie_word_embeddings", false);
  const bool has_head = src.tensors.count("lm_head.weight") > 0;
  // Stated untied with no projection to use: the checkpoint is incomplete, not tied.
  if (!has_head && src.config.is_object() && src.config.contains("tie_word_embeddings") && !tie)
    fail(src.path + ": " + config_origin(src) +
         " says tie_word_embeddings is false but the checkpoint has no lm_head.weight");
  m.tied_embeddings = tie || !has_head;
  return m;
}

ModelDesc meta_hyperparams(const SourceModel& src) {
  const LazyTensor& embed = need_tensor(src, "tok_embeddings.weight");
  ModelDesc m;
  m.family = "llama";
  const bool have = src.config.is_object() && !src.config.empty();
  m.d_model = have ? config_int(src, "dim", -1, "d_model") : embed.shape[1];
  m.n_layers = have ? config_int(src, "n_layers") : count_layers(src, "layers.", ".attention.wq.weight");
  if (!have) fail(src.path + ": Meta LLaMA naming needs params.json or model_args to know the head count");
  refuse_unmodelled(src, "llama", kMetaUnmodelled);
  m.n_heads = config_int(src, "n_heads", -1, "n_heads");
  m.n_kv_heads = config_int(src, "n_kv_heads", m.n_heads, "n_kv_heads");
  m.head_dim = m.d_model / m.n_heads;
  // params.json writes vocab_size -1 when the tokenizer decides it; the embedding knows.
  const int64_t vocab = config_int(src, "vocab_size", embed.shape[0]);
  m.vocab_size = vocab > 0 ? vocab : embed.shape[0];
  // Meta derives the FFN width from multiple_of / ffn_dim_multiplier; the weight states it.
  m.ffn_dim = config_int(src, "hidden_dim", need_tensor(src, "layers.0.feed_forward.w1.weight").shape[0], "ffn_dim");
  m.norm_eps = config_num(src, "norm_eps", 1e-5, "norm_eps");
  m.rope_theta = config_num(src, "rope_theta", 10000.0, "rope_theta");
  m.rope_dims = m.head_dim;
  m.max_seq = config_int(src, "max_seq_len", 0, "max_seq");
  auto out = src.tensors.find("output.weight");
  m.tied_embeddings = out == src.tensors.end() || out->second.same_data(embed);
  return m;
}

}  // namespace

std::vector<ArchitectureMap> llama_maps() {
  return {
      {"llama", "hf", {"LlamaForCausalLM"}, "model.layers.{i}.self_attn.q_proj.weight",
       {
           {"embed.weight", "model.embed_tokens.weight"},
           {"blocks.{i}.attn_norm.weight", "model.layers.{i}.input_layernorm.weight"},
           {"blocks.{i}.attn.q.weight", "model.layers.{i}.self_attn.q_proj.weight", RopeReorder::RotateHalf},
           {"blocks.{i}.attn.k.weight", "model.layers.{i}.self_attn.k_proj.weight", RopeReorder::RotateHalf},
           {"blocks.{i}.attn.v.weight", "model.layers.{i}.self_attn.v_proj.weight"},
           {"blocks.{i}.attn.o.weight", "model.layers.{i}.self_attn.o_proj.weight"},
           {"blocks.{i}.ffn_norm.weight", "model.layers.{i}.post_attention_layernorm.weight"},
           {"blocks.{i}.ffn.gate.weight", "model.layers.{i}.mlp.gate_proj.weight"},
           {"blocks.{i}.ffn.up.weight", "model.layers.{i}.mlp.up_proj.weight"},
           {"blocks.{i}.ffn.down.weight", "model.layers.{i}.mlp.down_proj.weight"},
           {"head.norm.weight", "model.norm.weight"},
           {"head.output.weight", "lm_head.weight"},
       },
       {"model.layers.{i}.self_attn.rotary_emb.inv_freq"},
       hf_hyperparams, "lm_head.weight", nullptr},
      {"llama", "meta", {}, "layers.{i}.attention.wq.weight",
       {
           {"embed.weight", "tok_embeddings.weight"},
           {"blocks.{i}.attn_norm.weight", "layers.{i}.attention_norm.weight"},
           {"blocks.{i}.attn.q.weight", "layers.{i}.attention.wq.weight"},
           {"blocks.{i}.attn.k.weight", "layers.{i}.attention.wk.weight"},
           {"blocks.{i}.attn.v.weight", "layers.{i}.attention.wv.weight"},
           {"blocks.{i}.attn.o.weight", "layers.{i}.attention.wo.weight"},
           {"blocks.{i}.ffn_norm.weight", "layers.{i}.ffn_norm.weight"},
           {"blocks.{i}.ffn.gate.weight", "layers.{i}.feed_forward.w1.weight"},
           {"blocks.{i}.ffn.up.weight", "layers.{i}.feed_forward.w3.weight"},
           {"blocks.{i}.ffn.down.weight", "layers.{i}.feed_forward.w2.weight"},
           {"head.norm.weight", "norm.weight"},
           {"head.output.weight", "output.weight"},
       },
       {"rope.freqs", "freqs_cis"},
       meta_hyperparams, "output.weight", nullptr},
  };
}

}  // namespace sf
