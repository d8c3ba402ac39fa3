#pragma once
// Storage types of artifact tensors and their traits, as one table (like ggml's type traits).
// Every type stores a matrix as independent rows, so a row (one token's embedding, one output
// channel) can be found and decoded alone. Row layouts are specified in docs/format.md.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sf {

enum class QType : uint8_t { F32, F16, BF16, Int8, Int4Sym, Int4Asym, Q8_0, Q4_0 };

struct QTypeTraits {
  QType type;
  const char* name;  // as written in shard tables: "f32", "int4_sym", ...
  bool grouped;      // has a group size
  size_t (*row_bytes)(size_t cols, size_t group);
  void (*quantize_row)(const float* x, size_t cols, size_t group, uint8_t* out);
  void (*dequantize_row)(const uint8_t* row, size_t cols, size_t group, float* out);
  float (*dot_row)(const uint8_t* row, const float* x, size_t cols, size_t group);
  // Integer types: a row's values come in scale groups of scale_width(cols, group) columns (the
  // last may be shorter), and rescale_group multiplies every value of group g by f through the
  // group's scale fields alone (codes unchanged; stored scales are rounded to their width).
  // Float types have neither (null).
  size_t (*scale_width)(size_t cols, size_t group);
  void (*rescale_group)(uint8_t* row, size_t cols, size_t group, size_t g, float f);
};

const QTypeTraits& qtype_traits(QType t);
std::optional<QType> qtype_from_name(std::string_view name);

}  // namespace sf
