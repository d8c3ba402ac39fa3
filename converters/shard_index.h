#pragma once
// Hugging Face sharded checkpoints: an index (model.safetensors.index.json or
// pytorch_model.bin.index.json) whose weight_map names the shard holding each tensor. Both readers
// check their shards against it here, so the two containers accept and refuse alike.
#include <map>
#include <set>
#include <string>

namespace sf {

struct ShardIndex {
  std::string path;                                    // the index file, for messages
  std::map<std::string, std::string> shard_of;         // tensor -> shard file name
  std::map<std::string, std::set<std::string>> names;  // shard file name -> the tensors assigned to it
};

// Reads the index; throws Error naming it unless weight_map is an object of plain file names in
// the index's own directory. `normalize` maps each listed tensor name to the name the reader stores
// (the PyTorch reader strips wrapper prefixes); null keeps the names.
ShardIndex read_shard_index(const std::string& path, std::string (*normalize)(std::string) = nullptr);

// Throws Error naming shard_path (one line) unless the shard holds exactly the tensors the index
// assigns to `shard`: each assigned one is there, and none it holds is unlisted or assigned to
// another shard. Every tensor a shard holds must be read: a weight left out of the index would
// otherwise be dropped, or later reported only as missing.
void check_shard(const ShardIndex& index, const std::string& shard, const std::string& shard_path,
                 const std::set<std::string>& held);

}  // namespace sf
