#pragma once
// A GGUF file opened as an artifact for execution: the model description from its llama.cpp
// metadata (checked against shardforge's own description when the file carries one, whose exact
// values are then used), and every canonical tensor as a view into the file's map. A fused
// attn_qkv (or ChatGLM's gate+up ffn_up) is split into row-range views; nothing is copied.
#include <string>

#include "formats/artifact.h"
#include "formats/gguf/gguf_file.h"

namespace sf {

// True when `path` is a regular file starting with GGUF's magic (a directory is not).
bool is_gguf_file(const std::string& path);

// The description llama.cpp's metadata gives for the file (docs/gguf.md has the table per family).
ModelDesc gguf_model_desc(const GgufFile& file);

// The GGUF file at `path` as an artifact (formats/artifact_readers.h opens any artifact).
Artifact open_gguf_model(const std::string& path);

}  // namespace sf
