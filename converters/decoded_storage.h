#pragma once
// A Storage whose bytes are computed rather than read: a quantized source tensor (codes and scales
// in a file) handed to the pipeline as the f32 values they stand for. The values are decoded on the
// first read and kept until release(), so memory is one decoded tensor at a time, as for a mapped
// f32 one; nothing is decoded until the pipeline asks for the tensor.
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "converters/source_model.h"

namespace sf {

class DecodedStorage : public Storage {
 public:
  // decode() returns exactly `elements` f32 values (checked) and throws Error naming the source
  // when its inputs are bad; release_sources() drops what the inputs' storages keep in memory.
  DecodedStorage(uint64_t elements, std::function<std::vector<float>()> decode,
                 std::function<void()> release_sources, std::string what);
  uint64_t size() const override { return elements_ * sizeof(float); }
  void read(uint64_t offset, void* dst, size_t n) override;
  void release() override;
  std::string describe() const override { return what_; }

 private:
  uint64_t elements_;
  std::function<std::vector<float>()> decode_;
  std::function<void()> release_sources_;
  std::string what_;
  std::mutex mutex_;  // a tied weight's two tensors share one storage and may be read at once
  std::vector<float> values_;
};

// A contiguous row-major f32 LazyTensor over `storage`.
LazyTensor decoded_tensor(const std::string& name, std::vector<int64_t> shape, std::shared_ptr<Storage> storage);

}  // namespace sf
