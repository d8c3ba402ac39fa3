#include "converters/onnx/onnx_tensors.h"

#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <optional>

#include "converters/source_dir.h"
#include "core/checked.h"
#include "core/error.h"

namespace sf {

namespace {

constexpr size_t kMaxOnnxDims = 64;

// TensorProto.DataType values shardforge reads; others (strings, complex, the float8 kinds,
// unsigned 16-64 bit) are refused by name.
struct OnnxDType {
  int onnx;
  const char* name;
  DType type;
};
constexpr OnnxDType kOnnxDTypes[] = {
    {onnx::TensorProto::FLOAT, "FLOAT", DType::F32},       {onnx::TensorProto::UINT8, "UINT8", DType::U8},
    {onnx::TensorProto::INT8, "INT8", DType::I8},          {onnx::TensorProto::INT16, "INT16", DType::I16},
    {onnx::TensorProto::INT32, "INT32", DType::I32},       {onnx::TensorProto::INT64, "INT64", DType::I64},
    {onnx::TensorProto::BOOL, "BOOL", DType::Bool},        {onnx::TensorProto::FLOAT16, "FLOAT16", DType::F16},
    {onnx::TensorProto::DOUBLE, "DOUBLE", DType::F64},     {onnx::TensorProto::BFLOAT16, "BFLOAT16", DType::BF16},
};

// ONNX's 4-bit types (IR 10; Debian's onnx.proto predates them, so by number): two elements a
// byte, the even element in the low nibble. Read as their packed bytes (onnx_tensors.h).
constexpr int kOnnxUint4 = 21, kOnnxInt4 = 22;

std::optional<DType> dtype_of(int onnx_type) {
  if (onnx_type == kOnnxUint4 || onnx_type == kOnnxInt4) return DType::U8;
  for (const auto& d : kOnnxDTypes)
    if (d.onnx == onnx_type) return d.type;
  return std::nullopt;
}

// Bytes held in memory: an inline initializer taken out of the parsed message.
class OwnedBytes : public Storage {
 public:
  OwnedBytes(std::string bytes, std::string what) : bytes_(std::move(bytes)), what_(std::move(what)) {}
  uint64_t size() const override { return bytes_.size(); }
  void read(uint64_t offset, void* dst, size_t n) override {
    if (!range_within(offset, n, bytes_.size())) fail(what_ + ": read outside the tensor");
    if (n) std::memcpy(dst, bytes_.data() + offset, n);
  }
  std::string describe() const override { return what_; }

 private:
  std::string bytes_;
  std::string what_;
};

// A range of an external-data file, read with pread when asked for.
class FileRange : public Storage {
 public:
  FileRange(std::shared_ptr<InputFile> f, uint64_t offset, uint64_t length, std::string what)
      : file_(std::move(f)), offset_(offset), length_(length), what_(std::move(what)) {}
  uint64_t size() const override { return length_; }
  void read(uint64_t offset, void* dst, size_t n) override {
    if (!range_within(offset, n, length_)) fail(what_ + ": read outside the tensor");
    file_->read_at(offset_ + offset, dst, n);
  }
  std::string describe() const override { return what_; }

 private:
  std::shared_ptr<InputFile> file_;
  uint64_t offset_;
  uint64_t length_;
  std::string what_;
};

// The typed repeated fields, little-endian bytes of the tensor's element type. ONNX keeps FLOAT16,
// BFLOAT16, BOOL and the 8/16-bit integers one per int32_data entry.
template <typename Src, typename Dst>
std::string pack_as(const google::protobuf::RepeatedField<Src>& v) {
  std::string out(v.size() * sizeof(Dst), '\0');
  for (int i = 0; i < v.size(); ++i) {
    const Dst x = Dst(v.Get(i));
    std::memcpy(out.data() + size_t(i) * sizeof(Dst), &x, sizeof(Dst));
  }
  return out;
}

std::string typed_bytes(const onnx::TensorProto& t, DType type) {
  switch (type) {
    case DType::F32: return pack_as<float, float>(t.float_data());
    case DType::F64: return pack_as<double, double>(t.double_data());
    case DType::I64: return pack_as<int64_t, int64_t>(t.int64_data());
    case DType::I32: return pack_as<int32_t, int32_t>(t.int32_data());
    case DType::I16: return pack_as<int32_t, int16_t>(t.int32_data());
    case DType::F16:
    case DType::BF16: return pack_as<int32_t, uint16_t>(t.int32_data());
    case DType::I8: return pack_as<int32_t, int8_t>(t.int32_data());
    case DType::U8:
    case DType::Bool: return pack_as<int32_t, uint8_t>(t.int32_data());
  }
  return {};
}

uint64_t parse_u64(const std::string& s, const std::string& where) {
  if (s.empty() || s.size() > 20 || s.find_first_not_of("0123456789") != std::string::npos)
    fail(where + " is not a non-negative integer");
  uint64_t v = 0;
  for (char c : s) {
    v = checked_mul(v, uint64_t(10), where);
    v = checked_add(v, uint64_t(c - '0'), where);
  }
  return v;
}

}  // namespace

bool is_packed_4bit(int onnx_type) { return onnx_type == kOnnxUint4 || onnx_type == kOnnxInt4; }

ExternalFiles::ExternalFiles(std::string model_path) : model_path_(std::move(model_path)), dir_(parent_dir(model_path_)) {}

std::shared_ptr<InputFile> ExternalFiles::open(const std::string& location, const std::string& tensor) {
  if (auto it = files_.find(location); it != files_.end()) return it->second;
  const std::string where = model_path_ + ": tensor " + tensor + ": external data location '" + location + "'";
  if (location.empty()) fail(where + " is empty");
  if (location.front() == '/') fail(where + " is an absolute path");
  if (location.find('\\') != std::string::npos) fail(where + " holds a backslash");
  if (location.find('\0') != std::string::npos) fail(where + " holds a NUL byte");
  // Each component must be a plain name, and none on the way may be a symbolic link: the data must
  // be a file inside the model's directory, not reached through a link to elsewhere.
  std::string path = dir_;
  size_t start = 0;
  while (start <= location.size()) {
    const size_t end = std::min(location.find('/', start), location.size());
    const std::string part = location.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") fail(where + " must name a file inside the model's directory");
    path += "/" + part;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) fail(where + ": no such file");
    if (S_ISLNK(st.st_mode)) fail(where + " goes through a symbolic link");
    start = end + 1;
  }
  std::shared_ptr<InputFile> f;
  try {
    f = std::make_shared<InputFile>(path);  // refuses anything but a regular file
  } catch (const Error& e) {
    fail(where + ": " + e.message(), e.kind());
  }
  files_.emplace(location, f);
  order_.push_back(path);
  return f;
}

std::vector<std::string> ExternalFiles::paths() const { return order_; }

LazyTensor onnx_initializer(onnx::TensorProto& t, ExternalFiles& external, const std::string& model_path) {
  const std::string where = model_path + ": tensor " + t.name();
  LazyTensor lt;
  lt.name = t.name();
  const auto type = dtype_of(t.data_type());
  if (!type) {
    const char* name = onnx::TensorProto::DataType_IsValid(t.data_type())
                           ? onnx::TensorProto::DataType_Name(onnx::TensorProto::DataType(t.data_type())).c_str()
                           : "unknown";
    fail(where + ": element type " + std::string(name) + " (" + std::to_string(t.data_type()) +
             ") is not one shardforge reads",
         ErrorKind::Unsupported);
  }
  lt.dtype = *type;
  if (size_t(t.dims_size()) > kMaxOnnxDims) fail(where + ": more than " + std::to_string(kMaxOnnxDims) + " dimensions");
  if (t.has_segment()) fail(where + ": segmented tensors are not supported", ErrorKind::Unsupported);
  uint64_t numel = 1;
  for (int64_t d : t.dims()) {
    if (d < 0) fail(where + ": negative dimension " + std::to_string(d));
    lt.shape.push_back(d);
    numel = checked_mul(numel, uint64_t(d), where + " " + shape_string(lt.shape));
  }
  if (is_packed_4bit(t.data_type())) lt.shape = {int64_t(numel / 2 + numel % 2)}, numel = uint64_t(lt.shape[0]);
  int64_t stride = 1;
  lt.strides.assign(lt.shape.size(), 1);
  for (size_t i = lt.shape.size(); i-- > 0;) {
    lt.strides[i] = stride;
    stride = int64_t(std::min<uint64_t>(uint64_t(stride) * uint64_t(std::max<int64_t>(lt.shape[i], 1)), INT64_MAX));
  }
  const uint64_t bytes = checked_mul(numel, uint64_t(dtype_size(lt.dtype)), where + " " + shape_string(lt.shape));
  const std::string what = model_path + ": " + t.name();

  if (t.data_location() == onnx::TensorProto::EXTERNAL) {
    std::string location;
    std::optional<uint64_t> offset, length;
    for (const auto& e : t.external_data()) {
      if (e.key() == "location") location = e.value();
      else if (e.key() == "offset") offset = parse_u64(e.value(), where + ": external data offset");
      else if (e.key() == "length") length = parse_u64(e.value(), where + ": external data length");
    }
    if (location.empty()) fail(where + ": external data names no location");
    auto file = external.open(location, t.name());
    const uint64_t off = offset.value_or(0);
    if (off > file->size()) fail(where + ": external data offset " + std::to_string(off) + " is past the end of " + location);
    const uint64_t len = length.value_or(file->size() - off);
    if (!range_within(off, len, file->size()))
      fail(where + ": external data [" + std::to_string(off) + ", +" + std::to_string(len) + ") leaves " + location + " (" +
           std::to_string(file->size()) + " bytes)");
    if (len != bytes)
      fail(where + ": external data length " + std::to_string(len) + " disagrees with " + shape_string(lt.shape) + " x " +
           dtype_name(lt.dtype) + " = " + std::to_string(bytes) + " bytes");
    lt.storage = std::make_shared<FileRange>(std::move(file), off, len, what + " (" + location + ")");
    return lt;
  }
  std::string data;
  if (t.has_raw_data()) data.swap(*t.mutable_raw_data());
  else data = typed_bytes(t, lt.dtype);
  if (data.size() != bytes)
    fail(where + ": holds " + std::to_string(data.size()) + " bytes, but " + shape_string(lt.shape) + " x " +
         dtype_name(lt.dtype) + " is " + std::to_string(bytes) + " bytes");
  lt.storage = std::make_shared<OwnedBytes>(std::move(data), what);
  return lt;
}

}  // namespace sf
