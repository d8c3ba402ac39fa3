#include "executor/exec_model.h"

#include "core/error.h"
#include "executor/unit_stream.h"
#include "formats/artifact_readers.h"

namespace sf {

namespace {

// Where each canonical block tensor goes in LayerWeights.
struct Slot {
  const char* name;  // after "blocks.N."
  const TensorView* LayerWeights::*member;
};
constexpr Slot kBlockSlots[] = {
    {"attn_norm.weight", &LayerWeights::attn_norm}, {"attn_norm.bias", &LayerWeights::attn_norm_b},
    {"attn.q.weight", &LayerWeights::q},            {"attn.q.bias", &LayerWeights::q_b},
    {"attn.k.weight", &LayerWeights::k},            {"attn.k.bias", &LayerWeights::k_b},
    {"attn.v.weight", &LayerWeights::v},            {"attn.v.bias", &LayerWeights::v_b},
    {"attn.o.weight", &LayerWeights::o},            {"attn.o.bias", &LayerWeights::o_b},
    {"ffn_norm.weight", &LayerWeights::ffn_norm},   {"ffn_norm.bias", &LayerWeights::ffn_norm_b},
    {"ffn.gate.weight", &LayerWeights::gate},       {"ffn.gate.bias", &LayerWeights::gate_b},
    {"ffn.up.weight", &LayerWeights::up},           {"ffn.up.bias", &LayerWeights::up_b},
    {"ffn.down.weight", &LayerWeights::down},       {"ffn.down.bias", &LayerWeights::down_b},
};

}  // namespace

LayerSlot layer_slot(std::string_view name_in_block) {
  for (const auto& s : kBlockSlots)
    if (name_in_block == s.name) return s.member;
  return nullptr;
}

ExecModel::ExecModel(const std::string& dir, int64_t resident_blocks) : artifact_(open_model(dir)) {
  const ModelDesc& m = artifact_.desc();
  for (const auto& kind : {UnitKind::Embedding, UnitKind::Head})
    for (const auto& spec : unit_tensors(m, kind, 0)) {
      const TensorView* t = &artifact_.tensor(spec.name);
      switch (spec.role) {
        case TensorRole::TokenEmbedding: embed_ = t; break;
        case TensorRole::PositionEmbedding: pos_embed_ = t; break;
        case TensorRole::NormWeight: head_norm_ = t; break;
        case TensorRole::NormBias: head_norm_b_ = t; break;
        case TensorRole::Output: output_ = t; break;
        default: fail(dir + ": tensor " + spec.name + " has no place in the executor");
      }
    }
  if (m.tied_embeddings) output_ = embed_;
  for (int64_t i = 0; i < m.n_layers; ++i) {
    LayerWeights w;
    const size_t prefix = block_prefix(i).size();
    for (const auto& spec : unit_tensors(m, UnitKind::Block, i)) {
      const LayerSlot slot = layer_slot(std::string_view(spec.name).substr(prefix));
      if (!slot) fail(dir + ": tensor " + spec.name + " has no place in the executor");
      w.*slot = &artifact_.tensor(spec.name);
    }
    layers_.push_back(w);
  }
  if (resident_blocks < 0) fail_usage("--resident-blocks must be 0 (all) or more");
  if (resident_blocks > 0 && resident_blocks < m.n_layers) {
    stream_ = std::make_unique<UnitStream>(*this, resident_blocks);
  }
}

ExecModel::~ExecModel() = default;

}  // namespace sf
