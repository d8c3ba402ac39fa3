#pragma once
// An artifact opened for execution: the model description and, per layer, the tensor views the
// forward pass uses, resolved once.
#include <memory>
#include <string>
#include <vector>

#include "formats/artifact.h"

namespace sf {

struct LayerWeights {
  const TensorView *attn_norm, *q, *k, *v, *o, *ffn_norm, *gate, *up, *down;
};

class ExecModel {
 public:
  explicit ExecModel(const std::string& artifact_dir);
  const ModelDesc& desc() const { return artifact_.desc(); }
  const Artifact& artifact() const { return artifact_; }
  const TensorView& embed() const { return *embed_; }
  const TensorView& head_norm() const { return *head_norm_; }
  const TensorView& output() const { return *output_; }  // the embedding when tied
  const LayerWeights& layer(int64_t i) const { return layers_[size_t(i)]; }

 private:
  Artifact artifact_;
  const TensorView *embed_, *head_norm_, *output_;
  std::vector<LayerWeights> layers_;
};

}  // namespace sf
