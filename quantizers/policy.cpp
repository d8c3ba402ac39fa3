#include "quantizers/policy.h"

#include <fnmatch.h>

#include "core/error.h"

namespace sf {

namespace {
bool is_float(QType t) { return t == QType::F32 || t == QType::F16 || t == QType::BF16; }
bool matches(const std::string& pattern, const std::string& name) {
  return ::fnmatch(pattern.c_str(), name.c_str(), 0) == 0;
}
}  // namespace

Policy::Policy(Scheme base) : base_(base) {}

void Policy::add_override(const std::string& spec) {
  const size_t eq = spec.rfind('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
    fail_usage("tensor override '" + spec + "' is not PATTERN=SCHEME");
  overrides_.push_back({spec, spec.substr(0, eq), parse_scheme(spec.substr(eq + 1))});
}

Scheme Policy::scheme_for(const TensorSpec& t) const {
  for (auto it = overrides_.rbegin(); it != overrides_.rend(); ++it)
    if (matches(it->pattern, t.name)) return it->scheme;
  switch (t.role) {
    case TensorRole::NormWeight: case TensorRole::NormBias: case TensorRole::LinearBias:
      return Scheme{QType::F32, 0};
    case TensorRole::TokenEmbedding: case TensorRole::PositionEmbedding:
      return is_float(base_.type) ? base_ : Scheme{QType::Int8, 0};
    case TensorRole::Output:
      return is_float(base_.type) || base_.type == QType::Int8 ? base_ : Scheme{QType::Int8, 0};
    case TensorRole::LinearWeight: break;
  }
  return base_;
}

std::vector<std::string> Policy::unmatched_overrides(const std::vector<std::string>& names) const {
  std::vector<std::string> out;
  for (const auto& o : overrides_) {
    bool any = false;
    for (const auto& n : names) any = any || matches(o.pattern, n);
    if (!any) out.push_back(o.spec);
  }
  return out;
}

}  // namespace sf
