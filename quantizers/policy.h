#pragma once
// Which scheme each canonical tensor gets. Defaults (docs/quantization.md):
//   norm weights                 f32, always
//   embed.weight                 the base scheme if it is a float type, else int8
//   head.output.weight           the base scheme if it is a float type or int8, else int8
//   every other matrix           the base scheme
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
  Scheme scheme_for(const std::string& canonical_name, bool is_norm) const;
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
