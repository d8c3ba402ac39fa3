#pragma once
// Structure recovery: which initializer of an ONNX graph is which weight of a LLaMA-, GPT-2- or
// ChatGLM2/3-shaped transformer, and its hyper-parameters, read from the data flow rather than from
// names (exporters name constant-folded weights `onnx::MatMul_NNN`, and names differ between
// exporters).
#include <string>

#include "onnx/onnx.pb.h"

#include "converters/onnx/onnx_graph.h"
#include "converters/source_model.h"

namespace sf {

// Names the weights of `m.tensors` (the graph's initializers, by ONNX name) with the canonical
// source names of a known family and fills m.config / m.config_kind; weights the graph stores
// transposed ([in, out] for MatMul) become transposed views, read in place. `hf_config` is the
// config.json beside the model (null when none): the values it states win over those recovered.
// Throws Error naming m.path and what was not found when the graph is not one it recognises.
void recover_structure(SourceModel& m, const OnnxGraph& graph, const json& hf_config);

}  // namespace sf
