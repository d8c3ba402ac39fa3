#include "formats/gguf/gguf_types.h"

#include <array>

namespace sf::gguf {

namespace {
struct TypeRow {
  QType ours;
  GgmlType ggml;
  const char* name;
  size_t block;         // elements per block along a row
  uint32_t file_type;   // llama_ftype of a model mostly of this type
};
// One row per type both sides store with identical bytes.
constexpr std::array<TypeRow, 5> kTypes = {{
    {QType::F32, GgmlType::F32, "f32", 1, 0},     // LLAMA_FTYPE_ALL_F32
    {QType::F16, GgmlType::F16, "f16", 1, 1},     // LLAMA_FTYPE_MOSTLY_F16
    {QType::BF16, GgmlType::BF16, "bf16", 1, 32}, // LLAMA_FTYPE_MOSTLY_BF16
    {QType::Q8_0, GgmlType::Q8_0, "q8_0", 32, 7}, // LLAMA_FTYPE_MOSTLY_Q8_0
    {QType::Q4_0, GgmlType::Q4_0, "q4_0", 32, 2}, // LLAMA_FTYPE_MOSTLY_Q4_0
}};

const TypeRow* row_of(QType t) {
  for (const auto& r : kTypes)
    if (r.ours == t) return &r;
  return nullptr;
}
}  // namespace

const char* value_type_name(ValueType t) {
  static const char* names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};
  return uint32_t(t) < 13 ? names[uint32_t(t)] : "unknown";
}

size_t scalar_size(ValueType t) {
  switch (t) {
    case ValueType::U8: case ValueType::I8: case ValueType::Bool: return 1;
    case ValueType::U16: case ValueType::I16: return 2;
    case ValueType::U32: case ValueType::I32: case ValueType::F32: return 4;
    case ValueType::U64: case ValueType::I64: case ValueType::F64: return 8;
    default: return 0;
  }
}

std::optional<GgmlType> ggml_type_of(QType t) {
  const TypeRow* r = row_of(t);
  return r ? std::optional<GgmlType>(r->ggml) : std::nullopt;
}

std::optional<QType> qtype_of_ggml(uint32_t g) {
  for (const auto& r : kTypes)
    if (uint32_t(r.ggml) == g) return r.ours;
  return std::nullopt;
}

const char* ggml_type_name(uint32_t g) {
  // ggml.h's enum ggml_type, for messages and inspect (4 and 5 were removed from ggml).
  static const char* names[] = {"f32",    "f16",    "q4_0",    "q4_1",  "type 4", "type 5", "q5_0",   "q5_1",
                                "q8_0",   "q8_1",   "q2_K",    "q3_K",  "q4_K",   "q5_K",   "q6_K",   "q8_K",
                                "iq2_xxs", "iq2_xs", "iq3_xxs", "iq1_s", "iq4_nl", "iq3_s",  "iq2_s",  "iq4_xs",
                                "i8",     "i16",    "i32",     "i64",   "f64",    "iq1_m",  "bf16"};
  return g < sizeof(names) / sizeof(names[0]) ? names[g] : "an unknown ggml type";
}

std::string gguf_scheme_names() {
  std::string s;
  for (const auto& r : kTypes) s += std::string(s.empty() ? "" : ", ") + r.name;
  return s;
}

std::vector<QType> gguf_storable_types() {
  std::vector<QType> out;
  for (const auto& r : kTypes) out.push_back(r.ours);
  return out;
}

size_t block_elements(QType t) {
  const TypeRow* r = row_of(t);
  return r ? r->block : 1;
}

uint32_t file_type_of(QType t) {
  const TypeRow* r = row_of(t);
  return r ? r->file_type : 0;
}

}  // namespace sf::gguf
