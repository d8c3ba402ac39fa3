#include "formats/gguf/gguf_model.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/json_util.h"
#include "core/messages.h"
#include "core/sha256.h"
#include "formats/output_dir.h"
#include "formats/temp_files.h"
#include "formats/gguf/gguf_arch.h"
#include "formats/gguf/gguf_file.h"

namespace sf {

namespace fs = std::filesystem;
using namespace gguf;

bool is_gguf_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return false;
  char magic[4] = {};
  const bool yes = ::pread(fd, magic, 4, 0) == 4 && std::memcmp(magic, kMagic, 4) == 0;
  ::close(fd);
  return yes;
}

namespace {

// Key lookups that name the file and key when a required one is missing or out of range.
struct Meta {
  const GgufFile& f;
  std::string arch;
  int64_t count(const std::string& key, std::optional<int64_t> fallback = std::nullopt) const {
    const auto v = f.get_uint(arch + "." + key);
    if (!v) {
      if (fallback) return *fallback;
      fail_file(f.path(), "lacks metadata " + arch + "." + key);
    }
    if (*v > uint64_t(ModelDesc::kMaxSize)) fail_file(f.path(), arch + "." + key + " is " + std::to_string(*v) + ", too large");
    return int64_t(*v);
  }
  double real(const std::string& key, std::optional<double> fallback = std::nullopt) const {
    const auto v = f.get_float(arch + "." + key);
    if (!v) {
      if (fallback) return *fallback;
      fail_file(f.path(), "lacks metadata " + arch + "." + key);
    }
    return *v;
  }
  bool has_tensor(const std::string& name) const { return f.tensor(name) != nullptr; }
};

const GgufTensor& require_tensor(const GgufFile& f, const std::string& name) {
  const GgufTensor* t = f.tensor(name);
  if (!t) fail_file(f.path(), "lacks tensor " + name);
  return *t;
}

// The fields a GGUF's own description must share with its llama.cpp metadata.
bool same_structure(const ModelDesc& a, const ModelDesc& b) {
  return a.family == b.family && a.vocab_size == b.vocab_size && a.d_model == b.d_model && a.n_layers == b.n_layers &&
         a.n_heads == b.n_heads && a.n_kv_heads == b.n_kv_heads && a.head_dim == b.head_dim && a.ffn_dim == b.ffn_dim &&
         a.norm == b.norm && a.norm_bias == b.norm_bias && a.ffn == b.ffn && a.positional == b.positional &&
         a.rope_dims == b.rope_dims && a.biases == b.biases && float(a.norm_eps) == float(b.norm_eps) &&
         float(a.rope_theta) == float(b.rope_theta);
}

TensorView view_of(const GgufFile& f, const GgufTensor& t, const std::string& canonical, const std::vector<int64_t>& shape,
                   uint64_t first, uint64_t length) {
  const auto type = qtype_of_ggml(t.type);
  if (!type)
    fail_file(f.path(), "tensor " + t.name + " is " + ggml_type_name(t.type) + " (ggml type " + std::to_string(t.type) +
                            "), which shardforge's executor does not run (it runs " + gguf_scheme_names() + ")",
              ErrorKind::Unsupported);
  // Rows of a matrix or elements of a vector, [first, first + length) of the GGUF tensor (the
  // caller checked first + length against it). A vector's element is one f32/f16/bf16 value.
  const uint64_t unit_bytes = shape.size() == 2 ? *ggml_row_bytes(t.type, t.ne[0]) : qtype_traits(*type).row_bytes(1, 0);
  if (shape.size() == 1 && block_elements(*type) != 1)
    fail_file(f.path(), "tensor " + t.name + " is a vector of " + ggml_type_name(t.type) + " blocks; shardforge reads vectors as floats");
  return make_view(f.path(), canonical, *type, 0, shape, t.data + first * unit_bytes, size_t(length * unit_bytes));
}

// The tokenizer files a shardforge GGUF carries (shardforge.tokenizer.*), written to a private
// temporary directory for the tokenizer readers, which read files; removed with the Artifact.
struct Extracted {
  std::shared_ptr<const GgufFile> file;
  PrivateTempFiles files{"gguf"};
};

constexpr uint64_t kMaxTokenizerFileBytes = uint64_t(64) << 20;  // the tokenizers' own limit

ArtifactTokenizer extract_tokenizer(const GgufFile& f, Extracted& x) {
  const auto kind = f.get_string("shardforge.tokenizer.kind");
  if (!kind) return {};
  const std::vector<std::string> names = f.array_strings("shardforge.tokenizer.files");
  if (names.empty() || names.size() > 4) fail_file(f.path(), "shardforge.tokenizer.files must name 1 to 4 files");
  std::vector<std::string> bytes;
  for (const auto& n : names) {
    // Plain names of tokenizer files only: nothing is written outside the private directory.
    if (!is_artifact_file_name(n) || n == "manifest.json" || n.find('/') != std::string::npos)
      fail_file(f.path(), "shardforge.tokenizer.files names '" + printable(n) + "', not a tokenizer file");
    const GgufValue* v = f.find("shardforge.tokenizer.file." + n);
    if (!v) fail_file(f.path(), "lacks shardforge.tokenizer.file." + printable(n));
    if (v->type == ValueType::Array && v->count > kMaxTokenizerFileBytes)
      fail_file(f.path(), "tokenizer file " + printable(n) + " is larger than 64 MiB");
    bytes.push_back(f.array_bytes("shardforge.tokenizer.file." + n));
  }
  ArtifactTokenizer t;
  t.kind = *kind;
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string& b = bytes[i];
    t.paths.push_back(x.files.add(names[i], b.data(), b.size()));
    t.sha256.push_back(sha256_hex(b.data(), b.size()));
  }
  return t;
}

}  // namespace

ModelDesc gguf_model_desc(const GgufFile& f) {
  const auto arch_name = f.get_string("general.architecture");
  if (!arch_name) fail_file(f.path(), "lacks general.architecture");
  const ArchEntry* arch = arch_for_name(*arch_name);
  if (!arch)
    fail_file(f.path(), "architecture '" + printable(*arch_name) + "' is not one shardforge runs (llama, gpt2, internlm2, chatglm)",
              ErrorKind::Unsupported);
  const Meta m{f, *arch_name};
  ModelDesc d;
  d.family = arch->family;
  const GgufTensor& embd = require_tensor(f, "token_embd.weight");
  if (embd.ne.size() != 2) fail_file(f.path(), "token_embd.weight is not a matrix");
  d.vocab_size = int64_t(embd.ne[1]);
  d.d_model = m.count("embedding_length");
  d.n_layers = m.count("block_count");
  d.n_heads = m.count("attention.head_count");
  d.n_kv_heads = m.count("attention.head_count_kv", d.n_heads);
  d.head_dim = m.count("attention.key_length", d.n_heads > 0 ? d.d_model / d.n_heads : 0);
  d.ffn_dim = m.count("feed_forward_length");
  d.max_seq = m.count("context_length", 0);
  d.tied_embeddings = !m.has_tensor("output.weight");
  const bool gpt2 = d.family == "gpt2";
  if (gpt2) {
    d.norm = NormKind::Layer;
    d.norm_bias = true;
    d.norm_eps = m.real("attention.layer_norm_epsilon");
    d.ffn = FfnKind::GeluTanh;
    d.positional = PositionalKind::Learned;
    d.rope_dims = 0;
    d.biases = {true, true, true};
    const GgufTensor& pos = require_tensor(f, "position_embd.weight");
    if (pos.ne.size() != 2) fail_file(f.path(), "position_embd.weight is not a matrix");
    d.max_seq = int64_t(pos.ne[1]);
  } else {
    d.norm = NormKind::RMS;
    d.norm_eps = m.real("attention.layer_norm_rms_epsilon");
    d.ffn = FfnKind::SiluGated;
    d.positional = PositionalKind::Rope;
    d.rope_dims = m.count("rope.dimension_count", d.head_dim);
    d.rope_theta = m.real("rope.freq_base", 10000.0);
    d.biases.qkv = m.has_tensor("blk.0.attn_q.bias") || m.has_tensor("blk.0.attn_qkv.bias");
    d.biases.o = m.has_tensor("blk.0.attn_output.bias");
    d.biases.ffn = m.has_tensor("blk.0.ffn_up.bias");
  }
  try {
    d.validate();
  } catch (const Error& e) {
    fail_file(f.path(), e.message());
  }
  // shardforge's own description, when present, must agree; its exact values are then taken.
  if (const auto own = f.get_string("shardforge.model")) {
    // parse_json names the file and key itself; from_json's messages name neither.
    const json j = parse_json(*own, f.path() + ": shardforge.model");
    ModelDesc s;
    try {
      s = ModelDesc::from_json(j);
    } catch (const Error& e) {
      fail_file(f.path(), "shardforge.model: " + e.message());
    }
    // GPT-2's output.weight is written even when tied: the tie is shardforge's to say.
    if (!same_structure(s, d) || (s.tied_embeddings != d.tied_embeddings && !arch->output_required))
      fail_file(f.path(), "shardforge.model disagrees with the file's llama.cpp metadata or tensors");
    // The writer puts max_seq in {arch}.context_length (2048 when unknown); GPT-2's is its
    // position table's rows. A longer max_seq than that would run past what the model was made for.
    if (s.max_seq > 0 && s.max_seq != d.max_seq && (gpt2 || f.find(*arch_name + ".context_length")))
      fail_file(f.path(), "shardforge.model's max_seq " + std::to_string(s.max_seq) + " contradicts " +
                              (gpt2 ? std::string("position_embd.weight's ") : *arch_name + ".context_length ") +
                              std::to_string(d.max_seq));
    d = s;
  }
  return d;
}

Artifact open_gguf_model(const std::string& path) {
  if (!is_gguf_file(path)) fail_file(path, "is not a GGUF file (bad magic)");
  auto keep = std::make_shared<Extracted>();
  keep->file = std::make_shared<const GgufFile>(path);
  const GgufFile& f = *keep->file;
  const ModelDesc desc = gguf_model_desc(f);
  const ArchEntry& arch = *arch_for_name(*f.get_string("general.architecture"));
  std::map<std::string, TensorView> views;
  uint64_t params = 0, bytes = 0;
  for (const auto& [kind, index] : unit_order(desc)) {
    const std::vector<TensorSpec> specs = unit_tensors(desc, kind, index);
    for (const auto& spec : specs) {
      const std::string suffix = kind == UnitKind::Block ? spec.name.substr(block_prefix(index).size()) : spec.name;
      const std::string name = gguf_tensor_name(spec.name);
      const auto part = kind == UnitKind::Block ? fused_part(arch, suffix) : std::nullopt;
      if (!part) {
        const GgufTensor& t = require_tensor(f, name);
        const std::vector<uint64_t> ne(spec.shape.rbegin(), spec.shape.rend());
        if (t.ne != ne) fail_file(path, "tensor " + t.name + " has the wrong shape for the model its metadata describes");
        views[spec.name] = view_of(f, t, spec.name, spec.shape, 0, uint64_t(spec.shape[0]));
        continue;
      }
      // Its rows start after the parts before it; the fused tensor holds exactly all parts.
      const std::string fused = "blk." + std::to_string(index) + "." + part->fused->gguf;
      const GgufTensor& t = require_tensor(f, fused);
      uint64_t first = 0, total = 0;
      for (size_t i = 0; i < part->fused->parts.size(); ++i) {
        const std::string pname = block_prefix(index) + part->fused->parts[i];
        for (const auto& s : specs)
          if (s.name == pname) {
            if (i < part->index) first += uint64_t(s.shape[0]);
            total += uint64_t(s.shape[0]);
          }
      }
      const uint64_t outer = t.ne.size() == 2 ? t.ne[1] : t.ne[0];
      if (t.ne.size() != spec.shape.size() || outer != total || (t.ne.size() == 2 && t.ne[0] != uint64_t(spec.shape[1])))
        fail_file(path, "fused tensor " + fused + " does not hold exactly its parts (" + std::to_string(total) + " rows)");
      views[spec.name] = view_of(f, t, spec.name, spec.shape, first, uint64_t(spec.shape[0]));
    }
  }
  for (const auto& t : f.tensors()) bytes += t.bytes;
  for (const auto& spec : all_tensors(desc)) {
    uint64_t n = 1;
    for (int64_t x : spec.shape) n *= uint64_t(x);
    params += n;
  }
  const std::string file_name = fs::path(path).filename().string();
  json manifest = {
      {"format", "gguf"},
      {"model", desc.to_json()},
      {"files", json::array({{{"path", file_name}, {"bytes", f.file_size()}}})},
      {"source", {{"format", "gguf"}, {"architecture", desc.family}, {"files", json::array({{{"name", file_name}}})}}},
      {"summary", {{"parameters", params}, {"tensor_bytes", bytes},
                   {"bits_per_weight", params ? 8.0 * double(bytes) / double(params) : 0.0}}},
      {"tokenizer", nullptr}};
  ArtifactTokenizer tokenizer = extract_tokenizer(f, *keep);
  if (!tokenizer.kind.empty()) {
    json files = json::array();
    for (size_t i = 0; i < tokenizer.paths.size(); ++i)
      files.push_back({{"name", fs::path(tokenizer.paths[i]).filename().string()}, {"sha256", tokenizer.sha256[i]}});
    manifest["tokenizer"] = {{"kind", tokenizer.kind}, {"files", files}};
  }
  if (const auto p = f.get_string("shardforge.pipeline")) {
    try {
      manifest["pipeline"] = parse_json(*p, path + ": shardforge.pipeline");
    } catch (const Error&) {
      manifest["pipeline"] = *p;  // shown as found; nothing executes it
    }
  }
  return Artifact(path, std::move(manifest), desc, std::move(views), keep, std::move(tokenizer), nullptr);
}

}  // namespace sf
