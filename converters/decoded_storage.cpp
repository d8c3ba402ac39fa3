#include "converters/decoded_storage.h"

#include <cstring>

#include "core/checked.h"
#include "core/error.h"

namespace sf {

DecodedStorage::DecodedStorage(uint64_t elements, std::function<std::vector<float>()> decode,
                               std::function<void()> release_sources, std::string what)
    : elements_(elements), decode_(std::move(decode)), release_sources_(std::move(release_sources)), what_(std::move(what)) {}

void DecodedStorage::read(uint64_t offset, void* dst, size_t n) {
  if (!range_within(offset, n, size())) fail(what_ + ": read outside the tensor");
  if (n == 0) return;
  std::lock_guard<std::mutex> lock(mutex_);
  if (values_.empty()) {
    std::vector<float> v = decode_();
    if (v.size() != elements_)
      fail(what_ + ": decoded " + std::to_string(v.size()) + " values, expected " + std::to_string(elements_));
    values_ = std::move(v);
  }
  std::memcpy(dst, reinterpret_cast<const uint8_t*>(values_.data()) + offset, n);
}

void DecodedStorage::release() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<float>().swap(values_);
  if (release_sources_) release_sources_();
}

LazyTensor decoded_tensor(const std::string& name, std::vector<int64_t> shape, std::shared_ptr<Storage> storage) {
  LazyTensor t;
  t.name = name;
  t.dtype = DType::F32;
  t.shape = std::move(shape);
  t.strides.assign(t.shape.size(), 1);
  for (size_t i = t.shape.size(); i-- > 1;) t.strides[i - 1] = t.strides[i] * t.shape[i];
  t.storage = std::move(storage);
  return t;
}

}  // namespace sf
