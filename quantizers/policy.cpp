#include "quantizers/policy.h"

#include <fnmatch.h>

#include <algorithm>

#include "core/error.h"

namespace sf {

namespace {
bool is_float(QType t) { return t == QType::F32 || t == QType::F16 || t == QType::BF16; }
bool matches(const std::string& pattern, const std::string& name) {
  return ::fnmatch(pattern.c_str(), name.c_str(), 0) == 0;
}

// Integer base schemes: what their embeddings and output projection get instead. Those tensors
// are the most sensitive to rounding; ggml's block types keep ggml's q8_0 there (llama.cpp itself
// uses q8_0 / q6_K), so a GGUF of a q4_0 model holds only ggml types.
struct IntegerBase {
  QType base, embedding, output;
};
constexpr IntegerBase kIntegerBases[] = {
    {QType::Int8, QType::Int8, QType::Int8},     {QType::Int4Sym, QType::Int8, QType::Int8},
    {QType::Int4Asym, QType::Int8, QType::Int8}, {QType::Q8_0, QType::Q8_0, QType::Q8_0},
    {QType::Q4_0, QType::Q8_0, QType::Q8_0},
};
const IntegerBase& integer_base(QType t) {
  for (const auto& b : kIntegerBases)
    if (b.base == t) return b;
  fail(std::string("quantization policy: no rule for base type ") + qtype_traits(t).name);
}

// Elements per block along a row for ggml's block types; 1 for the rest.
size_t block_elements(QType t) { return t == QType::Q8_0 || t == QType::Q4_0 ? 32 : 1; }
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
      return is_float(base_.type) ? base_ : Scheme{integer_base(base_.type).embedding, 0};
    case TensorRole::Output:
      return is_float(base_.type) ? base_ : Scheme{integer_base(base_.type).output, 0};
    case TensorRole::LinearWeight: break;
  }
  return base_;
}

Scheme Policy::scheme_for(const TensorSpec& t, const FormatRules& f) const {
  const auto storable = [&](QType q) { return f.types.empty() || std::find(f.types.begin(), f.types.end(), q) != f.types.end(); };
  std::string takes;
  for (QType q : f.types) takes += std::string(takes.empty() ? "" : ", ") + qtype_traits(q).name;
  // The base scheme first: it is what the user chose, and it decides the embedding's type too.
  if (!storable(base_.type))
    fail_usage("--format " + f.format + " cannot store " + base_.name() + " (it has no such type); it takes " + takes);
  Scheme s = scheme_for(t);
  if (!storable(s.type))
    fail_usage("--format " + f.format + " cannot store " + s.name() + " (tensor " + t.name + "); it takes " + takes);
  const size_t block = block_elements(s.type);
  if (f.whole_blocks_only && block > 1 && t.shape.back() % int64_t(block) != 0) return Scheme{QType::F16, 0};
  return s;
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
