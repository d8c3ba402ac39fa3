#include "converters/safetensors/safetensors_reader.h"

#include <filesystem>
#include <set>

#include "converters/safetensors/safetensors_file.h"
#include "converters/shard_index.h"
#include "converters/source_dir.h"
#include "core/error.h"
#include "core/fs_util.h"

namespace sf {

namespace fs = std::filesystem;

namespace {

constexpr const char* kSafetensorsIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";
constexpr const char* kSafetensorsExtension = ".safetensors";
constexpr const char* kIndexSuffix = ".safetensors.index.json";

std::vector<std::string> safetensors_in(const std::string& dir) {
  std::vector<std::string> found;
  for (const auto& p : directory_entries(dir))
    if (std::error_code ec; p.extension() == kSafetensorsExtension && !fs::is_directory(p, ec)) found.push_back(p.string());
  return found;
}

// Picks the checkpoint inside a directory: the index, else model.safetensors, else the one
// *.safetensors file.
std::string safetensors_checkpoint_in_dir(const std::string& dir) {
  for (const char* name : {kSafetensorsIndexName, kSingleName})
    if (present(dir + "/" + name)) return dir + "/" + name;
  const auto found = safetensors_in(dir);
  if (found.size() == 1) return found[0];
  if (found.empty()) fail_file(dir, "directory holds no safetensors checkpoint");
  fail_file(dir, "directory holds several .safetensors files and no " + std::string(kSafetensorsIndexName) + "; name one");
}

// Hugging Face sharded checkpoint: weight_map names the shard holding each tensor, and each shard
// must hold exactly the tensors the index assigns to it (converters/shard_index.h).
void open_index(SourceModel& m, const std::string& file, const std::string& dir) {
  const ShardIndex index = read_shard_index(file);
  for (const auto& [shard, names] : index.names) {
    const std::string shard_path = dir + "/" + shard;
    auto tensors = read_safetensors(shard_path);
    std::set<std::string> held;
    for (const auto& entry : tensors) held.insert(entry.first);
    check_shard(index, shard, shard_path, held);
    for (auto& [name, t] : tensors) m.tensors.emplace(name, std::move(t));
    m.files.push_back(shard_path);
  }
}

}  // namespace

bool safetensors_probe(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec))
    return present(path + "/" + kSafetensorsIndexName) || present(path + "/" + kSingleName) || !safetensors_in(path).empty();
  return ends_with(path, kSafetensorsExtension) || ends_with(path, kIndexSuffix) || looks_like_safetensors(path);
}

std::unique_ptr<SourceModel> safetensors_open(const std::string& path) {
  auto m = std::make_unique<SourceModel>();
  m->path = path;
  m->format = "safetensors";
  std::error_code ec;
  const std::string file = fs::is_directory(path, ec) ? safetensors_checkpoint_in_dir(path) : path;
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
