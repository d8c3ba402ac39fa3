#pragma once
// The .shard file (docs/format.md): magic, version, length-prefixed JSON table, 64-byte aligned
// tensor data. One file per unit; readable straight from a memory map.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/mapped_file.h"
#include "core/quant_types.h"
#include "formats/encoded.h"

namespace sf {

inline constexpr char kShardMagic[8] = {'S', 'F', 'S', 'H', 'A', 'R', 'D', '\0'};
inline constexpr uint32_t kShardVersion = 1;
inline constexpr size_t kShardAlign = 64;

// The bytes of a whole .shard file for these tensors, in the given order.
std::vector<uint8_t> encode_shard(const std::string& unit, const std::vector<EncodedTensor>& tensors);

struct TensorView {
  std::string name;
  QType type = QType::F32;
  size_t group = 0;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  size_t row_bytes = 0;

  int64_t rows() const { return shape.size() == 2 ? shape[0] : 1; }
  int64_t cols() const { return shape.back(); }
  const uint8_t* row(int64_t r) const { return data + size_t(r) * row_bytes; }
};

// Describes a tensor laid out as rows of `type` and checks the byte count matches.
TensorView make_view(const std::string& where, const std::string& name, QType type, size_t group,
                     const std::vector<int64_t>& shape, const uint8_t* data, size_t nbytes);

class ShardFile {
 public:
  explicit ShardFile(const std::string& path);  // maps and validates; throws Error naming the file
  // The same over bytes mapped elsewhere (an entry of a zip bundle), named `where` in messages;
  // `keep` owns them.
  ShardFile(const std::string& where, const uint8_t* data, size_t size, std::shared_ptr<const void> keep);
  const std::string& unit() const { return unit_; }
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* find(const std::string& name) const;

 private:
  ShardFile(const std::string& path, std::shared_ptr<MappedFile> map);
  std::shared_ptr<const void> keep_;
  std::string unit_;
  std::vector<TensorView> tensors_;
};

}  // namespace sf
