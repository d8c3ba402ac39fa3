// ChatGLM families, all published with config.json "architectures": ["ChatGLMModel"] and
// model_type "chatglm", so the tensor names decide (each map's `detect`) and the configuration's
// own fields must agree:
//   chatglm   ChatGLM-6B (first generation): transformer.layers.N.attention.query_key_value, 2-D
//             RoPE, prefix-bidirectional attention, LayerNorm with bias, GELU, alpha-scaled residuals.
//   chatglm2  ChatGLM2-6B and ChatGLM3-6B (one modeling code; ChatGLM3 adds rope_ratio):
//             transformer.encoder.layers.N.self_attention.query_key_value, grouped k/v, RoPE on the
//             first half of each head, RMSNorm, SwiGLU.
// The facts follow the remote code of THUDM/chatglm-6b, chatglm2-6b and chatglm3-6b
// (modeling_chatglm.py, configuration_chatglm.py); docs/families.md says the same in prose.
#include <cctype>
#include <cmath>
#include <initializer_list>
#include <string>

#include "converters/architectures/families.h"
#include "core/error.h"

namespace sf {

namespace {

// GLMBlock's num_layers argument defaults to 28 and ChatGLMModel never passes config.num_layers,
// so every ChatGLM-6B scales its residuals by sqrt(2 * 28), whatever its own layer count.
constexpr double kChatGLM6BAlphaLayers = 28;
constexpr double kGlmRopeBase = 10000;  // both generations: the base before ChatGLM3's rope_ratio

// What tokenization_chatglm.py does that a plain SentencePiece model does not (the first
// generation's TextTokenizer / SPTokenizer, the second's SPTokenizer and ChatGLMTokenizer).
constexpr const char* kChatGLM6BTokenizer =
    "ChatGLM-6B's tokenizer adds 20000 (the image tokens) to every id of its ice_text.model and first writes "
    "newlines, tabs and runs of spaces as <n>, <|tab|> and <|blank_N|>";
constexpr const char* kChatGLM2Tokenizer =
    "ChatGLM2/3's tokenizer numbers [gMASK], sop and its other special tokens past its tokenizer.model's pieces "
    "and starts prompts with [gMASK] sop, not BOS";

std::string origin(const SourceModel& src) { return src.path + ": " + config_origin(src); }

void need_hf_config(const SourceModel& src, const char* who) {
  if (src.config_kind != "hf_config")
    fail(src.path + ": " + who + " needs the config.json published with the checkpoint beside it");
}

// Rows of the embedding, which the stated vocabulary must equal: one line naming both.
int64_t vocab_from(const SourceModel& src, const char* key, const char* embedding) {
  auto it = src.tensors.find(embedding);
  if (it == src.tensors.end()) fail(src.path + ": missing tensor " + embedding);
  if (it->second.shape.size() != 2) fail(src.path + ": tensor " + std::string(embedding) + " is not a matrix");
  const int64_t vocab = config_int(src, key, -1, "vocab_size");
  if (vocab != it->second.shape[0])
    fail(origin(src) + " says " + key + " is " + std::to_string(vocab) + " but " + embedding + " has " +
         std::to_string(it->second.shape[0]) + " rows");
  return vocab;
}

// The first configuration key present from `keys`: a field only the other generation has.
const char* first_present(const SourceModel& src, std::initializer_list<const char*> keys) {
  for (const char* k : keys)
    if (src.config.is_object() && src.config.contains(k)) return k;
  return nullptr;
}

// Settings the configuration may state, with the value the forward models. Keys absent from
// config.json take the original ChatGLMConfig's default, which is what the original would run.
struct Switch {
  const char* key;
  bool original_default;
  bool supported;
  const char* why;  // what the other value would need
};

void refuse_switches(const SourceModel& src, std::initializer_list<Switch> switches) {
  for (const Switch& s : switches)
    if (config_bool(src, s.key, s.original_default) != s.supported) {
      const bool stated = src.config.contains(s.key) && !src.config[s.key].is_null();
      fail(origin(src) + ": '" + s.key + "' " + (s.supported ? "false" : "true") +
               (stated ? "" : " (its default when absent)") + " is not supported (" + s.why + ")",
           ErrorKind::Unsupported);
    }
}

// Both generations' configurations can describe checkpoints that are not plain weights.
void refuse_non_plain(const SourceModel& src) {
  if (config_int(src, "quantization_bit", 0) != 0)
    fail(origin(src) + ": 'quantization_bit' is set: the checkpoint holds ChatGLM's own quantized weights, "
                       "not supported (convert the unquantized model)",
         ErrorKind::Unsupported);
  if (src.config.is_object() && src.config.contains("pre_seq_len") && !src.config["pre_seq_len"].is_null())
    fail(origin(src) + ": 'pre_seq_len' is set: P-tuning prefix encoders are not supported", ErrorKind::Unsupported);
}

// A special token id from the configuration: present and inside the vocabulary. They are never
// assumed: the released ChatGLM-6B changed them between revisions (150001 → 130001 for [gMASK]).
int64_t special_token(const SourceModel& src, const char* key, int64_t vocab) {
  const int64_t id = config_int(src, key);
  if (id < 0 || id >= vocab)
    fail(origin(src) + ": '" + key + "' is " + std::to_string(id) + ", outside the vocabulary (0 to " +
         std::to_string(vocab - 1) + ")");
  return id;
}

ModelDesc chatglm6b_hyperparams(const SourceModel& src) {
  need_hf_config(src, "ChatGLM-6B");
  if (const char* k = first_present(src, {"padded_vocab_size", "multi_query_attention", "kv_channels", "ffn_hidden_size"}))
    fail(origin(src) + " has the ChatGLM2/3 field '" + k +
         "' but the tensors are ChatGLM-6B's (transformer.layers.*): ambiguous family");
  refuse_non_plain(src);
  if (!config_bool(src, "position_encoding_2d", true))
    fail(origin(src) + ": 'position_encoding_2d' false (1-D RoPE over the whole head) is not supported: no released "
                       "ChatGLM-6B uses it",
         ErrorKind::Unsupported);
  ModelDesc m;
  m.family = "chatglm";
  m.vocab_size = vocab_from(src, "vocab_size", "transformer.word_embeddings.weight");
  m.d_model = config_int(src, "hidden_size", -1, "d_model");
  m.n_layers = config_int(src, "num_layers", -1, "n_layers");
  m.n_heads = config_int(src, "num_attention_heads", -1, "n_heads");
  if (m.d_model % m.n_heads != 0)
    fail(origin(src) + ": 'hidden_size' (" + std::to_string(m.d_model) + ") is not divisible by 'num_attention_heads' (" +
         std::to_string(m.n_heads) + ")");
  m.n_kv_heads = m.n_heads;
  m.head_dim = m.d_model / m.n_heads;
  // 2-D RoPE splits each head in two halves, each rotated as pairs.
  if (m.head_dim % 4 != 0)
    fail(origin(src) + ": hidden_size / num_attention_heads (" + std::to_string(m.head_dim) +
         ") must be divisible by 4 for ChatGLM-6B's 2-D RoPE");
  m.ffn_dim = config_int(src, "inner_hidden_size", -1, "ffn_dim");
  m.norm = NormKind::Layer;
  m.norm_bias = true;
  m.norm_eps = config_num(src, "layernorm_epsilon", 1e-5, "norm_eps");
  m.ffn = FfnKind::GeluTanh;
  m.biases = {true, true, true};
  m.positional = PositionalKind::Rope2D;
  m.rope_theta = kGlmRopeBase;
  m.rope_dims = m.head_dim;
  m.residual = ResidualKind::ScaledNormInput;
  m.residual_alpha = std::sqrt(2 * kChatGLM6BAlphaLayers);
  m.mask = MaskKind::PrefixBidirectional;
  m.special = {special_token(src, "mask_token_id", m.vocab_size), special_token(src, "gmask_token_id", m.vocab_size),
               special_token(src, "bos_token_id", m.vocab_size)};
  m.max_seq = config_int(src, "max_sequence_length", 0, "max_seq");
  const bool has_head = src.tensors.count("lm_head.weight") > 0;
  const bool stated = src.config.contains("tie_word_embeddings");
  const bool tie = config_bool(src, "tie_word_embeddings", false);
  if (!has_head && stated && !tie)
    fail(origin(src) + " says tie_word_embeddings is false but the checkpoint has no lm_head.weight");
  // The published checkpoint stores lm_head.weight and states nothing: read it as stored (the
  // reference does too). transformers would tie it to the embedding (its tie_word_embeddings
  // default is true), which only matters for a checkpoint whose two matrices differ.
  m.tied_embeddings = tie || !has_head;
  return m;
}

ModelDesc chatglm2_hyperparams(const SourceModel& src) {
  need_hf_config(src, "ChatGLM2/3");
  if (const char* k = first_present(src, {"inner_hidden_size", "position_encoding_2d", "gmask_token_id", "max_sequence_length"}))
    fail(origin(src) + " has the ChatGLM-6B field '" + k +
         "' but the tensors are ChatGLM2/3's (transformer.encoder.layers.*): ambiguous family");
  refuse_non_plain(src);
  refuse_switches(src, {
      // With false the original splits query_key_value per head ([heads][q, k, v]), another layout;
      // every released model sets true.
      {"multi_query_attention", false, true, "per-head fused q/k/v; every released ChatGLM2/3 uses true"},
      {"post_layer_norm", true, true, "a model without final_layernorm"},
  });
  ModelDesc m;
  m.family = "chatglm2";
  m.vocab_size = vocab_from(src, "padded_vocab_size", "transformer.embedding.word_embeddings.weight");
  m.d_model = config_int(src, "hidden_size", -1, "d_model");
  m.n_layers = config_int(src, "num_layers", -1, "n_layers");
  m.n_heads = config_int(src, "num_attention_heads", -1, "n_heads");
  m.n_kv_heads = config_int(src, "multi_query_group_num", -1, "n_kv_heads");
  if (m.n_heads % m.n_kv_heads != 0)
    fail(origin(src) + ": 'num_attention_heads' (" + std::to_string(m.n_heads) +
         ") is not a multiple of 'multi_query_group_num' (" + std::to_string(m.n_kv_heads) + ")");
  // The head width is kv_channels, which need not be hidden_size / heads (the projection is
  // heads x kv_channels wide, back to hidden_size through dense).
  m.head_dim = config_int(src, "kv_channels", -1, "head_dim");
  // RoPE covers kv_channels / 2 dims as pairs.
  if (m.head_dim % 4 != 0)
    fail(origin(src) + ": 'kv_channels' (" + std::to_string(m.head_dim) + ") must be divisible by 4 (RoPE rotates "
                       "pairs of its first half)");
  m.ffn_dim = config_int(src, "ffn_hidden_size", -1, "ffn_dim");
  // rmsnorm false builds torch.nn.LayerNorm, whose bias the checkpoint then carries.
  const bool rms = config_bool(src, "rmsnorm", true);
  m.norm = rms ? NormKind::RMS : NormKind::Layer;
  m.norm_bias = !rms;
  m.norm_eps = config_num(src, "layernorm_epsilon", 1e-5, "norm_eps");
  m.ffn = FfnKind::SiluGated;
  // add_bias_linear puts a bias on every linear (query_key_value, dense, both MLP projections);
  // add_qkv_bias on query_key_value alone.
  const bool bias_linear = config_bool(src, "add_bias_linear", false);
  m.biases = {bias_linear || config_bool(src, "add_qkv_bias", false), bias_linear, bias_linear};
  // ChatGLM3 (and its -32k model, rope_ratio 50) multiplies the base by rope_ratio. ChatGLM2-6B-32k
  // ships the same key with another meaning (positions divided by rope_ratio, 16), which the
  // executor does not model: a configuration naming itself ChatGLM2 is refused rather than misread.
  const double ratio = config_num(src, "rope_ratio", 1.0);
  if (!(ratio > 0) || !std::isfinite(ratio)) fail(origin(src) + ": 'rope_ratio' must be a positive number");
  m.positional = PositionalKind::Rope;
  m.rope_theta = kGlmRopeBase * ratio;
  if (const std::string p = ModelDesc::real_problem("rope_theta", m.rope_theta); !p.empty())
    fail(origin(src) + ": 10000 x 'rope_ratio' " + p);
  if (ratio != 1.0) {
    std::string name = config_string(src, "_name_or_path", "");
    for (char& c : name) c = char(std::tolower(static_cast<unsigned char>(c)));
    if (name.find("chatglm2") != std::string::npos || name.find("codegeex2") != std::string::npos)
      fail(origin(src) + ": 'rope_ratio' in a ChatGLM2 model divides the positions (ChatGLM2-6B-32k's interpolation), "
                         "which is not supported",
           ErrorKind::Unsupported);
  }
  m.rope_dims = m.head_dim / 2;  // the checkpoint's rotated pairs are already (2i, 2i+1)
  // The original's residual around each sublayer: the block input, or with
  // apply_residual_connection_post_layernorm the normalized input — ScaledNormInput with alpha 1.
  if (config_bool(src, "apply_residual_connection_post_layernorm", false)) {
    m.residual = ResidualKind::ScaledNormInput;
    m.residual_alpha = 1.0;
  }
  m.max_seq = config_int(src, "seq_length", 0, "max_seq");
  m.tied_embeddings = false;  // output_layer is its own weight; the original never ties it
  return m;
}

}  // namespace

std::vector<ArchitectureMap> chatglm_maps() {
  const auto QkvH = Fused::QkvPerHead, QkvS = Fused::QkvStacked, GU = Fused::GateUpStacked;
  const auto Halves = RopeReorder::RotateHalfHalves, Keep = RopeReorder::None;
  return {
      {"chatglm", "hf", {"ChatGLMModel", "ChatGLMForConditionalGeneration"},
       "transformer.layers.{i}.attention.query_key_value.weight",
       {
           {"embed.weight", "transformer.word_embeddings.weight"},
           {"blocks.{i}.attn_norm.weight", "transformer.layers.{i}.input_layernorm.weight"},
           {"blocks.{i}.attn_norm.bias", "transformer.layers.{i}.input_layernorm.bias"},
           // rows [heads][q, k, v][head_dim]; q and k rotate-half within each half of the head.
           {"blocks.{i}.attn.q.weight", "transformer.layers.{i}.attention.query_key_value.weight", Halves, QkvH, 0},
           {"blocks.{i}.attn.k.weight", "transformer.layers.{i}.attention.query_key_value.weight", Halves, QkvH, 1},
           {"blocks.{i}.attn.v.weight", "transformer.layers.{i}.attention.query_key_value.weight", Keep, QkvH, 2},
           {"blocks.{i}.attn.q.bias", "transformer.layers.{i}.attention.query_key_value.bias", Halves, QkvH, 0},
           {"blocks.{i}.attn.k.bias", "transformer.layers.{i}.attention.query_key_value.bias", Halves, QkvH, 1},
           {"blocks.{i}.attn.v.bias", "transformer.layers.{i}.attention.query_key_value.bias", Keep, QkvH, 2},
           {"blocks.{i}.attn.o.weight", "transformer.layers.{i}.attention.dense.weight"},
           {"blocks.{i}.attn.o.bias", "transformer.layers.{i}.attention.dense.bias"},
           {"blocks.{i}.ffn_norm.weight", "transformer.layers.{i}.post_attention_layernorm.weight"},
           {"blocks.{i}.ffn_norm.bias", "transformer.layers.{i}.post_attention_layernorm.bias"},
           {"blocks.{i}.ffn.up.weight", "transformer.layers.{i}.mlp.dense_h_to_4h.weight"},
           {"blocks.{i}.ffn.up.bias", "transformer.layers.{i}.mlp.dense_h_to_4h.bias"},
           {"blocks.{i}.ffn.down.weight", "transformer.layers.{i}.mlp.dense_4h_to_h.weight"},
           {"blocks.{i}.ffn.down.bias", "transformer.layers.{i}.mlp.dense_4h_to_h.bias"},
           {"head.norm.weight", "transformer.final_layernorm.weight"},
           {"head.norm.bias", "transformer.final_layernorm.bias"},
           {"head.output.weight", "lm_head.weight"},
       },
       // The executor computes the rotary frequencies itself (f16-rounded, as this buffer holds).
       {"transformer.layers.{i}.attention.rotary_emb.inv_freq"},
       chatglm6b_hyperparams, "lm_head.weight", kChatGLM6BTokenizer},
      {"chatglm2", "hf", {"ChatGLMModel", "ChatGLMForConditionalGeneration"},
       "transformer.encoder.layers.{i}.self_attention.query_key_value.weight",
       {
           {"embed.weight", "transformer.embedding.word_embeddings.weight"},
           {"blocks.{i}.attn_norm.weight", "transformer.encoder.layers.{i}.input_layernorm.weight"},
           {"blocks.{i}.attn_norm.bias", "transformer.encoder.layers.{i}.input_layernorm.bias"},
           // rows [all q heads | k groups | v groups]; RoPE pairs are already interleaved.
           {"blocks.{i}.attn.q.weight", "transformer.encoder.layers.{i}.self_attention.query_key_value.weight", Keep, QkvS, 0},
           {"blocks.{i}.attn.k.weight", "transformer.encoder.layers.{i}.self_attention.query_key_value.weight", Keep, QkvS, 1},
           {"blocks.{i}.attn.v.weight", "transformer.encoder.layers.{i}.self_attention.query_key_value.weight", Keep, QkvS, 2},
           {"blocks.{i}.attn.q.bias", "transformer.encoder.layers.{i}.self_attention.query_key_value.bias", Keep, QkvS, 0},
           {"blocks.{i}.attn.k.bias", "transformer.encoder.layers.{i}.self_attention.query_key_value.bias", Keep, QkvS, 1},
           {"blocks.{i}.attn.v.bias", "transformer.encoder.layers.{i}.self_attention.query_key_value.bias", Keep, QkvS, 2},
           {"blocks.{i}.attn.o.weight", "transformer.encoder.layers.{i}.self_attention.dense.weight"},
           {"blocks.{i}.attn.o.bias", "transformer.encoder.layers.{i}.self_attention.dense.bias"},
           {"blocks.{i}.ffn_norm.weight", "transformer.encoder.layers.{i}.post_attention_layernorm.weight"},
           {"blocks.{i}.ffn_norm.bias", "transformer.encoder.layers.{i}.post_attention_layernorm.bias"},
           // rows [gate | up]: swiglu(x) = silu(first half) * second half.
           {"blocks.{i}.ffn.gate.weight", "transformer.encoder.layers.{i}.mlp.dense_h_to_4h.weight", Keep, GU, 0},
           {"blocks.{i}.ffn.up.weight", "transformer.encoder.layers.{i}.mlp.dense_h_to_4h.weight", Keep, GU, 1},
           {"blocks.{i}.ffn.gate.bias", "transformer.encoder.layers.{i}.mlp.dense_h_to_4h.bias", Keep, GU, 0},
           {"blocks.{i}.ffn.up.bias", "transformer.encoder.layers.{i}.mlp.dense_h_to_4h.bias", Keep, GU, 1},
           {"blocks.{i}.ffn.down.weight", "transformer.encoder.layers.{i}.mlp.dense_4h_to_h.weight"},
           {"blocks.{i}.ffn.down.bias", "transformer.encoder.layers.{i}.mlp.dense_4h_to_h.bias"},
           {"head.norm.weight", "transformer.encoder.final_layernorm.weight"},
           {"head.norm.bias", "transformer.encoder.final_layernorm.bias"},
           {"head.output.weight", "transformer.output_layer.weight"},
       },
       // Base-10000 frequencies without rope_ratio: the original recomputes them in forward_impl.
       {"transformer.rotary_pos_emb.inv_freq"},
       chatglm2_hyperparams, "transformer.output_layer.weight", kChatGLM2Tokenizer},
  };
}

}  // namespace sf
