#include "converters/pytorch/torch_checkpoint.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/checked.h"
#include "core/error.h"

namespace sf {

using pickle::Kind;
using pickle::Value;
using pickle::ValuePtr;

namespace {

// Bytes of a stored (uncompressed) entry, read from the file with pread when asked for: no part of
// the source is mapped, so nothing faults when the file shrinks, and none of it counts toward RSS.
class StoredEntry : public Storage {
 public:
  StoredEntry(std::shared_ptr<ZipArchive> za, ZipEntry e, uint64_t size, std::string what)
      : za_(std::move(za)), entry_(std::move(e)), size_(size), what_(std::move(what)) {}
  uint64_t size() const override { return size_; }
  void read(uint64_t offset, void* dst, size_t n) override {
    if (!range_within(offset, n, size_)) fail(what_ + ": read outside the storage");
    za_->read_stored(entry_, offset, dst, n);
  }
  std::string describe() const override { return what_; }

 private:
  std::shared_ptr<ZipArchive> za_;
  ZipEntry entry_;
  uint64_t size_;  // the bytes the pickle declares (the entry may hold more)
  std::string what_;
};

// A compressed entry, inflated on first use and freed on release.
class InflatedEntry : public Storage {
 public:
  InflatedEntry(std::shared_ptr<ZipArchive> za, ZipEntry e, std::string what)
      : za_(std::move(za)), entry_(std::move(e)), what_(std::move(what)) {}
  uint64_t size() const override { return entry_.size; }
  void read(uint64_t offset, void* dst, size_t n) override {
    if (!range_within(offset, n, entry_.size)) fail(what_ + ": read outside the storage");
    if (n == 0) return;
    if (data_.empty()) data_ = za_->read(entry_);
    std::memcpy(dst, data_.data() + offset, n);
  }
  void release() override { std::vector<uint8_t>().swap(data_); }
  std::string describe() const override { return what_; }

 private:
  std::shared_ptr<ZipArchive> za_;
  ZipEntry entry_;
  std::string what_;
  std::vector<uint8_t> data_;
};

int64_t as_int(const ValuePtr& v, const char* what) {
  if (!v || v->kind != Kind::Int) fail(std::string(what) + " is not an integer");
  return v->i;
}

std::vector<int64_t> int_tuple(const ValuePtr& v, const char* what) {
  if (!v || (v->kind != Kind::Tuple && v->kind != Kind::List)) fail(std::string(what) + " is not a tuple");
  std::vector<int64_t> out;
  for (const auto& x : v->items) out.push_back(as_int(x, what));
  return out;
}

ValuePtr rebuild_tensor(const std::vector<ValuePtr>& a) {
  if (a.size() < 4) fail("expects at least 4 arguments");
  if (a[0]->kind != Kind::Storage) fail("first argument is not a storage");
  auto v = pickle::make(Kind::Tensor);
  v->tensor = std::make_shared<pickle::TensorRef>();
  v->tensor->storage = a[0]->storage;
  v->tensor->offset = as_int(a[1], "storage offset");
  v->tensor->shape = int_tuple(a[2], "size");
  v->tensor->strides = int_tuple(a[3], "stride");
  if (v->tensor->shape.size() != v->tensor->strides.size()) fail("size and stride differ in length");
  return v;
}

ValuePtr rebuild_parameter(const std::vector<ValuePtr>& a) {
  if (a.empty() || a[0]->kind != Kind::Tensor) fail("expects a tensor");
  return a[0];
}

}  // namespace

const pickle::AllowList& torch_allow_list() {
  static const pickle::AllowList list = [] {
    pickle::AllowList l;
    l.callables["collections.OrderedDict"] = [](const std::vector<ValuePtr>& a) {
      auto d = pickle::make(Kind::Dict);
      if (!a.empty()) {
        if (a[0]->kind != Kind::List && a[0]->kind != Kind::Tuple) fail("expects a list of pairs");
        for (const auto& kv : a[0]->items) {
          if (kv->kind != Kind::Tuple || kv->items.size() != 2) fail("expects (key, value) pairs");
          d->dict.emplace_back(kv->items[0], kv->items[1]);
        }
      }
      return d;
    };
    l.callables["torch._utils._rebuild_tensor_v2"] = rebuild_tensor;
    l.callables["torch._utils._rebuild_tensor"] = rebuild_tensor;
    l.callables["torch._utils._rebuild_parameter"] = rebuild_parameter;
    l.callables["torch._utils._rebuild_parameter_with_state"] = rebuild_parameter;
    // torch >= 2 wraps tensor subclasses: (func, type, args, state). Only plain tensors and
    // parameters pass, and func may only be one of the plain rebuild functions above - never this
    // wrapper itself, which would let a file nest calls (and C++ stack frames) as deep as it likes.
    l.callables["torch._tensor._rebuild_from_type_v2"] = [](const std::vector<ValuePtr>& a) -> ValuePtr {
      if (a.size() < 3 || a[0]->kind != Kind::Global || a[1]->kind != Kind::Global || a[2]->kind != Kind::Tuple)
        fail("expects (function, type, args, state)");
      if (a[1]->s != "torch.Tensor" && a[1]->s != "torch.nn.parameter.Parameter")
        fail("tensor subclass '" + a[1]->s + "' is not allowed");
      const std::string& f = a[0]->s;
      if (f == "torch._utils._rebuild_tensor_v2" || f == "torch._utils._rebuild_tensor") return rebuild_tensor(a[2]->items);
      if (f == "torch._utils._rebuild_parameter" || f == "torch._utils._rebuild_parameter_with_state")
        return rebuild_parameter(a[2]->items);
      fail("'" + f + "' may not be called through it");
    };
    l.callables["torch.Size"] = [](const std::vector<ValuePtr>& a) {
      auto t = pickle::make(Kind::Tuple);
      if (!a.empty()) t->items = a[0]->items;
      return t;
    };
    l.callables["torch.device"] = [](const std::vector<ValuePtr>& a) {
      return a.empty() ? pickle::make_str("cpu") : a[0];
    };
    for (const char* s : {"FloatStorage", "HalfStorage", "BFloat16Storage", "DoubleStorage", "LongStorage",
                          "IntStorage", "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage",
                          "UntypedStorage"})
      l.names.insert(std::string("torch.") + s);
    for (const char* s : {"float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8",
                          "uint8", "bool", "Tensor", "nn.parameter.Parameter"})
      l.names.insert(std::string("torch.") + s);
    return l;
  }();
  return list;
}

TorchCheckpoint TorchCheckpoint::open(const std::string& path) {
  TorchCheckpoint ck;
  ck.path = path;
  ck.archive = std::make_shared<ZipArchive>(path);
  const ZipEntry* pkl = nullptr;
  for (const auto& e : ck.archive->entries()) {
    const std::string& n = e.name;
    if (n == "data.pkl" || (n.size() > 9 && n.compare(n.size() - 9, 9, "/data.pkl") == 0 &&
                            n.find('/') == n.size() - 9)) {
      pkl = &e;
      break;
    }
  }
  if (!pkl) fail_file(path, "zip archive has no data.pkl: not a torch.save checkpoint");
  ck.prefix = pkl->name.substr(0, pkl->name.size() - 8);
  if (const ZipEntry* bo = ck.archive->find(ck.prefix + "byteorder")) {
    if (bo->size > 16) fail_file(path, bo->name + " is " + std::to_string(bo->size) + " bytes, not 'little' or 'big'");
    auto b = ck.archive->read(*bo);
    if (std::string(b.begin(), b.end()) != "little") fail_file(path, "big-endian checkpoints are not supported");
  }
  // Unpickling may use at most kPickleBaseBytes + kPickleBytesPerFileByte x the file's size, the
  // inflated data.pkl included: a small file cannot make us allocate gigabytes.
  const uint64_t budget =
      checked_add(kPickleBaseBytes, checked_mul(ck.archive->file_size(), kPickleBytesPerFileByte, path), path);
  if (pkl->size > budget)
    fail_file(path, pkl->name + " is " + std::to_string(pkl->size) + " bytes, more than the " + std::to_string(budget) +
                        " bytes allowed for a checkpoint of this size");
  const std::vector<uint8_t> bytes = ck.archive->read(*pkl);
  const std::string where = path + ": " + pkl->name;
  auto load = [&](const ValuePtr& pid) -> ValuePtr {
    // ('storage', storage_type, key, location, numel)
    if (pid->kind != Kind::Tuple || pid->items.size() < 5 || pid->items[0]->kind != Kind::Str ||
        pid->items[0]->s != "storage")
      fail(where + ": persistent id is not a torch storage record");
    const auto& it = pid->items;
    if (it[1]->kind != Kind::Global || it[2]->kind != Kind::Str) fail(where + ": malformed storage record");
    const std::string cls = it[1]->s.substr(it[1]->s.rfind('.') + 1);
    auto dt = dtype_from_torch_storage(cls);
    if (!dt && cls == "UntypedStorage") dt = DType::U8;
    if (!dt) fail(where + ": unknown storage type " + it[1]->s);
    auto v = pickle::make(Kind::Storage);
    v->storage = std::make_shared<pickle::StorageRef>();
    v->storage->key = it[2]->s;
    v->storage->dtype = *dt;
    v->storage->numel = as_int(it[4], "storage size");
    const ZipEntry* e = ck.archive->find(ck.prefix + "data/" + v->storage->key);
    if (!e) fail(where + ": storage data/" + v->storage->key + " is missing from the archive");
    if (v->storage->numel < 0) fail(where + ": storage data/" + v->storage->key + " has a negative size");
    const uint64_t want = checked_mul(uint64_t(v->storage->numel), dtype_size(*dt), where + ": storage data/" + v->storage->key);
    // Stored entries are read in place, so a longer entry is harmless; a compressed one is inflated
    // whole, so it must be exactly the declared size (no zip bomb behind a small storage).
    if (e->size < want || (!e->stored && e->size != want))
      fail(path + ": storage data/" + v->storage->key + " holds " + std::to_string(e->size) +
           " bytes but the pickle declares " + std::to_string(want));
    return v;
  };
  ck.tree = pickle::run(bytes.data(), bytes.size(), torch_allow_list(), load, where, budget - pkl->size);
  return ck;
}

LazyTensor TorchCheckpoint::tensor(const std::string& name, const Value& v) {
  const auto& t = *v.tensor;
  LazyTensor lt;
  lt.name = name;
  lt.dtype = t.storage->dtype;
  lt.shape = t.shape;
  lt.strides = t.strides;
  lt.offset = t.offset;
  auto& s = storages_[t.storage->key];
  if (!s) {
    const ZipEntry& e = *archive->find(prefix + "data/" + t.storage->key);
    const std::string what = path + ": " + e.name;
    // Only the bytes the pickle declares belong to the storage.
    const uint64_t declared = checked_mul(uint64_t(t.storage->numel), dtype_size(t.storage->dtype), what);
    if (e.stored)
      s = std::make_shared<StoredEntry>(archive, e, declared, what);
    else
      s = std::make_shared<InflatedEntry>(archive, e, what);
  }
  lt.storage = s;
  return lt;
}

namespace {
constexpr size_t kMaxJsonNodes = 1 << 20;

json to_json(const Value& v, std::vector<const Value*>& path, size_t& budget) {
  if (++budget > kMaxJsonNodes) fail("checkpoint metadata is too large");
  // Bounded: each level is a C++ stack frame, and a pickle can nest as deep as it is long.
  if (path.size() >= kMaxMetadataDepth)
    fail("checkpoint metadata is nested deeper than " + std::to_string(kMaxMetadataDepth) + " levels");
  if (std::find(path.begin(), path.end(), &v) != path.end()) return nullptr;  // a cycle
  path.push_back(&v);
  json out;
  switch (v.kind) {
    case Kind::Bool: out = v.b; break;
    case Kind::Int: out = v.i; break;
    case Kind::Float: out = v.f; break;
    case Kind::Str: out = v.s; break;
    case Kind::List:
    case Kind::Tuple:
      out = json::array();
      for (const auto& x : v.items) out.push_back(to_json(*x, path, budget));
      break;
    case Kind::Dict:
      out = json::object();
      for (const auto& [k, x] : v.dict)
        if (k->kind == Kind::Str && x->kind != Kind::Tensor) out[k->s] = to_json(*x, path, budget);
      break;
    default: break;
  }
  path.pop_back();
  return out;
}
}  // namespace

json pickle_to_json(const Value& v) {
  std::vector<const Value*> path;
  size_t budget = 0;
  return to_json(v, path, budget);
}

}  // namespace sf
