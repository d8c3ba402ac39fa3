#pragma once
// Which scheme each canonical tensor gets, by its role. Defaults (docs/quantization.md):
//   norm weights and biases, linear biases   f32
//   token and position embeddings            the base scheme if it is a float type, else the
//                                            base's embedding type (kIntegerBases in policy.cpp)
//   output projection                        the base scheme if it is a float type, else the
//                                            base's output type (same table)
//   linear weights                           the base scheme
// Overrides are glob patterns over canonical names; the last matching one wins.
// The output format then has its say (FormatRules): a type it cannot store is refused, and a
// block type (q4_0 / q8_0) on rows that are not whole blocks becomes f16 where the format demands
// whole blocks (GGUF: ggml needs cols % 32 == 0, and llama.cpp's converter falls back so too).
#include <string>
#include <vector>

#include "core/model_desc.h"
#include "quantizers/scheme.h"

namespace sf {

// What an output format can store (each FormatWriter says; formats/format_registry.h).
struct FormatRules {
  std::string format;                // its name, for messages
  std::vector<QType> types;          // the types it stores; empty: all
  bool whole_blocks_only = false;    // block types only on rows of whole blocks, f16 otherwise
};

class Policy {
 public:
  explicit Policy(Scheme base);
  // "PATTERN=SCHEME", e.g. "blocks.*.ffn.down.weight=int8". A malformed one is a usage error.
  void add_override(const std::string& spec);
  Scheme scheme_for(const TensorSpec& tensor) const;
  // The scheme above, as the format stores it; a type the format cannot store is a usage error
  // naming the scheme, the tensor and what the format takes.
  Scheme scheme_for(const TensorSpec& tensor, const FormatRules& format) const;
  const Scheme& base() const { return base_; }
  // The overrides (as given) whose pattern matches none of `names`: each would silently do nothing.
  std::vector<std::string> unmatched_overrides(const std::vector<std::string>& names) const;

 private:
  struct Override {
    std::string spec, pattern;
    Scheme scheme;
  };
  Scheme base_;
  std::vector<Override> overrides_;
};

}  // namespace sf
