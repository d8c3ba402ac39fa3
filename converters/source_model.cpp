#include "converters/source_model.h"

#include <algorithm>

#include "core/error.h"

namespace sf {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t LazyTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

bool LazyTensor::same_data(const LazyTensor& o) const {
  return storage == o.storage && offset == o.offset && shape == o.shape && strides == o.strides &&
         dtype == o.dtype;
}

void LazyTensor::check_bounds() const {
  if (!storage) fail("tensor " + name + " has no storage");
  if (shape.size() != strides.size()) fail(storage->describe() + ": tensor " + name + " has mismatched shape and strides");
  if (numel() == 0) return;
  int64_t last = offset;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0 || strides[i] < 0)
      fail(storage->describe() + ": tensor " + name + " has a negative shape or stride");
    last += (shape[i] - 1) * strides[i];
  }
  const size_t have = storage->size() / dtype_size(dtype);
  if (offset < 0 || size_t(last) >= have)
    fail(storage->describe() + ": storage holds " + std::to_string(have) + " elements but tensor " + name +
         " " + shape_string(shape) + " needs " + std::to_string(last + 1));
}

std::vector<float> LazyTensor::to_f32() const {
  check_bounds();
  const int64_t n = numel();
  if (n == 0) return {};
  const size_t esize = dtype_size(dtype);
  const uint8_t* base = storage->bytes();
  std::vector<float> out(static_cast<size_t>(n));
  bool contiguous = true;
  int64_t expect = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    if (shape[i] != 1 && strides[i] != expect) contiguous = false;
    expect *= shape[i];
  }
  if (contiguous) {
    // In chunks, handing each converted chunk's source pages back at once.
    constexpr size_t kChunk = size_t(4) << 20;  // elements
    for (size_t done = 0; done < size_t(n); done += kChunk) {
      const size_t k = std::min(kChunk, size_t(n) - done);
      const size_t byte_off = (size_t(offset) + done) * esize;
      convert_to_f32(dtype, base + byte_off, k, out.data() + done);
      storage->release_range(byte_off, k * esize);
    }
    return out;
  }
  // Non-contiguous view: walk the index space row-major, converting one innermost run at a time.
  const size_t nd = shape.size();
  std::vector<int64_t> idx(nd, 0);
  const int64_t inner = shape[nd - 1], inner_stride = strides[nd - 1];
  for (int64_t done = 0; done < n; done += inner) {
    int64_t off = offset;
    for (size_t i = 0; i + 1 < nd; ++i) off += idx[i] * strides[i];
    for (int64_t j = 0; j < inner; ++j)
      convert_to_f32(dtype, base + size_t(off + j * inner_stride) * esize, 1, &out[size_t(done + j)]);
    for (size_t i = nd - 1; i-- > 0;) {
      if (++idx[i] < shape[i]) break;
      idx[i] = 0;
    }
  }
  return out;
}

}  // namespace sf
