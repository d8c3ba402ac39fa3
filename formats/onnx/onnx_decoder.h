#pragma once
// The decoder's ONNX graph, generated from the canonical ModelDesc: the settings the executor
// dispatches on (norm, FFN, positional and residual kinds, biases, tied head, grouped k/v) each
// choose the nodes of their step, so every family the executor runs through those settings gets
// its graph from this one description. Layout and names: docs/onnx.md.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/model_desc.h"
#include "formats/onnx/onnx_builder.h"
#include "formats/onnx/onnx_weights.h"

namespace sf::onnx_out {

inline constexpr int64_t kOpset = 21;  // DequantizeLinear's block_size, int4 tensors
inline constexpr int64_t kIrVersion = 10;

// Empty when the writer generates graphs for these settings; otherwise what it lacks.
std::string unsupported_settings(const ModelDesc& d);

// Rows of the RoPE tables (positions a graph can run at): max_seq, or 4096 when not stated.
int64_t rope_rows(const ModelDesc& d);
// cos and sin of position p times each pair's frequency, [rows, rope_dims/2] f32 each, computed
// in double and rounded once, as the executor's rotation tables.
void rope_tables(const ModelDesc& d, int64_t rows, std::vector<float>& cos, std::vector<float>& sin);

// The values every block takes, computed once per run from input_ids and the cache length.
struct Shared {
  std::string positions;  // int64 [seq]: past .. past + seq - 1
  std::string mask;       // f32 [seq, total]: 0 where a query sees a key, lowest() elsewhere
  std::string cos, sin;   // f32 [seq, rope_dims / 2] (RoPE only)
};

struct Weights {
  const std::map<std::string, WrittenWeight>* tensors;
  ExternalRef rope_cos, rope_sin;  // the tables' place in the data file (RoPE only)
};

// input_ids [1, seq] and the cache length (int64 [1]) give the shared values.
Shared shared_values(GraphBuilder& g, const ModelDesc& d, const Weights& w, const std::string& input_ids,
                     const std::string& past);
// input_ids [1, seq] -> x [seq, d_model].
std::string embedding(GraphBuilder& g, const ModelDesc& d, const Weights& w, const std::string& input_ids,
                      const Shared& s);
// Block `layer` on x [seq, d_model]; its cache: past [1, kv_heads, past, head_dim] in, present
// [1, kv_heads, past + seq, head_dim] out (names given).
std::string block(GraphBuilder& g, const ModelDesc& d, const Weights& w, int64_t layer, const std::string& x,
                  const Shared& s, const std::string& past_k, const std::string& past_v, const std::string& present_k,
                  const std::string& present_v);
// x [seq, d_model] -> the graph output `logits` [1, seq, vocab].
void head(GraphBuilder& g, const ModelDesc& d, const Weights& w, const std::string& x, const std::string& logits);

// The whole decoder: inputs input_ids, past_key_values.N.key/.value; outputs logits,
// present.N.key/.value.
void whole_graph(onnx::GraphProto* graph, const ModelDesc& d, const Weights& w);

// --split blocks: one graph per unit. embedding.onnx: input_ids, past_length (int64 [1]) ->
// hidden_states [1, seq, d_model], attention_mask [seq, total], rope_cos / rope_sin [seq, pairs].
// block_NNN.onnx: those (but input_ids) and its layer's past_key_values -> hidden_states_out and
// present. head.onnx: hidden_states -> logits.
void embedding_graph(onnx::GraphProto* graph, const ModelDesc& d, const Weights& w);
void block_graph(onnx::GraphProto* graph, const ModelDesc& d, const Weights& w, int64_t layer);
void head_graph(onnx::GraphProto* graph, const ModelDesc& d, const Weights& w);

}  // namespace sf::onnx_out
