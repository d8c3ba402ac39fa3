#pragma once
// An artifact opened for execution: the model description and, per layer, the tensor views the
// forward pass uses, resolved once from the canonical tensor table (core/model_desc). Tensors the
// settings leave out (biases, the gate of a plain FFN, learned positions) are null.
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "formats/artifact.h"

namespace sf {

struct LayerWeights {
  const TensorView *attn_norm = nullptr, *attn_norm_b = nullptr;
  const TensorView *q = nullptr, *q_b = nullptr, *k = nullptr, *k_b = nullptr, *v = nullptr, *v_b = nullptr;
  const TensorView *o = nullptr, *o_b = nullptr;
  const TensorView *ffn_norm = nullptr, *ffn_norm_b = nullptr;
  const TensorView *gate = nullptr, *gate_b = nullptr, *up = nullptr, *up_b = nullptr, *down = nullptr,
                   *down_b = nullptr;
};

// The LayerWeights member a block tensor goes in, by its canonical name after "blocks.N."
// ("attn.q.weight"); null for a name the executor has no place for.
using LayerSlot = const TensorView* LayerWeights::*;
LayerSlot layer_slot(std::string_view name_in_block);

class UnitStream;

class ExecModel {
 public:
  // Any artifact the readers open (formats/artifact_readers.h): the same views either way.
  // resident_blocks > 0 and below the layer count keeps at most that many blocks in memory and
  // streams the rest (executor/unit_stream.h); 0 keeps everything.
  explicit ExecModel(const std::string& artifact, int64_t resident_blocks = 0);
  ~ExecModel();
  const ModelDesc& desc() const { return artifact_.desc(); }
  const Artifact& artifact() const { return artifact_; }
  const TensorView& embed() const { return *embed_; }
  const TensorView* pos_embed() const { return pos_embed_; }  // learned positions, else null
  const TensorView& head_norm() const { return *head_norm_; }
  const TensorView* head_norm_bias() const { return head_norm_b_; }
  const TensorView& output() const { return *output_; }  // the embedding when tied
  const LayerWeights& layer(int64_t i) const { return layers_[size_t(i)]; }
  // Null when every block stays resident.
  UnitStream* stream() const { return stream_.get(); }

 private:
  Artifact artifact_;
  const TensorView *embed_ = nullptr, *pos_embed_ = nullptr, *head_norm_ = nullptr, *head_norm_b_ = nullptr,
                   *output_ = nullptr;
  std::vector<LayerWeights> layers_;
  std::unique_ptr<UnitStream> stream_;
};

}  // namespace sf
