#pragma once
// How each model family is written as a llama.cpp architecture (llama.cpp src/llama-arch.cpp,
// src/llama-model.cpp): the architecture name, the tensor names, the tensors llama.cpp expects
// fused (q, k and v as one attn_qkv; ChatGLM's gate and up as one ffn_up), and the shapes it
// cannot take. One table; the writer and the reader both read it.
#include <optional>
#include <string>
#include <vector>

#include "core/model_desc.h"

namespace sf::gguf {

// A GGUF tensor of one block made of canonical tensors of that block, concatenated by rows in
// this order. Names are after "blocks.N." (canonical) and "blk.N." (GGUF).
struct FusedTensor {
  const char* gguf;
  std::vector<const char*> parts;
};

struct ArchEntry {
  const char* family;  // ModelDesc::family
  const char* arch;    // general.architecture
  std::vector<FusedTensor> fused;
  // llama.cpp's graph for the architecture requires output.weight even when the source ties it
  // to the embedding (GPT-2): the embedding's bytes are written twice.
  bool output_required;
  // Why llama.cpp's graph for the architecture cannot run this model (empty: it can).
  std::string (*cannot_run)(const ModelDesc&);
};

// The entry for a family; fails (Unsupported, naming the family) for ChatGLM-6B and any family
// llama.cpp has no architecture for.
const ArchEntry& arch_for_family(const std::string& family);
// The entry for a general.architecture value, or null.
const ArchEntry* arch_for_name(const std::string& arch);

// "blocks.3.attn.q.weight" -> "blk.3.attn_q.weight", "embed.weight" -> "token_embd.weight".
// Canonical names of fused tensors map to their own (unfused) GGUF names here.
std::string gguf_tensor_name(const std::string& canonical);

// The fused GGUF tensor a canonical block tensor is part of under `arch`, with the part's index,
// or nullopt when it is written alone.
struct FusedPart {
  const FusedTensor* fused;
  size_t index;
};
std::optional<FusedPart> fused_part(const ArchEntry& arch, const std::string& canonical_suffix);

}  // namespace sf::gguf
