#include "converters/safetensors/safetensors_file.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <optional>

#include "core/checked.h"
#include "core/error.h"
#include "core/input_file.h"
#include "core/json_util.h"
#include "core/mapped_file.h"

namespace sf {

namespace {

constexpr size_t kMaxSafetensorsDims = 64;

// The safetensors dtype names shardforge reads; others (the F8 formats, unsigned 16-64 bit,
// complex) are refused by name.
struct SafetensorsDType {
  const char* name;
  DType type;
};
constexpr SafetensorsDType kSafetensorsDTypes[] = {
    {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16}, {"F64", DType::F64}, {"I64", DType::I64},
    {"I32", DType::I32}, {"I16", DType::I16}, {"I8", DType::I8},     {"U8", DType::U8},   {"BOOL", DType::Bool},
};

std::optional<DType> dtype_from_name(const std::string& s) {
  for (const auto& d : kSafetensorsDTypes)
    if (s == d.name) return d.type;
  return std::nullopt;
}

uint64_t read_u64le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::string offsets_string(uint64_t begin, uint64_t end) {
  std::string s = "[";
  s += std::to_string(begin);
  s += ", ";
  s += std::to_string(end);
  return s + "]";
}

// A non-negative integer from the header, or an Error saying what it is instead.
uint64_t non_negative(const json& v, const std::string& what) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer()) fail(what + " is negative (" + std::to_string(v.get<int64_t>()) + ")");
  fail(what + " is not an integer");
}

SafetensorsEntry parse_entry(const std::string& name, const json& v, uint64_t data_start, uint64_t data_size,
                             const std::string& path) {
  const std::string where = path + ": tensor " + name;
  if (!v.is_object()) fail(where + ": header entry is not an object");
  SafetensorsEntry e;
  e.name = name;
  if (!v.contains("dtype") || !v["dtype"].is_string()) fail(where + ": dtype is missing or not a string");
  const std::string dt = v["dtype"].get<std::string>();
  const auto type = dtype_from_name(dt);
  if (!type) fail(where + ": dtype " + dt + " is not one shardforge reads", ErrorKind::Unsupported);
  e.dtype = *type;
  if (!v.contains("shape") || !v["shape"].is_array()) fail(where + ": shape is missing or not a list");
  if (v["shape"].size() > kMaxSafetensorsDims) fail(where + ": shape has more than " + std::to_string(kMaxSafetensorsDims) + " dimensions");
  uint64_t numel = 1;
  for (const auto& d : v["shape"]) {
    const uint64_t x = non_negative(d, where + ": a dimension of shape");
    if (x > uint64_t(INT64_MAX)) fail(where + ": dimension " + std::to_string(x) + " is past 64-bit integers");
    e.shape.push_back(int64_t(x));
    numel = checked_mul(numel, x, where + " " + shape_string(e.shape));
  }
  const uint64_t bytes = checked_mul(numel, dtype_size(e.dtype), where + " " + shape_string(e.shape));
  if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2)
    fail(where + ": data_offsets is missing or not a [begin, end] pair");
  const uint64_t begin = non_negative(v["data_offsets"][0], where + ": data_offsets begin");
  const uint64_t end = non_negative(v["data_offsets"][1], where + ": data_offsets end");
  const std::string range = offsets_string(begin, end);
  if (begin > end) fail(where + ": data_offsets " + range + " end before they begin");
  if (end > data_size)
    fail(where + ": data_offsets " + range + " lie past the end of the data (" + std::to_string(data_size) + " bytes)");
  if (end - begin != bytes)
    fail(where + ": " + dt + " x " + shape_string(e.shape) + " is " + std::to_string(bytes) +
         " bytes but data_offsets " + range + " hold " + std::to_string(end - begin));
  e.begin = data_start + begin;  // data_start + end <= size: no overflow
  e.end = data_start + end;
  return e;
}

// Bytes [begin, begin + size) of a mapped file. Reads copy from the map and then give the copied
// pages back (MADV_DONTNEED on a private read-only map only drops them from this process; the
// next read faults them in from the page cache again), so the source never counts toward the
// resident set beyond the chunk being read.
class MappedRange : public Storage {
 public:
  MappedRange(std::shared_ptr<MappedFile> map, uint64_t begin, uint64_t size)
      : map_(std::move(map)), begin_(begin), size_(size) {}
  uint64_t size() const override { return size_; }
  void read(uint64_t offset, void* dst, size_t n) override {
    if (!range_within(offset, n, size_)) fail(map_->path() + ": read outside the tensor's data");
    if (n == 0) return;
    // A slice at a time, each given back once copied: at most one slice of the map is resident.
    const uint8_t* src = map_->data() + begin_ + offset;
    for (size_t done = 0; done < n; done += kSliceBytes) {
      const size_t k = std::min(kSliceBytes, n - done);
      std::memcpy(static_cast<uint8_t*>(dst) + done, src + done, k);
      drop_pages(src + done, k);
    }
  }
  std::string describe() const override { return map_->path(); }

 private:
  // Every page the bytes touch, partial ones included: the map starts on a page and its last page
  // is whole, so the rounded range stays inside it. A page another thread is reading from is
  // simply faulted in again.
  static void drop_pages(const uint8_t* p, size_t n) {
    static const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
    const uintptr_t first = uintptr_t(p) / page * page, last = (uintptr_t(p) + n + page - 1) / page * page;
    ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
  }
  static constexpr size_t kSliceBytes = size_t(1) << 20;
  std::shared_ptr<MappedFile> map_;
  uint64_t begin_, size_;
};

}  // namespace

SafetensorsHeader parse_safetensors_header(const uint8_t* file, uint64_t size, const std::string& path) {
  if (size < 8) fail_file(path, "is " + std::to_string(size) + " bytes, too short for a safetensors header");
  const uint64_t n = read_u64le(file);
  if (n > kMaxSafetensorsHeaderBytes)
    fail_file(path, "safetensors header length " + std::to_string(n) + " is more than the " +
                        std::to_string(kMaxSafetensorsHeaderBytes >> 20) + " MiB allowed");
  if (n > size - 8)
    fail_file(path, "safetensors header length " + std::to_string(n) + " runs past the end of the file (" +
                        std::to_string(size) + " bytes)");
  const std::string text(reinterpret_cast<const char*>(file + 8), size_t(n));
  if (text.empty() || text[0] != '{') fail_file(path, "safetensors header is not a JSON object");
  const json header = parse_json(text, path + ": safetensors header");
  if (!header.is_object()) fail_file(path, "safetensors header is not a JSON object");

  SafetensorsHeader h;
  h.data_start = 8 + n;
  const uint64_t data_size = size - h.data_start;
  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      if (!v.is_object()) fail_file(path, "__metadata__ is not a map of strings");
      for (const auto& [k, s] : v.items()) {
        if (!s.is_string()) fail_file(path, "__metadata__ entry " + k + " is not a string");
        h.metadata[k] = s.get<std::string>();
      }
      continue;
    }
    h.entries.push_back(parse_entry(name, v, h.data_start, data_size, path));
  }
  // No two tensors may share a byte: sorted by where they begin, each must end before the next
  // begins. Empty tensors own no bytes.
  std::vector<const SafetensorsEntry*> by_begin;
  for (const auto& e : h.entries)
    if (e.end > e.begin) by_begin.push_back(&e);
  std::sort(by_begin.begin(), by_begin.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_begin.size(); ++i)
    if (by_begin[i]->begin < by_begin[i - 1]->end)
      fail_file(path, "tensors " + by_begin[i - 1]->name + " and " + by_begin[i]->name + " overlap in the data");
  return h;
}

std::map<std::string, LazyTensor> read_safetensors(const std::string& path) {
  auto map = std::make_shared<MappedFile>(path);
  const SafetensorsHeader h = parse_safetensors_header(map->data(), map->size(), path);
  std::map<std::string, LazyTensor> out;
  for (const auto& e : h.entries) {
    LazyTensor t;
    t.name = e.name;
    t.dtype = e.dtype;
    t.shape = e.shape;
    t.strides.assign(e.shape.size(), 1);
    const std::string what = path + ": tensor " + e.name + " " + shape_string(e.shape);
    for (size_t i = e.shape.size(); i-- > 1;)  // checked: an empty tensor's other dimensions may be huge
      t.strides[i - 1] = checked_mul(t.strides[i], e.shape[i], what);
    t.storage = std::make_shared<MappedRange>(map, e.begin, e.end - e.begin);
    t.check_bounds();  // its f32 copy's size fits too
    out.emplace(e.name, std::move(t));
  }
  return out;
}

bool looks_like_safetensors(const std::string& path) {
  const InputFile f(path);
  uint8_t head[9];
  if (f.size() < sizeof head) return false;
  f.read_at(0, head, sizeof head);
  const uint64_t n = read_u64le(head);
  return n <= kMaxSafetensorsHeaderBytes && n <= f.size() - 8 && head[8] == '{';
}

}  // namespace sf
