#pragma once
// Weights stored quantized or in 16 bits and turned into f32 by the graph (what `--format onnx`
// writes, formats/onnx/onnx_weights.cpp): the dequantizing subgraph is replaced by one f32
// initializer, so structure recovery sees the weight where the graph uses it. Recognised, exactly:
//   Cast(to=FLOAT) of a FLOAT16 / BFLOAT16 initializer                       -> that initializer
//   DequantizeLinear(q, s, axis=0) of INT8/UINT8 q [rows, cols], f32 s [rows]  (per row)
//   DequantizeLinear(q, s', axis=1, block_size=B) of INT8/UINT8/INT4/UINT4 q [rows, cols],
//       s' = s or Cast(s) of a FLOAT/FLOAT16/BFLOAT16 s [rows, ceil(cols / B)]   (block-wise)
//   the block-wise one + Slice?(Reshape(Expand(Unsqueeze(Cast(min), [2]), [rows|1, G, B]), [-1, G*B]))
//       of a min [rows, G] shaped as s                                         (asymmetric)
// each also with every initializer Gathered (axis 0) by the same indices (an embedding's rows), which
// becomes a Gather of the decoded table. A zero point, when given, must be an initializer of zeros.
// The new initializer decodes lazily (converters/decoded_storage.h): nothing is decoded until the
// pipeline reads the weight, and the codes are read in place. Nothing is executed; a
// DequantizeLinear of an initializer that matches none of these is refused, naming the node.
#include <map>
#include <string>

#include "onnx/onnx.pb.h"

#include "converters/source_model.h"

namespace sf {

// Rewrites `g`'s nodes (top level) and adds the decoded initializers to `initializers`; throws
// Error naming `file` and the node on a malformed dequantization.
void fold_dequantized_weights(onnx::GraphProto& g, std::map<std::string, LazyTensor>& initializers,
                              const std::string& file);

}  // namespace sf
