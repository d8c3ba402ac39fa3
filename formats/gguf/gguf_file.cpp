#include "formats/gguf/gguf_file.h"

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "core/checked.h"
#include "core/error.h"
#include "core/messages.h"

namespace sf {

using namespace gguf;

namespace {

constexpr uint64_t kMaxKeyBytes = 65536;
constexpr uint64_t kMaxNameBytes = 64;  // GGML_MAX_NAME
constexpr uint32_t kMaxDims = 4;        // GGML_MAX_DIMS
constexpr uint64_t kMaxAlignment = uint64_t(1) << 20;
// ggml reads f32 rows through float*: the data must be at least that aligned; llama.cpp writes 32.
constexpr uint64_t kMinAlignment = 32;
// Entries are kept in memory several times their size in the file: real files have tens of keys
// and at most a few thousand tensors (a 70B LLaMA ~723; mixtures of experts that keep each expert
// as its own tensor a few thousand), so more is refused rather than costing seconds and gigabytes.
constexpr uint64_t kMaxKeys = uint64_t(1) << 16;
constexpr uint64_t kMaxTensors = uint64_t(1) << 16;

// ggml's block layouts (ggml-common.h): elements per block and bytes per block, by ggml_type.
struct GgmlLayout {
  uint32_t type;
  uint64_t block, bytes;
};
constexpr GgmlLayout kLayouts[] = {
    {0, 1, 4},      {1, 1, 2},      {2, 32, 18},    {3, 32, 20},    {6, 32, 22},   {7, 32, 24},
    {8, 32, 34},    {9, 32, 36},    {10, 256, 84},  {11, 256, 110}, {12, 256, 144}, {13, 256, 176},
    {14, 256, 210}, {15, 256, 292}, {24, 1, 1},     {25, 1, 2},     {26, 1, 4},    {27, 1, 8},
    {28, 1, 8},     {30, 1, 2},
};

// A cursor over the map; every read is checked against the end.
class Cursor {
 public:
  Cursor(const uint8_t* base, uint64_t size, const std::string& path) : base_(base), size_(size), path_(path) {}
  uint64_t pos() const { return pos_; }
  const uint8_t* here() const { return base_ + pos_; }
  void need(uint64_t n, const char* what) const {
    if (!range_within(pos_, n, size_)) fail_file(path_, std::string("is truncated: ") + what + " runs past the end of the file");
  }
  template <class T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, base_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  void skip(uint64_t n, const char* what) {
    need(n, what);
    pos_ += n;
  }
  std::string string(uint64_t max, const char* what) {
    const uint64_t n = read<uint64_t>(what);
    if (n > max)
      fail_file(path_, std::string(what) + " is " + std::to_string(n) + " bytes long, more than the " +
                           std::to_string(max) + " allowed");
    need(n, what);
    std::string s(reinterpret_cast<const char*>(base_ + pos_), size_t(n));
    pos_ += n;
    return s;
  }
  // A string value: skipped over (its length checked) without a copy; returns its length.
  uint64_t skip_string(const char* what) {
    const uint64_t n = read<uint64_t>(what);
    skip(n, what);
    return n;
  }

 private:
  const uint8_t* base_;
  uint64_t size_, pos_ = 0;
  const std::string& path_;
};

ValueType checked_type(uint32_t t, const std::string& path, const std::string& key) {
  if (t > uint32_t(ValueType::F64))
    fail_file(path, "metadata '" + printable(key) + "' has unknown value type " + std::to_string(t));
  return ValueType(t);
}

void read_scalar(Cursor& c, ValueType t, GgufValue& v) {
  switch (t) {
    case ValueType::U8: v.u = c.read<uint8_t>("a value"); break;
    case ValueType::Bool: v.u = c.read<uint8_t>("a value"); break;
    case ValueType::U16: v.u = c.read<uint16_t>("a value"); break;
    case ValueType::U32: v.u = c.read<uint32_t>("a value"); break;
    case ValueType::U64: v.u = c.read<uint64_t>("a value"); break;
    case ValueType::I8: v.i = c.read<int8_t>("a value"); break;
    case ValueType::I16: v.i = c.read<int16_t>("a value"); break;
    case ValueType::I32: v.i = c.read<int32_t>("a value"); break;
    case ValueType::I64: v.i = c.read<int64_t>("a value"); break;
    case ValueType::F32: v.f = c.read<float>("a value"); break;
    case ValueType::F64: v.f = c.read<double>("a value"); break;
    default: break;
  }
}

}  // namespace

std::optional<uint64_t> ggml_row_bytes(uint32_t type, uint64_t ne0, uint64_t* block_size) {
  for (const auto& l : kLayouts)
    if (l.type == type) {
      if (block_size) *block_size = l.block;
      if (ne0 % l.block != 0) return std::nullopt;
      uint64_t r;
      if (__builtin_mul_overflow(ne0 / l.block, l.bytes, &r)) return std::nullopt;
      return r;
    }
  return std::nullopt;
}

GgufFile::GgufFile(const std::string& path) : map_(std::make_shared<MappedFile>(path)) {
  Cursor c(map_->data(), map_->size(), path);
  c.need(4, "the magic");
  if (std::memcmp(c.here(), kMagic, 4) != 0) fail_file(path, "is not a GGUF file (no GGUF magic)");
  c.skip(4, "the magic");
  version_ = c.read<uint32_t>("the version");
  if (version_ != 2 && version_ != 3)
    fail_file(path, "is GGUF version " + std::to_string(version_) + "; shardforge reads versions 2 and 3");
  const uint64_t n_tensors = c.read<uint64_t>("the tensor count");
  const uint64_t n_kv = c.read<uint64_t>("the metadata count");
  // Each entry takes bytes of the file: counts larger than the file could hold are lies.
  const std::string size = std::to_string(map_->size());
  if (n_kv > map_->size() / 13)
    fail_file(path, "is truncated or damaged: it claims " + std::to_string(n_kv) + " metadata entries, more than its " +
                        size + " bytes can hold");
  if (n_kv > kMaxKeys) fail_file(path, "has " + std::to_string(n_kv) + " metadata entries, more than the " + std::to_string(kMaxKeys) + " shardforge reads");
  if (n_tensors > kMaxTensors)
    fail_file(path, "has " + std::to_string(n_tensors) + " tensors, more than the " + std::to_string(kMaxTensors) + " shardforge reads");
  if (n_tensors > map_->size() / 24)
    fail_file(path, "is truncated or damaged: it claims " + std::to_string(n_tensors) + " tensors, more than its " +
                        size + " bytes can hold");

  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = c.string(kMaxKeyBytes, "a metadata key");
    if (!kv_index_.emplace(key, kv_.size()).second) fail_file(path, "metadata key '" + printable(key) + "' appears twice");
    GgufValue v;
    v.type = checked_type(c.read<uint32_t>("a value type"), path, key);
    if (v.type == ValueType::String) {
      v.s = c.string(map_->size(), "a string value");
    } else if (v.type == ValueType::Array) {
      v.elem = checked_type(c.read<uint32_t>("an array type"), path, key);
      v.count = c.read<uint64_t>("an array length");
      v.elems = c.here();
      if (v.elem == ValueType::Array)
        fail_file(path, "metadata '" + printable(key) + "' is an array of arrays, which shardforge does not read");
      if (v.elem == ValueType::String) {
        if (v.count > map_->size() / 8) fail_file(path, "metadata '" + printable(key) + "' claims more strings than the file can hold");
        for (uint64_t i = 0; i < v.count; ++i) c.skip_string("a string in an array");
      } else {
        c.skip(checked_mul(v.count, uint64_t(scalar_size(v.elem)), path + ": metadata '" + printable(key) + "'"),
               "an array");
      }
    } else {
      read_scalar(c, v.type, v);
    }
    kv_.emplace_back(std::move(key), std::move(v));
  }
  if (const GgufValue* a = find("general.alignment")) {
    if (a->type != ValueType::U32) fail_file(path, "general.alignment is not a u32");
    if (a->u < kMinAlignment || (a->u & (a->u - 1)) != 0 || a->u > kMaxAlignment)
      fail_file(path, "general.alignment " + std::to_string(a->u) + " is not a power of two from 32 to 1 MiB "
                      "(shardforge reads tensors in place, and its kernels need their data aligned to at least 32)");
    alignment_ = a->u;
  }

  for (uint64_t t = 0; t < n_tensors; ++t) {
    GgufTensor g;
    g.name = c.string(kMaxNameBytes, "a tensor name");
    if (!tensor_index_.emplace(g.name, tensors_.size()).second)
      fail_file(path, "tensor '" + printable(g.name) + "' appears twice");
    const std::string what = path + ": tensor '" + printable(g.name) + "'";
    const uint32_t n_dims = c.read<uint32_t>("a tensor's dimension count");
    if (n_dims < 1 || n_dims > kMaxDims)
      fail(what + " has " + std::to_string(n_dims) + " dimensions (1 to 4 allowed)");
    uint64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne = c.read<uint64_t>("a tensor's dimensions");
      if (ne == 0 || ne > uint64_t(INT64_MAX)) fail(what + " has dimension " + std::to_string(ne));
      elements = checked_mul(elements, ne, what);
      g.ne.push_back(ne);
    }
    g.type = c.read<uint32_t>("a tensor's type");
    g.offset = c.read<uint64_t>("a tensor's offset");
    uint64_t block = 1;
    const auto row = ggml_row_bytes(g.type, g.ne[0], &block);
    if (!row) {
      if (block > 1 && g.ne[0] % block != 0)
        fail(what + " has rows of " + std::to_string(g.ne[0]) + " elements, not whole blocks of " + std::to_string(block));
      fail(what + " has ggml type " + std::to_string(g.type) + ", which shardforge does not know", ErrorKind::Unsupported);
    }
    g.bytes = checked_mul(*row, elements / g.ne[0], what);
    if (g.offset % alignment_ != 0) fail(what + " is at offset " + std::to_string(g.offset) + ", not aligned to " + std::to_string(alignment_));
    tensors_.push_back(std::move(g));
  }
  data_start_ = checked_add(c.pos(), alignment_ - 1, path) / alignment_ * alignment_;
  // Every tensor inside the file, and no two overlapping.
  std::vector<const GgufTensor*> by_offset;
  for (auto& g : tensors_) {
    const uint64_t at = checked_add(data_start_, g.offset, path + ": tensor '" + printable(g.name) + "' offset");
    if (!range_within(at, g.bytes, map_->size()))
      fail_file(path, "is truncated: tensor '" + printable(g.name) + "' (" + std::to_string(g.bytes) +
                          " bytes at " + std::to_string(at) + ") runs past the end of the file");
    g.data = map_->data() + at;
    by_offset.push_back(&g);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->offset - by_offset[i - 1]->offset < by_offset[i - 1]->bytes)
      fail_file(path, "tensors '" + printable(by_offset[i - 1]->name) + "' and '" +
                          printable(by_offset[i]->name) + "' overlap");
}

const GgufValue* GgufFile::find(const std::string& key) const {
  const auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const GgufTensor* GgufFile::tensor(const std::string& name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {
[[noreturn]] void wrong_type(const std::string& path, const std::string& key, const GgufValue& v, const char* want) {
  fail_file(path, "metadata " + key + " is " + value_type_name(v.type) + ", not " + want);
}
bool is_unsigned(ValueType t) {
  return t == ValueType::U8 || t == ValueType::U16 || t == ValueType::U32 || t == ValueType::U64;
}
bool is_signed(ValueType t) {
  return t == ValueType::I8 || t == ValueType::I16 || t == ValueType::I32 || t == ValueType::I64;
}
}  // namespace

std::optional<std::string> GgufFile::get_string(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != ValueType::String) wrong_type(path(), key, *v, "a string");
  return v->s;
}

std::optional<uint64_t> GgufFile::get_uint(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (is_unsigned(v->type)) return v->u;
  if (is_signed(v->type) && v->i >= 0) return uint64_t(v->i);
  wrong_type(path(), key, *v, "a non-negative integer");
}

std::optional<double> GgufFile::get_float(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != ValueType::F32 && v->type != ValueType::F64) wrong_type(path(), key, *v, "a float");
  return v->f;
}

std::optional<bool> GgufFile::get_bool(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != ValueType::Bool) wrong_type(path(), key, *v, "a bool");
  return v->u != 0;
}

std::vector<std::string> GgufFile::array_strings(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return {};
  if (v->type != ValueType::Array || v->elem != ValueType::String) wrong_type(path(), key, *v, "an array of strings");
  std::vector<std::string> out;
  const uint8_t* p = v->elems;
  for (uint64_t i = 0; i < v->count; ++i) {  // lengths were checked when the file was opened
    uint64_t n;
    std::memcpy(&n, p, 8);
    out.emplace_back(reinterpret_cast<const char*>(p + 8), size_t(n));
    p += 8 + n;
  }
  return out;
}

std::string GgufFile::array_bytes(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return {};
  if (v->type != ValueType::Array || (v->elem != ValueType::U8 && v->elem != ValueType::I8))
    wrong_type(path(), key, *v, "an array of bytes");
  return std::string(reinterpret_cast<const char*>(v->elems), size_t(v->count));
}

std::vector<double> GgufFile::array_numbers(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return {};
  if (v->type != ValueType::Array || v->elem == ValueType::String || v->elem == ValueType::Array)
    wrong_type(path(), key, *v, "an array of numbers");
  std::vector<double> out;
  const size_t sz = scalar_size(v->elem);
  for (uint64_t i = 0; i < v->count; ++i) {
    Cursor c(v->elems + i * sz, sz, path());
    GgufValue e;
    read_scalar(c, v->elem, e);
    out.push_back(is_unsigned(v->elem) || v->elem == ValueType::Bool ? double(e.u) : is_signed(v->elem) ? double(e.i) : e.f);
  }
  return out;
}

}  // namespace sf
