#pragma once
// Test helper: the executor's LayerWeights over a block's f32 values held by the test.
#include <map>
#include <string>
#include <vector>

#include "executor/exec_model.h"
#include "formats/shard_file.h"

namespace sf {

// values and shapes by tensor name after "blocks.N."; views is filled and must outlive the result.
inline LayerWeights f32_block_views(std::map<std::string, std::vector<float>>& values,
                                    const std::map<std::string, std::vector<int64_t>>& shapes,
                                    std::vector<TensorView>& views) {
  views.clear();
  views.reserve(values.size());
  LayerWeights w;
  for (auto& [n, v] : values) {
    TensorView t;
    t.name = n;
    t.shape = shapes.at(n);
    t.data = reinterpret_cast<const uint8_t*>(v.data());
    t.nbytes = v.size() * sizeof(float);
    t.row_bytes = size_t(t.shape.back()) * sizeof(float);
    views.push_back(t);
    w.*layer_slot(n) = &views.back();
  }
  return w;
}

}  // namespace sf
