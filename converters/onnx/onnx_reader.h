#pragma once
// ONNX sources: a .onnx file, or a directory holding one (with config.json and the tokenizer beside
// it). Weights inline or as external data; the graph's structure says which weight is which.
#include <memory>
#include <string>

#include "converters/source_model.h"

namespace sf {

bool onnx_probe(const std::string& path);
std::unique_ptr<SourceModel> onnx_open(const std::string& path);

}  // namespace sf
