#include "quantizers/scheme.h"

#include <array>
#include <sstream>
#include <vector>

#include "core/error.h"

namespace sf {

namespace {
struct SchemeName {
  const char* name;
  QType type;      // for int4, the symmetric variant; ":asym" selects the other
  bool grouped;
};
constexpr std::array<SchemeName, 5> kNames = {{
    {"f32", QType::F32, false},
    {"f16", QType::F16, false},
    {"bf16", QType::BF16, false},
    {"int8", QType::Int8, false},
    {"int4", QType::Int4Sym, true},
}};
}  // namespace

std::string Scheme::name() const {
  switch (type) {
    case QType::Int4Sym: return "int4:g" + std::to_string(group) + ":sym";
    case QType::Int4Asym: return "int4:g" + std::to_string(group) + ":asym";
    default: return qtype_traits(type).name;
  }
}

Scheme parse_scheme(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream ss(text);
  for (std::string p; std::getline(ss, p, ':');) parts.push_back(p);
  if (parts.empty()) fail("empty quantization scheme");
  for (const auto& n : kNames) {
    if (parts[0] != n.name) continue;
    Scheme s{n.type, n.grouped ? kDefaultInt4Group : 0};
    for (size_t i = 1; i < parts.size(); ++i) {
      const std::string& p = parts[i];
      if (!n.grouped) fail("scheme '" + text + "': " + n.name + " takes no options");
      if (p == "sym") s.type = QType::Int4Sym;
      else if (p == "asym") s.type = QType::Int4Asym;
      else if (p.size() > 1 && p[0] == 'g' && p.find_first_not_of("0123456789", 1) == std::string::npos && p.size() < 9) {
        s.group = std::stoul(p.substr(1));
        if (s.group < 2 || s.group % 2) fail("scheme '" + text + "': group size must be even and at least 2");
      } else {
        fail("scheme '" + text + "': unknown option '" + p + "' (use gN, sym or asym)");
      }
    }
    return s;
  }
  fail("unknown quantization scheme '" + text + "' (known: f32, f16, bf16, int8, int4[:gN][:sym|:asym])");
}

}  // namespace sf
