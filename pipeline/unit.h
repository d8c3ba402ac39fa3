#pragma once
// The grain of streaming: one unit's tensors as they pass through the stages. Values are held
// only while the unit is in flight.
#include <cstdint>
#include <string>
#include <vector>

#include "core/model_desc.h"
#include "formats/encoded.h"

namespace sf {

struct UnitTensor {
  TensorSpec spec;
  std::vector<float> values;  // row-major f32, filled by "load"
  EncodedTensor encoded;      // filled by "quantize"
  bool has_values = false, has_encoded = false;

  // Names `encoded` after this tensor with its shape, in `type` (groups of `group`), with no bytes
  // yet; returns it for the caller to fill with rows x row_bytes bytes.
  EncodedTensor& start_encoding(QType type, size_t group);
};

struct Unit {
  UnitKind kind = UnitKind::Block;
  int64_t index = 0;
  std::vector<UnitTensor> tensors;

  std::string name() const { return unit_name(kind, index); }
  static Unit make(const ModelDesc& desc, UnitKind kind, int64_t index);
  // Moves the encoded tensors out (the unit keeps none); throws if one was not quantized.
  EncodedUnit take_encoded();
};

}  // namespace sf
