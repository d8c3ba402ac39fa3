#pragma once
// Quantization schemes by short name: f32, f16, bf16, int8, int4[:gN][:sym|:asym].
#include <cstddef>
#include <string>

#include "core/quant_types.h"

namespace sf {

struct Scheme {
  QType type = QType::F32;
  size_t group = 0;  // elements per group along a row (int4 only)

  std::string name() const;  // canonical spelling, "int4:g32:sym"
  bool operator==(const Scheme&) const = default;
};

// Throws a usage Error (exit 2) naming the bad part for anything else, including contradictory or
// repeated options ("int4:sym:asym", "int4:g32:g64").
Scheme parse_scheme(const std::string& text);
constexpr size_t kDefaultInt4Group = 32;

}  // namespace sf
