// The GGUF writer. Units arrive one at a time; each tensor's bytes go straight to a data file
// beside the output (OUT.partial-PID.data) at its aligned offset, so memory stays one unit. At
// finish() the header (metadata, tensor infos) is written to OUT.partial-PID, the data appended
// with copy_file_range, the file read back with the GGUF reader, and renamed into place with the
// rules of formats/output_file.h (never over anything without --force, and with it only over a GGUF file).
#include "formats/gguf/gguf_writer.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/fs_util.h"
#include "core/messages.h"
#include "formats/gguf/gguf_arch.h"
#include "formats/gguf/gguf_encode.h"
#include "formats/gguf/gguf_file.h"
#include "formats/gguf/gguf_types.h"
#include "formats/gguf/gguf_vocab.h"
#include "formats/gguf/gguf_model.h"
#include "formats/output_file.h"

namespace sf {

namespace fs = std::filesystem;
using namespace gguf;

namespace {

constexpr OutputFileKind kGgufOutput = {"GGUF", "gguf", is_gguf_file};

struct TensorInfo {
  std::string name;
  std::vector<uint64_t> ne;  // ggml order: ne[0] = columns
  GgmlType type;
  uint64_t offset, bytes;    // in the data section
};

class GgufWriter : public FormatWriter {
 public:
  GgufWriter(const OutputTarget& target, const ModelDesc& desc)
      : file_(target, kGgufOutput), desc_(desc), arch_(arch_for_family(desc.family)) {
    if (std::string why = arch_.cannot_run(desc); !why.empty())
      fail("--format gguf: this " + desc.family + " model has " + why, ErrorKind::Unsupported);
    data_path_ = file_.side_path(".data");
    data_fd_ = ::open(data_path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (data_fd_ < 0) fail_file(data_path_, "cannot create: " + std::string(std::strerror(errno)));
  }

  ~GgufWriter() override {
    if (data_fd_ >= 0) ::close(data_fd_);
    if (out_fd_ >= 0) ::close(out_fd_);
  }

  std::vector<QType> storable_types() const override { return gguf_storable_types(); }
  bool whole_blocks_only() const override { return true; }
  const char* format_name() const override { return "gguf"; }

  // Each fused GGUF tensor has one type: a group planned with mixed types (an override on q
  // alone) is refused now, naming every part, instead of when its block is written.
  void check_plan(const std::map<std::string, QType>& types) override {
    for (int64_t b = 0; b < desc_.n_layers; ++b) {
      const std::string prefix = block_prefix(b);
      for (const auto& f : arch_.fused) {
        std::vector<std::pair<std::string, QType>> parts;
        for (const char* part : f.parts)
          if (const auto it = types.find(prefix + part); it != types.end()) parts.emplace_back(it->first, it->second);
        bool mixed = false;
        for (const auto& p : parts) mixed |= p.second != parts[0].second;
        if (!mixed) continue;
        std::string list;
        for (size_t i = 0; i < parts.size(); ++i)
          list += std::string(i == 0 ? "" : i + 1 == parts.size() ? " and " : ", ") + parts[i].first + " (" +
                  qtype_traits(parts[i].second).name + ")";
        fail("--format gguf: " + std::string(arch_.arch) + "'s blk." + std::to_string(b) + "." + f.gguf + " fuses " +
                 list + ", which must then have one type; give them the same --tensor-quant",
             ErrorKind::Usage);
      }
    }
  }

  void write_unit(const EncodedUnit& u) override {
    std::vector<bool> done(u.tensors.size(), false);
    if (u.kind == UnitKind::Block) write_fused(u, done);
    for (size_t i = 0; i < u.tensors.size(); ++i) {
      if (done[i]) continue;
      const EncodedTensor& t = u.tensors[i];
      const std::string name = gguf_tensor_name(t.name);
      append(name, t.shape, t.type, {&t});
      if (t.name == "embed.weight") embed_ = infos_.back();
    }
    if (u.kind == UnitKind::Head && desc_.tied_embeddings && arch_.output_required) {
      // llama.cpp's graph reads output.weight: the embedding's bytes again.
      const uint64_t off = next_offset();
      copy_range(data_fd_, embed_.offset, data_fd_, off, embed_.bytes, data_path_);
      infos_.push_back({"output.weight", embed_.ne, embed_.type, off, embed_.bytes});
      data_end_ = off + embed_.bytes;
    }
  }

  void add_file(const std::string& name, const std::string& src_path) override { tokenizer_files_[name] = src_path; }
  void add_bytes(const std::string& name, const std::string&) override {
    fail("--format gguf cannot carry " + name + " (a trimmed vocabulary's map): GGUF has no place for it; "
         "convert without --trim-vocab", ErrorKind::Unsupported);
  }

  json finish(json manifest) override {
    const std::vector<uint8_t> header = build_header(manifest);
    const uint64_t data_start = align_up(header.size(), kAlignment);
    const std::string& tmp = file_.temp_path();
    out_fd_ = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out_fd_ < 0) fail_file(tmp, "cannot create: " + std::string(std::strerror(errno)));
    write_at(out_fd_, header.data(), header.size(), 0, tmp);
    const std::vector<uint8_t> pad(size_t(data_start - header.size()), 0);
    write_at(out_fd_, pad.data(), pad.size(), header.size(), tmp);
    copy_range(data_fd_, 0, out_fd_, data_start, data_end_, tmp);
    ::close(out_fd_), out_fd_ = -1;
    ::close(data_fd_), data_fd_ = -1, ::unlink(data_path_.c_str());
    file_.commit([&](const std::string& written) {
      const GgufFile back(written);
      if (back.tensors().size() != infos_.size()) fail_file(written, "tensor count differs after writing");
    });
    const uint64_t total = data_start + data_end_;
    manifest["format"] = "gguf";
    manifest["files"] = json::array({{{"path", fs::path(file_.path()).filename().string()}, {"bytes", total}}});
    manifest["summary"] = {{"parameters", params_}, {"tensor_bytes", tensor_bytes_},
                           {"bits_per_weight", params_ ? 8.0 * double(tensor_bytes_) / double(params_) : 0.0}};
    return manifest;
  }

 private:
  uint64_t next_offset() const { return align_up(data_end_, kAlignment); }

  // Writes rows of `parts` (same type and width) one after another as one GGUF tensor.
  void append(const std::string& name, std::vector<int64_t> shape, QType type,
              const std::vector<const EncodedTensor*>& parts) {
    const auto ggml = ggml_type_of(type);
    if (!ggml)
      fail("--format gguf cannot store " + std::string(qtype_traits(type).name) + " (tensor " + parts[0]->name +
               "); it takes " + gguf_scheme_names(), ErrorKind::Usage);
    const size_t block = block_elements(type);
    if (block > 1 && shape.back() % int64_t(block) != 0)
      fail("--format gguf: tensor " + parts[0]->name + " has rows of " + std::to_string(shape.back()) + ", not whole " +
           qtype_traits(type).name + " blocks of " + std::to_string(block));
    uint64_t off = next_offset(), bytes = 0;
    const uint64_t start = off;
    for (const EncodedTensor* p : parts) {
      write_at(data_fd_, p->data.data(), p->data.size(), off, data_path_);
      off += p->data.size(), bytes += p->data.size();
      params_ += p->rows() * p->cols();
    }
    tensor_bytes_ += bytes;
    std::vector<uint64_t> ne;
    for (auto it = shape.rbegin(); it != shape.rend(); ++it) ne.push_back(uint64_t(*it));
    infos_.push_back({name, ne, *ggml, start, bytes});
    data_end_ = start + bytes;
  }

  // The architecture's fused tensors of this block: all parts present (same type and width), or none.
  // check_plan refuses mixed types before any unit; the type check here is the backstop.
  void write_fused(const EncodedUnit& u, std::vector<bool>& done) {
    const std::string prefix = block_prefix(u.index);
    for (const auto& f : arch_.fused) {
      std::vector<const EncodedTensor*> parts;
      for (const char* part : f.parts)
        for (size_t i = 0; i < u.tensors.size(); ++i)
          if (u.tensors[i].name == prefix + part) parts.push_back(&u.tensors[i]), done[i] = true;
      if (parts.empty()) continue;
      if (parts.size() != f.parts.size()) fail("--format gguf: " + prefix + f.gguf + " lacks some of its parts");
      const bool matrix = parts[0]->shape.size() == 2;
      int64_t length = 0;  // rows of a matrix, elements of a vector
      for (const EncodedTensor* p : parts) {
        if (p->type != parts[0]->type || p->shape.size() != parts[0]->shape.size() ||
            (matrix && p->cols() != parts[0]->cols()))
          fail("--format gguf: " + std::string(arch_.arch) + "'s " + f.gguf + " fuses " + parts[0]->name + " and " +
                   p->name + ", which must then have one type and width (" + qtype_traits(parts[0]->type).name +
                   " vs " + qtype_traits(p->type).name + "; check --tensor-quant)", ErrorKind::Usage);
        length += matrix ? p->rows() : p->cols();
      }
      const std::vector<int64_t> shape = matrix ? std::vector<int64_t>{length, parts[0]->cols()}
                                                : std::vector<int64_t>{length};
      append("blk." + std::to_string(u.index) + "." + f.gguf, shape, parts[0]->type, parts);
    }
  }

  std::vector<uint8_t> build_header(const json& manifest) {
    Encoder kv;
    const std::string a = arch_.arch;
    kv.kv_str("general.architecture", a);
    kv.kv_str("general.name", fs::path(file_.path()).stem().string());
    kv.kv_u32("general.alignment", kAlignment);
    kv.kv_u32("general.file_type", file_type());
    kv.kv_u32("general.quantization_version", 2);
    const ModelDesc& m = desc_;
    kv.kv_u32(a + ".context_length", uint32_t(m.max_seq > 0 ? m.max_seq : 2048));
    kv.kv_u32(a + ".vocab_size", uint32_t(m.vocab_size));  // llama.cpp's row count when there is no tokenizer
    kv.kv_u32(a + ".embedding_length", uint32_t(m.d_model));
    kv.kv_u32(a + ".block_count", uint32_t(m.n_layers));
    kv.kv_u32(a + ".feed_forward_length", uint32_t(m.ffn_dim));
    kv.kv_u32(a + ".attention.head_count", uint32_t(m.n_heads));
    kv.kv_u32(a + ".attention.head_count_kv", uint32_t(m.n_kv_heads));
    kv.kv_u32(a + ".attention.key_length", uint32_t(m.head_dim));
    kv.kv_u32(a + ".attention.value_length", uint32_t(m.head_dim));
    kv.kv_f32(a + (m.norm == NormKind::RMS ? ".attention.layer_norm_rms_epsilon" : ".attention.layer_norm_epsilon"),
              float(m.norm_eps));
    if (m.positional == PositionalKind::Rope) {
      kv.kv_u32(a + ".rope.dimension_count", uint32_t(m.rope_dims));
      kv.kv_f32(a + ".rope.freq_base", float(m.rope_theta));
    }
    add_tokenizer(kv);
    add_tokenizer_files(kv, manifest);
    // shardforge's own description, exact (the f32 keys above round norm_eps): the reader checks it
    // against the llama.cpp keys and takes its precise values.
    kv.kv_str("shardforge.model", m.to_json().dump());
    if (manifest.contains("pipeline")) kv.kv_str("shardforge.pipeline", manifest["pipeline"].dump());

    Encoder h;
    h.raw(uint32_t(0x46554747));  // "GGUF"
    h.raw(kVersion);
    h.raw<uint64_t>(infos_.size());
    h.raw<uint64_t>(kv.kv_count());
    h.bytes().insert(h.bytes().end(), kv.bytes().begin(), kv.bytes().end());
    for (const auto& t : infos_) {
      h.str(t.name);
      h.raw<uint32_t>(uint32_t(t.ne.size()));
      for (uint64_t d : t.ne) h.raw(d);
      h.raw<uint32_t>(uint32_t(t.type));
      h.raw(t.offset);
    }
    return std::move(h.bytes());
  }

  // llama.cpp's file type names the linear weights' type (the first block's q projection).
  uint32_t file_type() const {
    for (const auto& t : infos_)
      if (t.name == "blk.0.attn_q.weight" || t.name == "blk.0.attn_qkv.weight") {
        const auto q = qtype_of_ggml(uint32_t(t.type));
        return q ? gguf::file_type_of(*q) : 0;
      }
    return 0;
  }

  void add_tokenizer(Encoder& kv) {
    Vocab v;
    if (tokenizer_files_.count("tokenizer.model")) {
      v = read_sentencepiece_vocab(tokenizer_files_["tokenizer.model"]);
    } else if (tokenizer_files_.count("vocab.json") && tokenizer_files_.count("merges.txt")) {
      v = read_gpt2_vocab(tokenizer_files_["vocab.json"], tokenizer_files_["merges.txt"]);
    } else {
      kv.kv_str("tokenizer.ggml.model", "none");  // llama.cpp: no vocabulary; prompts as ids
      return;
    }
    if (int64_t(v.tokens.size()) > desc_.vocab_size)
      fail("--format gguf: the tokenizer has " + std::to_string(v.tokens.size()) + " pieces but the model " +
           std::to_string(desc_.vocab_size) + " embeddings");
    pad_vocab(v, desc_.vocab_size);
    kv.kv_str("tokenizer.ggml.model", v.model);
    if (!v.pre.empty()) kv.kv_str("tokenizer.ggml.pre", v.pre);
    kv.kv_strs("tokenizer.ggml.tokens", v.tokens);
    if (!v.scores.empty()) kv.kv_array("tokenizer.ggml.scores", ValueType::F32, v.scores);
    kv.kv_array("tokenizer.ggml.token_type", ValueType::I32, v.types);
    if (!v.merges.empty()) kv.kv_strs("tokenizer.ggml.merges", v.merges);
    const std::pair<const char*, int64_t> ids[] = {{"tokenizer.ggml.bos_token_id", v.bos},
                                                   {"tokenizer.ggml.eos_token_id", v.eos},
                                                   {"tokenizer.ggml.unknown_token_id", v.unk},
                                                   {"tokenizer.ggml.padding_token_id", v.pad}};
    for (const auto& [key, id] : ids)
      if (id >= 0) kv.kv_u32(key, uint32_t(id));
    kv.kv_bool("tokenizer.ggml.add_bos_token", v.add_bos);
    kv.kv_bool("tokenizer.ggml.add_eos_token", false);
    if (v.model == "llama") kv.kv_bool("tokenizer.ggml.add_space_prefix", v.add_space_prefix);
  }

  // The tokenizer's own files, byte for byte, under shardforge.tokenizer.*: shardforge's tokenizers
  // read those files (llama.cpp reads tokenizer.ggml.*), so run -p and eval work on the GGUF alone.
  void add_tokenizer_files(Encoder& kv, const json& manifest) {
    const json t = manifest.value("tokenizer", json());
    if (!t.is_object() || !t.contains("kind") || !t.contains("files")) return;
    std::vector<std::string> names;
    for (const auto& f : t["files"]) names.push_back(f.at("name").get<std::string>());
    for (const auto& n : names)
      if (!tokenizer_files_.count(n)) return;  // not the files this writer was given
    kv.kv_str("shardforge.tokenizer.kind", t["kind"].get<std::string>());
    kv.kv_strs("shardforge.tokenizer.files", names);
    for (const auto& n : names) {
      const std::string bytes = read_file(tokenizer_files_[n], uint64_t(64) << 20);
      kv.kv_bytes("shardforge.tokenizer.file." + n, bytes);
    }
  }

  OutputFile file_;
  std::string data_path_;
  ModelDesc desc_;
  const ArchEntry& arch_;
  int data_fd_ = -1, out_fd_ = -1;
  uint64_t data_end_ = 0, tensor_bytes_ = 0;
  int64_t params_ = 0;
  std::vector<TensorInfo> infos_;
  TensorInfo embed_{};
  std::map<std::string, std::string> tokenizer_files_;
};

}  // namespace

std::unique_ptr<FormatWriter> make_gguf_writer(const OutputTarget& target, const ModelDesc& desc) {
  return std::make_unique<GgufWriter>(target, desc);
}

}  // namespace sf
