#pragma once
// The canonical transformer description every reader maps onto and every writer/executor reads:
// hyper-parameters, the settings the executor dispatches on (closed, validated enums), and the
// canonical tensors of each streaming unit with their roles — declared once, here.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sf {

using json = nlohmann::json;

// Each setting is a closed set: a manifest naming any other value is refused (the executor never
// runs an artifact whose settings it does not implement). Names are the manifest's spelling.
enum class NormKind { RMS, Layer };                  // "rms" x/rms(x)*w; "layer" (x-mean)/std*w [+b]
enum class FfnKind { SiluGated, GeluTanh };          // down(silu(gate x) * up x); down(gelu_tanh(up x))
enum class PositionalKind { Rope, Rope2D, Learned }; // RoPE on rope_dims; ChatGLM-6B 2-D RoPE; a table
enum class ResidualKind { PreNorm, ScaledNormInput };  // x + f(n(x)); ChatGLM-6B: n(x)*alpha + f(n(x))
enum class MaskKind { Causal, PrefixBidirectional };   // ChatGLM-6B: the prompt before <sop> sees itself

const char* kind_name(NormKind k);
const char* kind_name(FfnKind k);
const char* kind_name(PositionalKind k);
const char* kind_name(ResidualKind k);
const char* kind_name(MaskKind k);

// Which linear layers carry a bias (norm biases follow norm_bias).
struct Biases {
  bool qkv = false;  // attn.q/k/v
  bool o = false;    // attn.o
  bool ffn = false;  // ffn.up and ffn.down (and ffn.gate when gated)
  bool operator==(const Biases&) const = default;
};

// Token ids a prefix-bidirectional (GLM) model gives meaning to; -1 when the model has none.
struct SpecialTokens {
  int64_t mask = -1;   // [MASK]
  int64_t gmask = -1;  // [gMASK]
  int64_t bos = -1;    // <sop>: the prompt ends before it
  bool operator==(const SpecialTokens&) const = default;
};

struct ModelDesc {
  std::string family = "llama";
  int64_t vocab_size = 0;
  int64_t d_model = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t ffn_dim = 0;
  NormKind norm = NormKind::RMS;
  bool norm_bias = false;
  double norm_eps = 1e-5;
  FfnKind ffn = FfnKind::SiluGated;
  PositionalKind positional = PositionalKind::Rope;
  // RoPE: canonical q/k rows rotate interleaved pairs (2i, 2i+1) of the first rope_dims dims of each
  // head by pos * rope_theta^(-2i/rope_dims). Rope2D rotates each half of the head that way (the
  // first by the position, the second by the block position) with f16-rounded frequencies.
  double rope_theta = 10000.0;
  int64_t rope_dims = 0;
  ResidualKind residual = ResidualKind::PreNorm;
  double residual_alpha = 1.0;  // ScaledNormInput only
  MaskKind mask = MaskKind::Causal;
  Biases biases;
  SpecialTokens special;        // PrefixBidirectional only
  bool tied_embeddings = false;
  int64_t max_seq = 0;          // 0 = not stated by the source; learned positions need it (table rows)

  bool gated() const { return ffn == FfnKind::SiluGated; }
  bool operator==(const ModelDesc&) const = default;

  json to_json() const;
  static ModelDesc from_json(const json& j);
  // Throws Error "model description: ..." on a value out of bounds or inconsistent values. This is
  // the one definition of the bounds: readers check a source with it before converting, and the
  // artifact reader checks a manifest with it, so `convert` never writes what `verify` refuses.
  void validate() const;

  // Bounds of each hyper-parameter, by field name ("max_seq"). Empty when v is allowed, otherwise
  // the reason ("is -1, outside [0, 1099511627776]"), for messages that name the source's own key.
  static std::string int_problem(const std::string& field, int64_t v);
  static std::string real_problem(const std::string& field, double v);
  static constexpr int64_t kMaxSize = int64_t(1) << 40;         // vocab, widths, max_seq
  static constexpr int64_t kMaxCount = int64_t(1) << 20;        // layers, heads
  static constexpr int64_t kMaxTensorElements = int64_t(1) << 40;
};

enum class UnitKind { Embedding, Block, Head };
const char* unit_kind_name(UnitKind k);

// What a tensor is to the model. The quantization policy, the executor and the writers key on the
// role, not on names.
enum class TensorRole { TokenEmbedding, PositionEmbedding, NormWeight, NormBias, LinearWeight, LinearBias, Output };
const char* role_name(TensorRole r);

struct TensorSpec {
  std::string name;             // canonical name, e.g. "blocks.3.attn.q.weight"
  std::vector<int64_t> shape;   // [rows, cols] for matrices, [n] for vectors
  TensorRole role = TensorRole::LinearWeight;
  int64_t layer = -1;           // block index; -1 outside the blocks
};

// The canonical tensors of one unit (index is the block number for blocks, ignored otherwise),
// from the one declaration table in model_desc.cpp: which exist depends on the settings.
std::vector<TensorSpec> unit_tensors(const ModelDesc& m, UnitKind kind, int64_t index);
std::string unit_name(UnitKind kind, int64_t index);  // "embedding", "block_003", "head"

// "blocks.N.": the prefix of every canonical tensor of block N.
std::string block_prefix(int64_t index);

// The units in streaming order: embedding, block 0 .. n_layers-1, head.
std::vector<std::pair<UnitKind, int64_t>> unit_order(const ModelDesc& m);
// Every canonical tensor of the model, in streaming order.
std::vector<TensorSpec> all_tensors(const ModelDesc& m);

}  // namespace sf
