#pragma once
// Which scheme each canonical tensor gets, by its role. Defaults (docs/quantization.md):
//   norm weights and biases, linear biases   f32
//   token and position embeddings            the base scheme if it is a float type, else int8
//   output projection                        the base scheme if it is a float type or int8, else int8
//   linear weights                           the base scheme
// Overrides are glob patterns over canonical names; the last matching one wins.
#include <string>
#include <vector>

#include "core/model_desc.h"
#include "quantizers/scheme.h"

namespace sf {

class Policy {
 public:
  explicit Policy(Scheme base);
  // "PATTERN=SCHEME", e.g. "blocks.*.ffn.down.weight=int8". A malformed one is a usage error.
  void add_override(const std::string& spec);
  Scheme scheme_for(const TensorSpec& tensor) const;
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
