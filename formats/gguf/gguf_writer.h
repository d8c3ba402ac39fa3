#pragma once
// `convert --format gguf`: one GGUF v3 file llama.cpp loads (docs/gguf.md).
#include <memory>

#include "formats/format_registry.h"

namespace sf {

std::unique_ptr<FormatWriter> make_gguf_writer(const OutputTarget& target, const ModelDesc& desc);

}  // namespace sf
