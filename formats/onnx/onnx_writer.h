#pragma once
// --format onnx: an output directory holding model.onnx (the decoder graph, generated at finish from
// the model description), model.onnx_data (every weight, written as its unit arrives, each at a
// 4 KiB-aligned offset) and manifest.json. docs/onnx.md.
#include <memory>

#include "formats/format_registry.h"

namespace sf {

// Checks an ONNX output directory after its files' sizes and sha256 (verify_artifact): every graph
// the manifest lists parses, and every external weight lies inside the data file at an aligned
// offset. Throws Error naming the file.
void check_onnx_output(const std::string& dir);

std::unique_ptr<FormatWriter> make_onnx_writer(const OutputTarget& target, const ModelDesc& desc);

}  // namespace sf
