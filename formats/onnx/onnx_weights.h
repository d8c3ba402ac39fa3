#pragma once
// How each storage type of a canonical tensor is written as ONNX initializers, and the nodes that
// turn them back into the f32 values the executor computes with: one row per type (f32 as is;
// f16/bf16 cast; int8 per-row DequantizeLinear; int4 and ggml's q8_0 / q4_0 block-wise
// DequantizeLinear, with the asymmetric minimum added per block). The bytes are our own codes and scales, rearranged only
// where ONNX packs differently, so the dequantized values are exactly the executor's.
#include <cstdint>
#include <string>
#include <vector>

#include "core/quant_types.h"
#include "formats/encoded.h"
#include "formats/onnx/onnx_builder.h"

namespace sf::onnx_out {

// One initializer of a tensor: its name suffix (".q", ".scale"), ONNX type and dims.
struct WeightPart {
  std::string suffix;
  int32_t type = kFloat;
  std::vector<int64_t> dims;
  std::vector<uint8_t> bytes;  // emptied once written
  ExternalRef ref;             // where it was written
};

// A canonical tensor as written: its parts in the data file.
struct WrittenWeight {
  std::string name;
  QType type = QType::F32;
  size_t group = 0;
  std::vector<int64_t> shape;
  std::vector<WeightPart> parts;
};

// Whether the ONNX writer stores tensors of this type (the policy's FormatRules).
std::vector<QType> onnx_storable_types();

// The initializers of an encoded tensor (bytes filled, refs not yet).
std::vector<WeightPart> weight_parts(const EncodedTensor& t);

// Adds w's initializers (external, at their refs) and the nodes that give its f32 value, with the
// tensor's own shape; returns that value's name.
std::string f32_value(GraphBuilder& g, const WrittenWeight& w);
// w's f32 rows at `ids` (int64 of any shape, read flattened): [n, cols], bit for bit the rows of
// f32_value. Where the stored codes can be gathered (f32, f16, bf16, int8, q8_0), each initializer
// is gathered first and only the rows read are converted, so a quantized embedding is not
// dequantized whole on every call; ONNX's Gather takes no 4-bit tensor, so 4-bit types dequantize
// the whole table and gather from that.
std::string f32_rows(GraphBuilder& g, const WrittenWeight& w, const std::string& ids);
bool rows_gatherable(const WrittenWeight& w);  // no 4-bit initializer

}  // namespace sf::onnx_out
