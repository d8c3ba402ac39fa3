#include "converters/pytorch/torch_checkpoint.h"

#include <algorithm>
#include <vector>

#include "core/error.h"

namespace sf {

using pickle::Kind;
using pickle::Value;
using pickle::ValuePtr;

namespace {

constexpr uint64_t kMaxPickleBytes = uint64_t(1) << 30;

// Bytes of a stored (uncompressed) entry, read in place from the archive's memory map.
class MappedRegion : public Storage {
 public:
  MappedRegion(std::shared_ptr<MappedFile> map, size_t offset, size_t size, std::string what)
      : map_(std::move(map)), offset_(offset), size_(size), what_(std::move(what)) {}
  size_t size() const override { return size_; }
  const uint8_t* bytes() override { return map_->data() + offset_; }
  void release() override { map_->release(offset_, size_); }
  void release_range(size_t offset, size_t n) override {
    // Only whole pages inside the range: a neighbour's partly shared page stays.
    map_->release_inner(offset_ + offset, std::min(n, size_ - std::min(offset, size_)));
  }
  std::string describe() const override { return what_; }

 private:
  std::shared_ptr<MappedFile> map_;
  size_t offset_, size_;
  std::string what_;
};

// A compressed entry, inflated on first use and freed on release.
class InflatedEntry : public Storage {
 public:
  InflatedEntry(std::shared_ptr<ZipArchive> za, ZipEntry e, std::string what)
      : za_(std::move(za)), entry_(std::move(e)), what_(std::move(what)) {}
  size_t size() const override { return entry_.size; }
  const uint8_t* bytes() override {
    if (data_.empty() && entry_.size) data_ = za_->read(entry_);
    return data_.data();
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
    // parameters pass, and func must itself be on this list.
    l.callables["torch._tensor._rebuild_from_type_v2"] = [&l](const std::vector<ValuePtr>& a) -> ValuePtr {
      if (a.size() < 3 || a[0]->kind != Kind::Global || a[1]->kind != Kind::Global || a[2]->kind != Kind::Tuple)
        fail("expects (function, type, args, state)");
      if (a[1]->s != "torch.Tensor" && a[1]->s != "torch.nn.parameter.Parameter")
        fail("tensor subclass '" + a[1]->s + "' is not allowed");
      auto it = l.callables.find(a[0]->s);
      if (it == l.callables.end()) fail("'" + a[0]->s + "' may not be called");
      return it->second(a[2]->items);
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
    auto b = ck.archive->read(*bo);
    if (std::string(b.begin(), b.end()) != "little") fail_file(path, "big-endian checkpoints are not supported");
  }
  if (pkl->size > kMaxPickleBytes) fail_file(path, pkl->name + " is larger than " + std::to_string(kMaxPickleBytes) + " bytes");
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
    const uint64_t want = uint64_t(v->storage->numel) * dtype_size(*dt);
    // Stored entries are read in place, so a longer entry is harmless; a compressed one is inflated
    // whole, so it must be exactly the declared size (no zip bomb behind a small storage).
    if (v->storage->numel < 0 || e->size < want || (!e->stored && e->size != want))
      fail(path + ": storage data/" + v->storage->key + " holds " + std::to_string(e->size) +
           " bytes but the pickle declares " + std::to_string(want));
    return v;
  };
  ck.tree = pickle::run(bytes.data(), bytes.size(), torch_allow_list(), load, where);
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
    const size_t declared = size_t(t.storage->numel) * dtype_size(t.storage->dtype);
    if (e.stored)
      s = std::make_shared<MappedRegion>(archive->map(), size_t(e.data_offset), declared, what);
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
