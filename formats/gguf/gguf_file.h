#pragma once
// A GGUF file (v2 or v3) read from a memory map and validated in full before anything is handed
// out: every count, string length, dimension and offset is checked against the file (core/
// checked.h), so a truncated or hostile file is one error line naming it, never a crash or an
// allocation larger than the file. Arrays are walked, not copied: their elements are read on demand.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/mapped_file.h"
#include "formats/gguf/gguf_types.h"

namespace sf {

struct GgufValue {
  gguf::ValueType type = gguf::ValueType::U8;
  uint64_t u = 0;      // unsigned and bool scalars
  int64_t i = 0;       // signed scalars
  double f = 0;        // float scalars
  std::string s;       // strings
  // Arrays: element type, count, and where the elements start in the map.
  gguf::ValueType elem = gguf::ValueType::U8;
  uint64_t count = 0;
  const uint8_t* elems = nullptr;
};

struct GgufTensor {
  std::string name;
  std::vector<uint64_t> ne;  // ggml order: ne[0] = columns
  uint32_t type = 0;         // ggml_type
  uint64_t offset = 0;       // in the data section
  uint64_t bytes = 0;
  const uint8_t* data = nullptr;
};

class GgufFile {
 public:
  explicit GgufFile(const std::string& path);

  const std::string& path() const { return map_->path(); }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_start_; }
  uint64_t file_size() const { return map_->size(); }
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufValue* find(const std::string& key) const;
  const GgufTensor* tensor(const std::string& name) const;

  // Typed access; each fails naming the file and key when the value has another type. The
  // optional forms return nullopt when the key is absent.
  std::optional<std::string> get_string(const std::string& key) const;
  std::optional<uint64_t> get_uint(const std::string& key) const;  // any unsigned integer type
  std::optional<double> get_float(const std::string& key) const;  // f32 or f64
  std::optional<bool> get_bool(const std::string& key) const;
  // The elements of an array of strings / numbers (already validated when the file was opened).
  std::vector<std::string> array_strings(const std::string& key) const;
  std::vector<double> array_numbers(const std::string& key) const;
  // The bytes of an array of u8 / i8 (a file carried inside the GGUF).
  std::string array_bytes(const std::string& key) const;

  std::shared_ptr<const MappedFile> map() const { return map_; }

 private:
  std::shared_ptr<MappedFile> map_;
  uint32_t version_ = 0;
  uint64_t alignment_ = gguf::kAlignment, data_start_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<GgufTensor> tensors_;
  // Built once while reading, so each lookup is constant time (a model's reader looks up every tensor).
  std::unordered_map<std::string, size_t> kv_index_, tensor_index_;
};

// The bytes of one row of ne[0] elements of a ggml type, or nullopt for a type shardforge does not
// know the block layout of. block_size gets the elements per block.
std::optional<uint64_t> ggml_row_bytes(uint32_t ggml_type, uint64_t ne0, uint64_t* block_size = nullptr);

}  // namespace sf
