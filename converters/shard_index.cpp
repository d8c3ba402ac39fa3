#include "converters/shard_index.h"

#include "core/error.h"
#include "core/json_util.h"

namespace sf {

namespace {

// A shard name from an index: a plain file name in the index's directory.
bool plain_name(const std::string& s) {
  return !s.empty() && s != "." && s.find('/') == std::string::npos && s.find("..") == std::string::npos &&
         s.find('\0') == std::string::npos;
}

}  // namespace

ShardIndex read_shard_index(const std::string& path, std::string (*normalize)(std::string)) {
  const nlohmann::json index = read_json_file(path);
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    fail_file(path, "index has no weight_map object");
  ShardIndex out;
  out.path = path;
  for (const auto& [listed, shard] : index["weight_map"].items()) {
    if (!shard.is_string()) fail_file(path, "weight_map entry for " + listed + " is not a file name");
    const std::string s = shard.get<std::string>();
    if (!plain_name(s)) fail_file(path, "weight_map names a file outside the directory: " + s);
    const std::string name = normalize ? normalize(listed) : listed;
    if (!out.shard_of.emplace(name, s).second) fail_file(path, "weight_map lists tensor " + name + " twice");
    out.names[s].insert(name);
  }
  return out;
}

void check_shard(const ShardIndex& index, const std::string& shard, const std::string& shard_path,
                 const std::set<std::string>& held) {
  const auto assigned = index.names.find(shard);
  if (assigned != index.names.end())
    for (const auto& name : assigned->second)
      if (!held.count(name)) fail_file(shard_path, "lacks tensor " + name + ", which " + index.path + " assigns to it");
  for (const auto& name : held) {
    const auto it = index.shard_of.find(name);
    if (it == index.shard_of.end())
      fail_file(shard_path, "holds tensor " + name + ", which " + index.path +
                                " does not list (every tensor of a shard must be in the index)");
    if (it->second != shard)
      fail_file(shard_path, "holds tensor " + name + ", which " + index.path + " assigns to " + it->second);
  }
}

}  // namespace sf
