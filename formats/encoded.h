#pragma once
// A unit's tensors after quantization, ready for any format writer.
#include <cstdint>
#include <string>
#include <vector>

#include "core/model_desc.h"
#include "core/quant_types.h"

namespace sf {

struct EncodedTensor {
  std::string name;
  QType type = QType::F32;
  size_t group = 0;
  std::vector<int64_t> shape;     // [rows, cols] or [n]
  std::vector<uint8_t> data;      // rows * row_bytes bytes

  int64_t rows() const { return shape.size() == 2 ? shape[0] : 1; }
  int64_t cols() const { return shape.back(); }
  size_t row_bytes() const { return qtype_traits(type).row_bytes(size_t(cols()), group); }
};

struct EncodedUnit {
  UnitKind kind = UnitKind::Block;
  int64_t index = 0;
  std::vector<EncodedTensor> tensors;
};

}  // namespace sf
