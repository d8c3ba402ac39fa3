#include "converters/safetensors/safetensors_reader.h"

#include <filesystem>
#include <set>

#include "converters/safetensors/safetensors_file.h"
#include "converters/source_dir.h"
#include "core/error.h"
#include "core/fs_util.h"
#include "core/json_util.h"

namespace sf {

namespace fs = std::filesystem;

namespace {

constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";
constexpr const char* kExtension = ".safetensors";
constexpr const char* kIndexSuffix = ".safetensors.index.json";

std::vector<std::string> safetensors_in(const std::string& dir) {
  std::vector<std::string> found;
  for (const auto& p : directory_entries(dir))
    if (std::error_code ec; p.extension() == kExtension && !fs::is_directory(p, ec)) found.push_back(p.string());
  return found;
}

// Picks the checkpoint inside a directory: the index, else model.safetensors, else the one
// *.safetensors file.
std::string checkpoint_in_dir(const std::string& dir) {
  for (const char* name : {kIndexName, kSingleName})
    if (present(dir + "/" + name)) return dir + "/" + name;
  const auto found = safetensors_in(dir);
  if (found.size() == 1) return found[0];
  if (found.empty()) fail_file(dir, "directory holds no safetensors checkpoint");
  fail_file(dir, "directory holds several .safetensors files and no " + std::string(kIndexName) + "; name one");
}

// A shard name from an index: a plain file name in the index's directory.
bool plain_name(const std::string& s) {
  return !s.empty() && s != "." && s.find('/') == std::string::npos && s.find("..") == std::string::npos &&
         s.find('\0') == std::string::npos;
}

// Hugging Face sharded checkpoint: weight_map names the shard holding each tensor. Each shard must
// hold every tensor the index assigns to it, and none the index assigns to another shard.
void open_index(SourceModel& m, const std::string& file, const std::string& dir) {
  const json index = read_json_file(file);
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    fail_file(file, "index has no weight_map object");
  std::map<std::string, std::string> shard_of;  // tensor -> shard
  std::map<std::string, std::set<std::string>> by_shard;
  for (const auto& [name, shard] : index["weight_map"].items()) {
    if (!shard.is_string()) fail_file(file, "weight_map entry for " + name + " is not a file name");
    const std::string s = shard.get<std::string>();
    if (!plain_name(s)) fail_file(file, "weight_map names a file outside the directory: " + s);
    shard_of[name] = s;
    by_shard[s].insert(name);
  }
  size_t unlisted = 0;
  for (const auto& [shard, names] : by_shard) {
    const std::string shard_path = dir + "/" + shard;
    auto tensors = read_safetensors(shard_path);
    for (const auto& name : names)
      if (!tensors.count(name)) fail_file(shard_path, "lacks tensor " + name + ", which " + file + " assigns to it");
    for (auto& [name, t] : tensors) {
      const auto it = shard_of.find(name);
      if (it == shard_of.end()) {
        ++unlisted;
        continue;
      }
      if (it->second != shard)
        fail_file(shard_path, "holds tensor " + name + ", which " + file + " assigns to " + it->second);
      m.tensors.emplace(name, std::move(t));
    }
    m.files.push_back(shard_path);
  }
  if (unlisted > 0)
    m.warnings.push_back(file + ": the shards hold " + std::to_string(unlisted) +
                         " tensors the index does not list; they are not read");
}

}  // namespace

bool safetensors_probe(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec))
    return present(path + "/" + kIndexName) || present(path + "/" + kSingleName) || !safetensors_in(path).empty();
  return ends_with(path, kExtension) || ends_with(path, kIndexSuffix) || looks_like_safetensors(path);
}

std::unique_ptr<SourceModel> safetensors_open(const std::string& path) {
  auto m = std::make_unique<SourceModel>();
  m->path = path;
  m->format = "safetensors";
  std::error_code ec;
  const std::string file = fs::is_directory(path, ec) ? checkpoint_in_dir(path) : path;
  const std::string dir = parent_dir(file);
  if (ends_with(file, ".index.json")) {
    open_index(*m, file, dir);
  } else {
    m->tensors = read_safetensors(file);
    m->files.push_back(file);
  }
  load_source_config(*m, dir, file);
  find_tokenizer(*m, dir);
  return m;
}

}  // namespace sf
