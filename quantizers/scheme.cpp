#include "quantizers/scheme.h"

#include <array>
#include <vector>

#include "core/error.h"

namespace sf {

namespace {
struct SchemeName {
  const char* name;
  QType type;      // for int4, the symmetric variant; ":asym" selects the other
  bool grouped;
};
constexpr std::array<SchemeName, 7> kNames = {{
    {"f32", QType::F32, false},
    {"f16", QType::F16, false},
    {"bf16", QType::BF16, false},
    {"int8", QType::Int8, false},
    {"int4", QType::Int4Sym, true},
    {"q8_0", QType::Q8_0, false},  // ggml's blocks of 32
    {"q4_0", QType::Q4_0, false},
}};

// "int4:g32:sym" -> {"int4", "g32", "sym"}; empty parts are kept ("int4:" has two parts).
std::vector<std::string> split_colons(const std::string& text) {
  std::vector<std::string> parts(1);
  for (char c : text) {
    if (c == ':') parts.emplace_back();
    else parts.back() += c;
  }
  return parts;
}

bool is_group_option(const std::string& p) {
  return p.size() > 1 && p[0] == 'g' && p.find_first_not_of("0123456789", 1) == std::string::npos;
}

// Parses the options after "int4": at most one group size and at most one of sym/asym, so
// "int4:sym:asym" or "int4:g32:g64" is refused rather than the last one silently winning.
void parse_int4_options(const std::string& text, const std::vector<std::string>& parts, Scheme& s) {
  bool have_group = false, have_kind = false;
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    if (p.empty()) fail_usage("scheme '" + text + "': empty option after ':'");
    if (p == "sym" || p == "asym") {
      if (have_kind) fail_usage("scheme '" + text + "': give sym or asym once");
      have_kind = true;
      s.type = p == "sym" ? QType::Int4Sym : QType::Int4Asym;
    } else if (is_group_option(p)) {
      if (have_group) fail_usage("scheme '" + text + "': give one group size");
      have_group = true;
      const std::string digits = p.substr(1);
      if (digits.size() > 7 || std::stoul(digits) < 2 || std::stoul(digits) % 2)
        fail_usage("scheme '" + text + "': group size must be even, from 2 to 9999998");
      s.group = std::stoul(digits);
    } else {
      fail_usage("scheme '" + text + "': unknown option '" + p + "' (use gN, sym or asym)");
    }
  }
}
}  // namespace

std::string Scheme::name() const {
  switch (type) {
    case QType::Int4Sym: return "int4:g" + std::to_string(group) + ":sym";
    case QType::Int4Asym: return "int4:g" + std::to_string(group) + ":asym";
    default: return qtype_traits(type).name;
  }
}

Scheme parse_scheme(const std::string& text) {
  if (text.empty()) fail_usage("empty quantization scheme (known: f32, f16, bf16, int8, int4[:gN][:sym|:asym], q8_0, q4_0)");
  const std::vector<std::string> parts = split_colons(text);
  for (const auto& n : kNames) {
    if (parts[0] != n.name) continue;
    Scheme s{n.type, n.grouped ? kDefaultInt4Group : 0};
    if (!n.grouped && parts.size() > 1) fail_usage("scheme '" + text + "': " + n.name + " takes no options");
    if (n.grouped) parse_int4_options(text, parts, s);
    return s;
  }
  fail_usage("unknown quantization scheme '" + text + "' (known: f32, f16, bf16, int8, int4[:gN][:sym|:asym], q8_0, q4_0)");
}

}  // namespace sf
