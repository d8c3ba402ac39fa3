#pragma once
// The canonical transformer description every reader maps onto and every writer/executor reads:
// hyper-parameters plus the canonical tensor names and shapes of each streaming unit.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sf {

using json = nlohmann::json;

struct ModelDesc {
  std::string family = "llama";
  int64_t vocab_size = 0;
  int64_t d_model = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t ffn_dim = 0;
  std::string norm = "rms";
  double norm_eps = 1e-5;
  std::string activation = "silu_gated";
  double rope_theta = 10000.0;
  int64_t rope_dims = 0;  // rotated dims per head; canonical RoPE rotates interleaved pairs (2i, 2i+1)
  bool tied_embeddings = false;
  int64_t max_seq = 0;    // 0 = not stated by the source

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

struct TensorSpec {
  std::string name;             // canonical name, e.g. "blocks.3.attn.q.weight"
  std::vector<int64_t> shape;   // [rows, cols] for matrices, [n] for vectors
  bool is_norm = false;
};

// The canonical tensors of one unit (index is the block number for blocks, ignored otherwise).
std::vector<TensorSpec> unit_tensors(const ModelDesc& m, UnitKind kind, int64_t index);
std::string unit_name(UnitKind kind, int64_t index);  // "embedding", "block_003", "head"

// The units in streaming order: embedding, block 0 .. n_layers-1, head.
std::vector<std::pair<UnitKind, int64_t>> unit_order(const ModelDesc& m);
// Every canonical tensor of the model, in streaming order.
std::vector<TensorSpec> all_tensors(const ModelDesc& m);

}  // namespace sf
