#pragma once
// Typed reads of JSON that came from a file. nlohmann's get<integer>() on a float or an
// out-of-range number is undefined behaviour, so every integer read from an artifact goes here.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sf {

// j[key] as an integer in [lo, hi]; throws Error "what: key ..." otherwise.
int64_t json_int(const nlohmann::json& j, const char* key, const std::string& what, int64_t lo = INT64_MIN,
                 int64_t hi = INT64_MAX);
std::vector<int64_t> json_int_list(const nlohmann::json& j, const char* key, const std::string& what);

}  // namespace sf
