// The GGUF writer. Units arrive one at a time; each tensor's bytes go straight to a data file
// beside the output (OUT.partial-PID.data) at its aligned offset, so memory stays one unit. At
// finish() the header (metadata, tensor infos) is written to OUT.partial-PID, the data appended
// with copy_file_range, the file read back with the GGUF reader, and renamed into place with the
// artifact writer's rules (never over anything without --force, and with it only over a GGUF file).
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
#include "formats/output_dir.h"

namespace sf {

namespace fs = std::filesystem;
using namespace gguf;

namespace {

struct TensorInfo {
  std::string name;
  std::vector<uint64_t> ne;  // ggml order: ne[0] = columns
  GgmlType type;
  uint64_t offset, bytes;    // in the data section
};

std::string errno_text() { return std::strerror(errno); }

// Empty when `path` (which exists) may be replaced by --force: a regular file, not a symbolic
// link, with no other hard links, that starts with GGUF's magic. Otherwise why not.
std::string why_not_replaceable_gguf(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return "cannot be examined: " + errno_text();
  if (S_ISLNK(st.st_mode)) return "is a symbolic link; --force replaces only a GGUF file";
  if (!S_ISREG(st.st_mode)) return "is not a regular file; --force replaces only a GGUF file";
  if (st.st_nlink > 1) return "has other hard links; not replacing it";
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  char magic[4] = {};
  const bool ok = fd >= 0 && ::pread(fd, magic, 4, 0) == 4 && std::memcmp(magic, kMagic, 4) == 0;
  if (fd >= 0) ::close(fd);
  return ok ? "" : "is not a GGUF file; --force replaces only a GGUF file";
}

// Whether process `pid` runs shardforge: a live PID alone may have been reused by any program
// since the conversion that left the file stopped. Its command name (/proc/PID/comm) is the
// executable's file name; unreadable (no /proc) counts as shardforge, the careful answer.
bool is_shardforge(pid_t pid) {
  const int fd = ::open(("/proc/" + std::to_string(pid) + "/comm").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno != ENOENT;
  char buf[32] = {};
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return true;
  std::string comm(buf, size_t(n));
  if (!comm.empty() && comm.back() == '\n') comm.pop_back();
  return comm.rfind("shardforge", 0) == 0;
}

// OUT.partial-PID and OUT.partial-PID.data siblings: another conversion's while PID lives (refused,
// as for artifact directories), a killed one's otherwise (reported and left: a regular file of that
// name could be anyone's).
void check_partial_siblings(const std::string& out) {
  const fs::path p(out);
  const std::string dir = p.parent_path().empty() ? "." : p.parent_path().string();
  const std::string base = p.filename().string() + ".partial-";
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    if (name.compare(0, base.size(), base) != 0) continue;
    std::string pid = name.substr(base.size());
    if (pid.size() > 5 && pid.compare(pid.size() - 5, 5, ".data") == 0) pid.resize(pid.size() - 5);
    if (pid.empty() || pid.size() > 9 || pid.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t id = pid_t(std::stol(pid));
    if (id == ::getpid()) continue;
    if ((::kill(id, 0) == 0 || errno == EPERM) && is_shardforge(id))
      fail_file(e.path().string(), "process " + pid + " is writing " + out + " (another conversion?); not starting a "
                                   "second one (if no conversion is running, remove this file)");
    warn(e.path().string() + " was left by a conversion that stopped (process " + pid +
         " is gone or is not shardforge); left in place");
  }
}

// The rename is durable once the directory holding OUT is synced.
void sync_parent(const std::string& out) {
  const std::string dir = fs::path(out).parent_path().empty() ? "." : fs::path(out).parent_path().string();
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

void write_at(int fd, const uint8_t* p, size_t n, uint64_t off, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::pwrite(fd, p, n, off_t(off));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail_file(path, "write failed: " + errno_text() + " (disk full?)");
    p += w, n -= size_t(w), off += uint64_t(w);
  }
}

// Copies n bytes from in at in_off to out at out_off (copy_file_range; read/write where the file
// system cannot).
void copy_range(int in, uint64_t in_off, int out, uint64_t out_off, uint64_t n, const std::string& path) {
  while (n > 0) {
    loff_t a = loff_t(in_off), b = loff_t(out_off);
    const ssize_t c = ::copy_file_range(in, &a, out, &b, size_t(std::min<uint64_t>(n, 1u << 30)), 0);
    if (c < 0 && errno == EINTR) continue;
    if (c > 0) {
      in_off += uint64_t(c), out_off += uint64_t(c), n -= uint64_t(c);
      continue;
    }
    if (c == 0) fail_file(path, "the temporary data file ended early");
    if (errno != EXDEV && errno != ENOSYS && errno != EINVAL && errno != EOPNOTSUPP)
      fail_file(path, "write failed: " + errno_text() + " (disk full?)");
    std::vector<uint8_t> buf(size_t(std::min<uint64_t>(n, 1u << 20)));
    while (n > 0) {
      const size_t k = size_t(std::min<uint64_t>(n, buf.size()));
      const ssize_t r = ::pread(in, buf.data(), k, off_t(in_off));
      if (r <= 0) fail_file(path, "cannot read back the temporary data file: " + errno_text());
      write_at(out, buf.data(), size_t(r), out_off, path);
      in_off += uint64_t(r), out_off += uint64_t(r), n -= uint64_t(r);
    }
  }
}

class GgufWriter : public FormatWriter {
 public:
  GgufWriter(const OutputTarget& target, const ModelDesc& desc)
      : out_(target.dir), force_(target.force), desc_(desc), arch_(arch_for_family(desc.family)) {
    if (std::string why = arch_.cannot_run(desc); !why.empty())
      fail("--format gguf: this " + desc.family + " model has " + why, ErrorKind::Unsupported);
    refuse_output_holding_inputs(out_, target.inputs);
    // -o dir/ (or an existing directory) would only fail after converting: refused before anything
    // is created.
    struct stat st {};
    const std::string leaf = fs::path(out_).filename().string();
    if (leaf.empty() || leaf == "." || leaf == ".." || (::stat(out_.c_str(), &st) == 0 && S_ISDIR(st.st_mode)))
      fail_usage(out_ + ": -o names a directory; with --format gguf give the .gguf file name");
    if (::lstat(out_.c_str(), &st) == 0) {
      if (!force_) fail_file(out_, "already exists (use --force to replace a GGUF file)");
      if (std::string why = why_not_replaceable_gguf(out_); !why.empty()) fail_file(out_, why);
    }
    const std::string parent = fs::path(out_).parent_path().string();
    std::error_code ec;
    if (!parent.empty()) fs::create_directories(parent, ec);
    if (ec) fail_file(parent, "cannot create directory: " + ec.message());
    check_partial_siblings(out_);
    tmp_ = out_ + ".partial-" + std::to_string(::getpid());
    data_path_ = tmp_ + ".data";
    data_fd_ = ::open(data_path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (data_fd_ < 0) fail_file(data_path_, "cannot create: " + errno_text());
  }

  ~GgufWriter() override {
    if (data_fd_ >= 0) ::close(data_fd_), ::unlink(data_path_.c_str());
    if (out_fd_ >= 0) ::close(out_fd_);
    if (made_tmp_ && !committed_) ::unlink(tmp_.c_str());
  }

  std::vector<QType> storable_types() const override {
    return {QType::F32, QType::F16, QType::BF16, QType::Q8_0, QType::Q4_0};
  }
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
    out_fd_ = ::open(tmp_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out_fd_ < 0) fail_file(tmp_, "cannot create: " + errno_text());
    made_tmp_ = true;
    write_at(out_fd_, header.data(), header.size(), 0, tmp_);
    const std::vector<uint8_t> pad(size_t(data_start - header.size()), 0);
    write_at(out_fd_, pad.data(), pad.size(), header.size(), tmp_);
    copy_range(data_fd_, 0, out_fd_, data_start, data_end_, tmp_);
    if (::fsync(out_fd_) != 0) fail_file(tmp_, "write failed: " + errno_text() + " (disk full?)");
    ::close(out_fd_), out_fd_ = -1;
    ::close(data_fd_), data_fd_ = -1, ::unlink(data_path_.c_str());
    // Read back what was written, so convert never puts in place a file its own reader refuses.
    try {
      const GgufFile back(tmp_);
      if (back.tensors().size() != infos_.size()) fail_file(tmp_, "tensor count differs after writing");
    } catch (const Error& e) {
      fail_file(out_, std::string("the GGUF written does not read back, so it was not put in place: ") + e.message());
    }
    put_in_place();
    sync_parent(out_);
    const uint64_t total = data_start + data_end_;
    manifest["format"] = "gguf";
    manifest["files"] = json::array({{{"path", fs::path(out_).filename().string()}, {"bytes", total}}});
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
    kv.kv_str("general.name", fs::path(out_).stem().string());
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

  void put_in_place() {
    int err = rename_no_replace(tmp_, out_);
    if (err == 0) {
      committed_ = true;
      return;
    }
    if (err != EEXIST) fail_file(out_, "cannot rename the new GGUF into place: " + std::string(std::strerror(err)));
    if (!force_) fail_file(out_, "appeared while converting (another conversion?); left untouched, the new file is discarded");
    if (std::string why = why_not_replaceable_gguf(out_); !why.empty()) fail_file(out_, why);
    err = rename_exchange(tmp_, out_);
    if (err != 0) fail_file(out_, "cannot exchange the new GGUF with the old one: " + std::string(std::strerror(err)));
    committed_ = true;
    // The old file is now at tmp_: delete it only if it still is a GGUF file.
    if (why_not_replaceable_gguf(tmp_).empty()) ::unlink(tmp_.c_str());
    else warn(tmp_ + ": the replaced file changed meanwhile; left in place");
  }

  std::string out_, tmp_, data_path_;
  bool force_;
  ModelDesc desc_;
  const ArchEntry& arch_;
  int data_fd_ = -1, out_fd_ = -1;
  bool made_tmp_ = false, committed_ = false;
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
