#include "converters/pytorch/pytorch_reader.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>

#include "converters/pytorch/model_parallel.h"
#include "converters/pytorch/torch_checkpoint.h"
#include "converters/shard_index.h"
#include "converters/source_dir.h"
#include "core/error.h"
#include "core/fs_util.h"
#include "core/input_file.h"
#include "core/json_util.h"

namespace sf {

namespace fs = std::filesystem;
using pickle::Kind;
using pickle::Value;

namespace {

constexpr const char* kPytorchIndexName = "pytorch_model.bin.index.json";
// File names a directory source may hold its checkpoint under, in order of preference.
constexpr const char* kCheckpointNames[] = {kPytorchIndexName, "pytorch_model.bin", "consolidated.00.pth", "model.pt",
                                            "model.pth"};
// Keys under which trainers nest the state dict, tried in order.
constexpr const char* kStateDictKeys[] = {"state_dict", "model_state_dict", "model", "module"};
// Keys under which trainers store hyper-parameters next to it.
constexpr const char* kArgsKeys[] = {"model_args", "config", "args"};
// Prefixes wrappers add to every name (torch.compile, DataParallel).
constexpr const char* kNamePrefixes[] = {"_orig_mod.", "module."};

// The first bytes of a file, read through InputFile: a FIFO, device or /proc entry is refused with
// a message naming it (fopen would block on a FIFO or read /dev/zero forever).
std::string first_bytes(const std::string& path, size_t n) {
  const InputFile f(path);
  std::string s(size_t(std::min<uint64_t>(n, f.size())), '\0');
  f.read_at(0, s.data(), s.size());
  return s;
}

bool starts_with_zip_magic(const std::string& path) { return first_bytes(path, 4) == std::string("PK\3\4", 4); }

bool has_tensor(const Value& v) {
  for (const auto& [k, x] : v.dict)
    if (x->kind == Kind::Tensor) return true;
  return false;
}

// The dict of tensors inside a checkpoint root, following the usual nesting (a few levels at most:
// a pickle can make a dict that contains itself).
const Value* find_state_dict(const Value& root, int depth = 0) {
  if (root.kind != Kind::Dict || depth > 4) return nullptr;
  if (has_tensor(root)) return &root;
  for (const char* key : kStateDictKeys)
    if (const Value* v = root.get(key); v && v->kind == Kind::Dict)
      if (const Value* inner = find_state_dict(*v, depth + 1)) return inner;
  return nullptr;
}

std::string strip_prefixes(std::string name) {
  for (bool again = true; again;) {
    again = false;
    for (const char* p : kNamePrefixes)
      if (name.rfind(p, 0) == 0) {
        name.erase(0, std::char_traits<char>::length(p));
        again = true;
      }
  }
  return name;
}

void add_tensors(TorchCheckpoint& ck, SourceModel& m) {
  const Value* sd = find_state_dict(*ck.root());
  if (!sd) fail_file(ck.path, "no state dict of tensors found in the checkpoint");
  for (const auto& [k, v] : sd->dict) {
    if (k->kind != Kind::Str || v->kind != Kind::Tensor) continue;
    const std::string name = strip_prefixes(k->s);
    LazyTensor t = ck.tensor(name, *v);
    t.check_bounds();
    if (!m.tensors.emplace(name, std::move(t)).second) fail_file(ck.path, "tensor " + name + " appears twice");
  }
  if (ck.root()->kind == Kind::Dict && m.config.is_null())
    for (const char* key : kArgsKeys)
      if (const Value* a = ck.root()->get(key); a && a->kind == Kind::Dict) {
        try {
          m.config = pickle_to_json(*a);
        } catch (const Error& e) {
          fail_file(ck.path, std::string(key) + ": " + e.message());
        }
        m.config_kind = "model_args";
        break;
      }
}

// Picks the checkpoint inside a directory.
std::string pytorch_checkpoint_in_dir(const std::string& dir) {
  for (const char* name : kCheckpointNames)
    if (present(dir + "/" + name)) return dir + "/" + name;
  std::vector<std::string> found;
  for (const auto& p : directory_entries(dir)) {
    const std::string ext = p.extension().string();
    std::error_code ec;
    if ((ext == ".pt" || ext == ".pth" || ext == ".bin") && !fs::is_directory(p, ec) && starts_with_zip_magic(p.string()))
      found.push_back(p.string());
  }
  if (found.size() == 1) return found[0];
  if (found.empty()) fail_file(dir, "directory holds no PyTorch checkpoint (*.pt, *.pth, pytorch_model.bin)");
  fail_file(dir, "directory holds several checkpoints; name one");
}

}  // namespace

bool pytorch_probe(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    for (const char* name : kCheckpointNames)
      if (present(path + "/" + name)) return true;
    for (const auto& p : directory_entries(path)) {
      const std::string ext = p.extension().string();
      if (ext == ".pt" || ext == ".pth") return true;
    }
    return false;
  }
  if (ends_with(path, ".index.json")) return true;
  const std::string ext = fs::path(path).extension().string();
  return starts_with_zip_magic(path) || ext == ".pt" || ext == ".pth" || ext == ".bin" || ext == ".ckpt";
}

namespace {

// Hugging Face sharded checkpoint: weight_map names the shard holding each tensor, and each shard
// must hold exactly the tensors the index assigns to it (converters/shard_index.h).
void open_bin_index(SourceModel& m, const std::string& file, const std::string& dir) {
  const ShardIndex index = read_shard_index(file, strip_prefixes);
  for (const auto& [shard, names] : index.names) {
    const std::string shard_path = dir + "/" + shard;
    TorchCheckpoint ck = TorchCheckpoint::open(shard_path);
    SourceModel one;
    add_tensors(ck, one);
    std::set<std::string> held;
    for (const auto& entry : one.tensors) held.insert(entry.first);
    check_shard(index, shard, shard_path, held);
    for (auto& [name, t] : one.tensors) m.tensors.emplace(name, std::move(t));
    if (m.config.is_null() && !one.config.is_null()) {  // hyper-parameters a shard carries
      m.config = std::move(one.config);
      m.config_kind = one.config_kind;
    }
    m.files.push_back(shard_path);
  }
}

// Meta model-parallel checkpoint: every consolidated.NN.pth holds one rank's slice of each tensor.
// Each file's pickle is dropped once its tensors are listed; the merged tensors read every file's
// slice when they are loaded.
std::vector<ModelParallelPart> read_model_parallel(SourceModel& m, const std::vector<std::string>& files) {
  std::vector<ModelParallelPart> parts;
  for (const auto& f : files) {
    TorchCheckpoint ck = TorchCheckpoint::open(f);
    SourceModel one;
    add_tensors(ck, one);
    if (parts.empty()) {  // hyper-parameters a rank-0 file carries, as for a single file
      m.config = std::move(one.config);
      m.config_kind = one.config_kind;
    }
    parts.push_back({f, std::move(one.tensors)});
    m.files.push_back(f);
  }
  return parts;
}

// The model's width as its hyper-parameters state it (params.json's "dim", or config.json's
// "hidden_size"), or 0 when they do not state a positive integer.
int64_t stated_width(const SourceModel& m) {
  if (!m.config.is_object()) return 0;
  for (const char* key : {"dim", "hidden_size"})
    if (const auto it = m.config.find(key); it != m.config.end() && it->is_number_integer()) {
      if (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t(INT64_MAX)) return 0;
      return std::max<int64_t>(0, it->get<int64_t>());
    }
  return 0;
}

void open_single(SourceModel& m, const std::string& file) {
  const std::string head = first_bytes(file, 4);
  if (head != std::string("PK\3\4", 4))
    fail_file(file, !head.empty() && uint8_t(head[0]) == 0x80
                        ? "legacy (pre-zip) torch.save format is not supported; re-save with torch >= 1.6"
                        : "not a zip archive");
  // One rank of a model-parallel set is not the model: the directory is.
  if (fs::path(file).filename().string().rfind("consolidated.", 0) == 0)
    if (const auto set = model_parallel_files(parent_dir(file)); !set.empty())
      fail_file(file, "is one of " + std::to_string(set.size()) + " model-parallel parts in " + parent_dir(file) +
                          "; convert the directory to merge them");
  TorchCheckpoint ck = TorchCheckpoint::open(file);
  add_tensors(ck, m);
  m.files.push_back(file);
}

}  // namespace

std::unique_ptr<SourceModel> pytorch_open(const std::string& path) {
  auto m = std::make_unique<SourceModel>();
  m->path = path;
  m->format = "pytorch";
  std::error_code ec;
  const bool is_dir = fs::is_directory(path, ec);
  const std::vector<std::string> parallel = is_dir ? model_parallel_files(path) : std::vector<std::string>{};
  const std::string file = !parallel.empty() ? parallel[0] : is_dir ? pytorch_checkpoint_in_dir(path) : path;
  const std::string dir = parent_dir(file);

  std::vector<ModelParallelPart> parts;
  if (!parallel.empty())
    parts = read_model_parallel(*m, parallel);
  else if (ends_with(file, ".index.json"))
    open_bin_index(*m, file, dir);
  else
    open_single(*m, file);
  load_source_config(*m, dir, file);
  // How the embedding was split depends on the model's width, known once params.json is read.
  if (!parallel.empty()) m->tensors = merge_model_parallel(parts, stated_width(*m));
  find_tokenizer(*m, dir);
  return m;
}

}  // namespace sf
