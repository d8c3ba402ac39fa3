#include "converters/pytorch/pytorch_reader.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>

#include "converters/pytorch/torch_checkpoint.h"
#include "core/error.h"
#include "core/fs_util.h"
#include "core/input_file.h"
#include "core/json_util.h"

namespace sf {

namespace fs = std::filesystem;
using pickle::Kind;
using pickle::Value;

namespace {

constexpr const char* kIndexName = "pytorch_model.bin.index.json";
// File names a directory source may hold its checkpoint under, in order of preference.
constexpr const char* kCheckpointNames[] = {kIndexName, "pytorch_model.bin", "consolidated.00.pth", "model.pt",
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

// True when something exists at path (a dangling symlink included): such a file is then read, and
// refused with a message when it is not a regular file, instead of being skipped without a word.
bool present(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

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

void add_tensors(TorchCheckpoint& ck, SourceModel& m, const std::set<std::string>* only) {
  const Value* sd = find_state_dict(*ck.root());
  if (!sd) fail_file(ck.path, "no state dict of tensors found in the checkpoint");
  for (const auto& [k, v] : sd->dict) {
    if (k->kind != Kind::Str || v->kind != Kind::Tensor) continue;
    if (only && !only->count(k->s)) continue;
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

json read_json(const std::string& path) { return read_json_file(path); }

std::vector<fs::path> directory_entries(const std::string& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) out.push_back(it->path());
  if (ec) fail_file(dir, "cannot list the directory: " + ec.message(), ErrorKind::IO);
  std::sort(out.begin(), out.end());
  return out;
}

// Picks the checkpoint inside a directory.
std::string checkpoint_in_dir(const std::string& dir) {
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

// The tokenizer beside the checkpoint: tokenizer.model, else the one *.model file in the directory
// (llama2.c keeps tok512.model beside stories260K.pt), else GPT-2's vocab.json with merges.txt
// (tokenizer_path is then the vocab.json). Several, or none: a warning, and no tokenizer.
void find_tokenizer(SourceModel& m, const std::string& dir) {
  // Only regular files are taken: SentencePiece would block reading a FIFO, or read a device.
  auto take = [&](const std::vector<std::string>& paths) {
    try {
      for (const auto& path : paths) InputFile check(path);
      m.tokenizer_path = paths.front();
    } catch (const Error& e) {
      m.tokenizer_warning = e.message() + "; not taken as the tokenizer";
    }
  };
  if (present(dir + "/tokenizer.model")) return take({dir + "/tokenizer.model"});
  std::vector<std::string> found;
  for (const auto& p : directory_entries(dir))
    if (std::error_code ec; p.extension() == ".model" && !fs::is_directory(p, ec)) found.push_back(p.string());
  if (found.size() == 1) return take({found[0]});
  if (found.empty() && present(dir + "/vocab.json") && present(dir + "/merges.txt"))
    return take({dir + "/vocab.json", dir + "/merges.txt"});
  if (found.empty()) {
    m.tokenizer_warning = "no tokenizer beside the checkpoint in " + dir +
                          " (tokenizer.model, one *.model file, or vocab.json with merges.txt); the artifact will "
                          "have none unless --tokenizer names one";
    return;
  }
  std::string names;
  for (const auto& f : found) names += (names.empty() ? "" : ", ") + fs::path(f).filename().string();
  m.tokenizer_warning = "several tokenizers beside the checkpoint in " + dir + " (" + names +
                        "); none was taken: name one with --tokenizer";
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
  if (path.size() >= 11 && path.compare(path.size() - 11, 11, ".index.json") == 0) return true;
  const std::string ext = fs::path(path).extension().string();
  return starts_with_zip_magic(path) || ext == ".pt" || ext == ".pth" || ext == ".bin" || ext == ".ckpt";
}

std::unique_ptr<SourceModel> pytorch_open(const std::string& path) {
  auto m = std::make_unique<SourceModel>();
  m->path = path;
  m->format = "pytorch";
  std::error_code ec;
  const std::string file = fs::is_directory(path, ec) ? checkpoint_in_dir(path) : path;
  const std::string dir = fs::path(file).parent_path().empty() ? "." : fs::path(file).parent_path().string();

  if (file.size() >= 11 && file.compare(file.size() - 11, 11, ".index.json") == 0) {
    // Hugging Face sharded checkpoint: weight_map names the shard holding each tensor.
    const json index = read_json(file);
    if (!index.contains("weight_map") || !index["weight_map"].is_object())
      fail_file(file, "index has no weight_map object");
    std::map<std::string, std::set<std::string>> by_shard;
    for (const auto& [name, shard] : index["weight_map"].items()) {
      if (!shard.is_string()) fail_file(file, "weight_map entry for " + name + " is not a file name");
      const std::string s = shard.get<std::string>();
      if (s.find('/') != std::string::npos || s.find("..") != std::string::npos)
        fail_file(file, "weight_map names a file outside the directory: " + s);
      by_shard[s].insert(name);
    }
    for (const auto& [shard, names] : by_shard) {
      const std::string shard_path = dir + "/" + shard;
      TorchCheckpoint ck = TorchCheckpoint::open(shard_path);
      const size_t before = m->tensors.size();
      add_tensors(ck, *m, &names);
      if (m->tensors.size() - before != names.size())
        fail_file(shard_path, "holds " + std::to_string(m->tensors.size() - before) + " of the " +
                                  std::to_string(names.size()) + " tensors the index assigns to it");
      m->files.push_back(shard_path);
    }
  } else {
    const std::string head = first_bytes(file, 4);
    if (head != std::string("PK\3\4", 4))
      fail_file(file, !head.empty() && uint8_t(head[0]) == 0x80
                          ? "legacy (pre-zip) torch.save format is not supported; re-save with torch >= 1.6"
                          : "not a zip archive");
    TorchCheckpoint ck = TorchCheckpoint::open(file);
    add_tensors(ck, *m, nullptr);
    m->files.push_back(file);
  }

  const bool had_args = m->config_kind == "model_args";
  if (present(dir + "/config.json")) {
    m->config = read_json(dir + "/config.json");
    m->config_kind = "hf_config";
    if (present(dir + "/params.json"))
      m->warnings.push_back(dir + "/params.json is ignored: config.json beside it states the hyper-parameters");
  } else if (present(dir + "/params.json")) {
    m->config = read_json(dir + "/params.json");
    m->config_kind = "params_json";
  }
  if (had_args && m->config_kind != "model_args")
    m->warnings.push_back(file + ": the checkpoint's own model_args are ignored: " +
                          (m->config_kind == "hf_config" ? "config.json" : "params.json") +
                          " beside it states the hyper-parameters");
  find_tokenizer(*m, dir);
  return m;
}

}  // namespace sf
