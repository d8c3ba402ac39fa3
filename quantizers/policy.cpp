#include "quantizers/policy.h"

#include <fnmatch.h>

#include "core/error.h"

namespace sf {

namespace {
bool is_float(QType t) { return t == QType::F32 || t == QType::F16 || t == QType::BF16; }
}  // namespace

Policy::Policy(Scheme base) : base_(base) {}

void Policy::add_override(const std::string& spec) {
  const size_t eq = spec.rfind('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
    fail("tensor override '" + spec + "' is not PATTERN=SCHEME");
  overrides_.emplace_back(spec.substr(0, eq), parse_scheme(spec.substr(eq + 1)));
}

Scheme Policy::scheme_for(const std::string& name, bool is_norm) const {
  for (auto it = overrides_.rbegin(); it != overrides_.rend(); ++it)
    if (::fnmatch(it->first.c_str(), name.c_str(), 0) == 0) return it->second;
  if (is_norm) return Scheme{QType::F32, 0};
  if (name == "embed.weight") return is_float(base_.type) ? base_ : Scheme{QType::Int8, 0};
  if (name == "head.output.weight")
    return is_float(base_.type) || base_.type == QType::Int8 ? base_ : Scheme{QType::Int8, 0};
  return base_;
}

}  // namespace sf
