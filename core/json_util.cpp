#include "core/json_util.h"

#include "core/error.h"
#include "core/fs_util.h"

namespace sf {

namespace {
int64_t as_int(const nlohmann::json& v, const std::string& what, const char* key, int64_t lo, int64_t hi) {
  int64_t x;
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > uint64_t(INT64_MAX)) fail(what + ": '" + key + "' is " + std::to_string(u) + ", beyond 64-bit integers");
    x = int64_t(u);
  } else if (v.is_number_integer()) {
    x = v.get<int64_t>();
  } else {
    fail(what + ": '" + key + "' is not an integer");
  }
  if (x < lo || x > hi)
    fail(what + ": '" + key + "' is " + std::to_string(x) + ", outside [" + std::to_string(lo) + ", " +
         std::to_string(hi) + "]");
  return x;
}
}  // namespace

nlohmann::json parse_json(const std::string& text, const std::string& where) {
  const nlohmann::json::parser_callback_t limit_depth = [&](int depth, nlohmann::json::parse_event_t event,
                                                            nlohmann::json&) {
    if (depth > kMaxJsonDepth && (event == nlohmann::json::parse_event_t::object_start ||
                                  event == nlohmann::json::parse_event_t::array_start))
      fail(where + ": JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    return true;
  };
  try {
    return nlohmann::json::parse(text, limit_depth);
  } catch (const nlohmann::json::exception& e) {
    // e.what() reads "[json.exception.parse_error.101] parse error at line 1, column 2: ..."
    std::string why = e.what();
    if (const size_t p = why.find("] "); why.rfind("[json.exception", 0) == 0 && p != std::string::npos)
      why.erase(0, p + 2);
    fail(where + ": invalid JSON: " + why);
  }
}

nlohmann::json read_json_file(const std::string& path, uint64_t max_bytes) {
  return parse_json(read_file(path, max_bytes), path);
}

int64_t json_int(const nlohmann::json& j, const char* key, const std::string& what, int64_t lo, int64_t hi) {
  if (!j.is_object() || !j.contains(key)) fail(what + ": '" + key + "' is missing");
  return as_int(j[key], what, key, lo, hi);
}

std::vector<int64_t> json_int_list(const nlohmann::json& j, const char* key, const std::string& what) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_array()) fail(what + ": '" + key + "' is not a list");
  std::vector<int64_t> out;
  for (const auto& v : j[key]) out.push_back(as_int(v, what, key, INT64_MIN, INT64_MAX));
  return out;
}

}  // namespace sf
