// libFuzzer target: a JSON configuration file as read_json_file reads it, then the readers that
// consume one: the model configuration (config.json for Hugging Face naming, params.json for Meta
// naming) through map_architecture, and the --pipeline file through make_pipeline.
//
// The model configuration is paired with the tensor names and shapes of a small real model (the
// hf_gqa / meta test fixtures: vocabulary 300, width 64, 2 layers, 4 heads, 2 KV heads, FFN 100),
// so a configuration that agrees with them reaches the end of the mapping. The tensors have no
// storage: map_architecture only compares names and shapes.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "converters/architectures/architecture.h"
#include "core/error.h"
#include "core/json_util.h"
#include "fuzz_file.h"
#include "pipeline/stage.h"

namespace {

struct Shaped {
  const char* name;  // {i} = block number
  std::vector<int64_t> shape;
};

constexpr int64_t kVocab = 300, kDim = 64, kLayers = 2, kKvDim = 32, kFfn = 100;

sf::SourceModel small_model(const std::vector<Shaped>& table, const char* config_kind, const nlohmann::json& config) {
  sf::SourceModel m;
  m.path = "fuzz-model";
  m.format = "pytorch";
  m.config = config;
  m.config_kind = config_kind;
  for (const auto& t : table)
    for (int64_t i = 0; i < (std::string(t.name).find("{i}") == std::string::npos ? 1 : kLayers); ++i) {
      std::string name = t.name;
      if (const size_t p = name.find("{i}"); p != std::string::npos) name.replace(p, 3, std::to_string(i));
      sf::LazyTensor lt;
      lt.name = name;
      lt.shape = t.shape;
      m.tensors.emplace(name, lt);
    }
  return m;
}

const std::vector<Shaped>& hf_tensors() {
  static const std::vector<Shaped> t = {
      {"model.embed_tokens.weight", {kVocab, kDim}},
      {"model.layers.{i}.input_layernorm.weight", {kDim}},
      {"model.layers.{i}.self_attn.q_proj.weight", {kDim, kDim}},
      {"model.layers.{i}.self_attn.k_proj.weight", {kKvDim, kDim}},
      {"model.layers.{i}.self_attn.v_proj.weight", {kKvDim, kDim}},
      {"model.layers.{i}.self_attn.o_proj.weight", {kDim, kDim}},
      {"model.layers.{i}.post_attention_layernorm.weight", {kDim}},
      {"model.layers.{i}.mlp.gate_proj.weight", {kFfn, kDim}},
      {"model.layers.{i}.mlp.up_proj.weight", {kFfn, kDim}},
      {"model.layers.{i}.mlp.down_proj.weight", {kDim, kFfn}},
      {"model.norm.weight", {kDim}},
      {"lm_head.weight", {kVocab, kDim}},
  };
  return t;
}

const std::vector<Shaped>& meta_tensors() {
  static const std::vector<Shaped> t = {
      {"tok_embeddings.weight", {kVocab, kDim}},
      {"layers.{i}.attention_norm.weight", {kDim}},
      {"layers.{i}.attention.wq.weight", {kDim, kDim}},
      {"layers.{i}.attention.wk.weight", {kKvDim, kDim}},
      {"layers.{i}.attention.wv.weight", {kKvDim, kDim}},
      {"layers.{i}.attention.wo.weight", {kDim, kDim}},
      {"layers.{i}.ffn_norm.weight", {kDim}},
      {"layers.{i}.feed_forward.w1.weight", {kFfn, kDim}},
      {"layers.{i}.feed_forward.w3.weight", {kFfn, kDim}},
      {"layers.{i}.feed_forward.w2.weight", {kDim, kFfn}},
      {"norm.weight", {kDim}},
      {"output.weight", {kVocab, kDim}},
  };
  return t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz_input_file(data, size, ".json");
  nlohmann::json config;
  try {
    config = sf::read_json_file(path);
  } catch (const sf::Error&) {
    return 0;
  }
  try {
    const sf::SourceModel src = small_model(hf_tensors(), "hf_config", config);
    sf::map_architecture(src);
  } catch (const sf::Error&) {
  }
  for (const char* kind : {"params_json", "model_args"}) {
    try {
      const sf::SourceModel src = small_model(meta_tensors(), kind, config);
      sf::map_architecture(src);
    } catch (const sf::Error&) {
    }
  }
  try {
    sf::make_pipeline(config);
  } catch (const sf::Error&) {
  }
  return 0;
}
