#include "converters/source_model.h"

#include <algorithm>

#include "core/checked.h"
#include "core/error.h"

namespace sf {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t LazyTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) fail("tensor " + name + " has a negative dimension in " + shape_string(shape));
    n = checked_mul(n, d, "tensor " + name + " " + shape_string(shape));
  }
  return n;
}

bool LazyTensor::same_data(const LazyTensor& o) const {
  if (parts.size() != o.parts.size() || concat_axis != o.concat_axis) return false;
  for (size_t i = 0; i < parts.size(); ++i)
    if (!parts[i].same_data(o.parts[i])) return false;
  return storage == o.storage && offset == o.offset && shape == o.shape && strides == o.strides &&
         dtype == o.dtype;
}

void LazyTensor::release() const {
  if (storage) storage->release();
  for (const auto& p : parts) p.release();
}

std::string LazyTensor::describe() const {
  if (storage) return storage->describe();
  if (!parts.empty()) return parts[0].describe();
  return name;
}

namespace {
constexpr size_t kMaxShapeDims = 64;
// A view may repeat its storage's elements (stride 0), but not into an unbounded tensor.
constexpr int64_t kMaxRepeatedElements = int64_t(1) << 26;
constexpr size_t kChunkElements = size_t(4) << 20;
// A non-contiguous view reads the whole span it touches when that is at most this many bytes
// (or twice the tensor), and element by element otherwise.
constexpr uint64_t kMaxSpanBytes = uint64_t(64) << 20;
}  // namespace

// Index (in elements) of the last element the view touches; strides are non-negative, so the
// first is `offset`. Every step is overflow-checked: shape, stride and offset come from the file.
static uint64_t last_index(const LazyTensor& t, const std::string& what) {
  uint64_t last = uint64_t(t.offset);
  for (size_t i = 0; i < t.shape.size(); ++i)
    last = checked_add(last, checked_mul(uint64_t(t.shape[i] - 1), uint64_t(t.strides[i]), what), what);
  return last;
}

// A concatenation: parts with storages of their own (no parts of parts), the same dtype as the
// whole, and shapes that agree with it on every dimension but concat_axis, where they add up.
void LazyTensor::check_parts() const {
  const std::string where = describe() + ": tensor " + name;
  if (storage) fail(where + " has both a storage and parts");
  if (shape.size() > kMaxShapeDims) fail(where + " has more than " + std::to_string(kMaxShapeDims) + " dimensions");
  if (concat_axis >= shape.size())
    fail(where + " " + shape_string(shape) + " has no axis " + std::to_string(concat_axis));
  checked_mul(numel(), int64_t(sizeof(float)), where);  // the whole's f32 copy fits
  int64_t along = 0;
  for (const auto& p : parts) {
    const std::string part = p.describe() + ": tensor " + name;
    if (!p.parts.empty()) fail(where + ": a part is itself made of parts");
    if (p.dtype != dtype) fail(part + " is " + dtype_name(p.dtype) + ", not " + dtype_name(dtype));
    bool fits = p.shape.size() == shape.size();
    for (size_t i = 0; fits && i < shape.size(); ++i) fits = i == concat_axis || p.shape[i] == shape[i];
    if (!fits) fail(part + " part " + shape_string(p.shape) + " does not fit " + shape_string(shape));
    p.check_bounds();
    along = checked_add(along, p.shape[concat_axis], where);
  }
  if (along != shape[concat_axis])
    fail(where + " " + shape_string(shape) + ": its parts add up to " + std::to_string(along) + " along axis " +
         std::to_string(concat_axis));
}

void LazyTensor::check_bounds() const {
  if (!parts.empty()) return check_parts();
  if (!storage) fail("tensor " + name + " has no storage");
  const std::string where = storage->describe() + ": tensor " + name;
  if (shape.size() != strides.size()) fail(where + " has mismatched shape and strides");
  if (shape.size() > kMaxShapeDims) fail(where + " has more than " + std::to_string(kMaxShapeDims) + " dimensions");
  for (size_t i = 0; i < shape.size(); ++i)
    if (shape[i] < 0 || strides[i] < 0) fail(where + " has a negative shape or stride");
  if (offset < 0) fail(where + " has a negative storage offset");
  const int64_t n = checked_mul(numel(), int64_t(sizeof(float)), where);  // and its f32 copy fits too
  if (n == 0) return;
  const uint64_t have = storage->size() / dtype_size(dtype);
  const uint64_t last = last_index(*this, where);
  if (last >= have)
    fail(storage->describe() + ": storage holds " + std::to_string(have) + " elements but tensor " + name + " " +
         shape_string(shape) + " needs " + (last == UINT64_MAX ? std::string("more") : std::to_string(last + 1)));
  if (uint64_t(numel()) > have && numel() > kMaxRepeatedElements)
    fail(where + " " + shape_string(shape) + " repeats its storage's " + std::to_string(have) +
         " elements into more than " + std::to_string(kMaxRepeatedElements));
}

std::vector<float> LazyTensor::to_f32() const {
  check_bounds();
  const int64_t n = numel();
  if (n == 0) return {};
  std::vector<float> out(static_cast<size_t>(n));
  if (parts.empty()) {
    read_placed(out.data(), uint64_t(n), uint64_t(n));
    return out;
  }
  // Row-major, the whole is rows of shape[axis] x `inner` elements, one per index of the axes
  // before concat_axis; part i fills elements [at, at + its extent) x inner of each row. Products
  // of the whole's dimensions: numel() did not overflow.
  uint64_t inner = 1;
  for (size_t i = concat_axis + 1; i < shape.size(); ++i) inner *= uint64_t(shape[i]);
  const uint64_t row = uint64_t(shape[concat_axis]) * inner;
  uint64_t at = 0;
  for (const auto& p : parts) {
    const uint64_t block = uint64_t(p.shape[concat_axis]) * inner;
    if (block > 0) p.read_placed(out.data() + at * inner, block, row);
    at += uint64_t(p.shape[concat_axis]);
  }
  return out;
}

void LazyTensor::read_placed(float* dst, uint64_t block, uint64_t dst_stride) const {
  const int64_t n = numel();
  if (n == 0) return;
  const size_t esize = dtype_size(dtype);
  auto place = [&](uint64_t e) { return dst + (e / block) * dst_stride + e % block; };
  bool contiguous = true;
  int64_t expect = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    if (shape[i] != 1 && strides[i] != expect) contiguous = false;
    expect *= shape[i];  // a prefix of numel(), which did not overflow
  }
  if (contiguous) {
    // A chunk at a time through one buffer: nothing of the source stays in memory. A chunk is
    // converted straight into its place, one block-long run at a time.
    std::vector<uint8_t> buf(std::min(kChunkElements, size_t(n)) * esize);
    for (size_t done = 0; done < size_t(n); done += kChunkElements) {
      const size_t k = std::min(kChunkElements, size_t(n) - done);
      storage->read((uint64_t(offset) + done) * esize, buf.data(), k * esize);
      for (uint64_t e = done; e < done + k;) {
        const uint64_t run = std::min<uint64_t>(block - e % block, done + k - e);
        convert_to_f32(dtype, buf.data() + (e - done) * esize, size_t(run), place(e));
        e += run;
      }
    }
    return;
  }
  // Non-contiguous view: walk the index space row-major, one innermost run at a time.
  const uint64_t first = uint64_t(offset), span = last_index(*this, name) - first + 1;  // elements
  std::vector<uint8_t> buf;
  const bool whole_span = span * esize <= std::max<uint64_t>(kMaxSpanBytes, uint64_t(n) * esize * 2);
  if (whole_span) {
    buf.resize(size_t(span * esize));
    for (uint64_t done = 0; done < buf.size(); done += kChunkElements * esize) {
      const size_t k = size_t(std::min<uint64_t>(kChunkElements * esize, buf.size() - done));
      storage->read(first * esize + done, buf.data() + done, k);
    }
  }
  uint8_t one[16];
  const size_t nd = shape.size();
  std::vector<int64_t> idx(nd, 0);
  const int64_t inner = shape[nd - 1], inner_stride = strides[nd - 1];
  for (int64_t done = 0; done < n; done += inner) {
    uint64_t off = uint64_t(offset);
    for (size_t i = 0; i + 1 < nd; ++i) off += uint64_t(idx[i] * strides[i]);
    for (int64_t j = 0; j < inner; ++j) {
      const uint64_t e = off + uint64_t(j * inner_stride);  // <= last_index: checked above
      const uint8_t* src = one;
      if (whole_span)
        src = buf.data() + (e - first) * esize;
      else
        storage->read(e * esize, one, esize);
      convert_to_f32(dtype, src, 1, place(uint64_t(done + j)));
    }
    for (size_t i = nd - 1; i-- > 0;) {
      if (++idx[i] < shape[i]) break;
      idx[i] = 0;
    }
  }
}

}  // namespace sf
