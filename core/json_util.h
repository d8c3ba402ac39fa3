#pragma once
// Typed reads of JSON that came from a file. nlohmann's get<integer>() on a float or an
// out-of-range number is undefined behaviour, so every integer read from an artifact goes here.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sf {

// Parses JSON read from a file. Nesting deeper than kMaxJsonDepth is refused while parsing:
// printing, comparing or copying a deeper document would recurse once per level and overflow the
// stack. Throws Error "where: invalid JSON: ..." (the message names the file, not the parser).
inline constexpr int kMaxJsonDepth = 64;
nlohmann::json parse_json(const std::string& text, const std::string& where);
// parse_json of a whole file, at most max_bytes long.
nlohmann::json read_json_file(const std::string& path, uint64_t max_bytes = uint64_t(64) << 20);

// j[key] as an integer in [lo, hi]; throws Error "what: key ..." otherwise.
int64_t json_int(const nlohmann::json& j, const char* key, const std::string& what, int64_t lo = INT64_MIN,
                 int64_t hi = INT64_MAX);
std::vector<int64_t> json_int_list(const nlohmann::json& j, const char* key, const std::string& what);

}  // namespace sf
