#pragma once
// safetensors sources: one .safetensors file, a Hugging Face sharded checkpoint
// (model.safetensors.index.json), or a directory holding either (with config.json or params.json
// and the tokenizer beside it).
#include <memory>
#include <string>

#include "converters/source_model.h"

namespace sf {

bool safetensors_probe(const std::string& path);
std::unique_ptr<SourceModel> safetensors_open(const std::string& path);

}  // namespace sf
