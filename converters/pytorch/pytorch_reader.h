#pragma once
// PyTorch sources: one torch.save zip file, a directory holding one (with config.json or
// params.json and tokenizer.model beside it), or a Hugging Face sharded checkpoint
// (pytorch_model.bin.index.json).
#include <memory>
#include <string>

#include "converters/source_model.h"

namespace sf {

bool pytorch_probe(const std::string& path);
std::unique_ptr<SourceModel> pytorch_open(const std::string& path);

}  // namespace sf
