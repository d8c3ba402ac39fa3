#pragma once
// GGUF v3 constants (ggml/include/gguf.h, gguf-py/gguf/constants.py) and how shardforge's storage
// types map onto ggml's. Numbers here are the format's, not ours: never renumber them.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/quant_types.h"

namespace sf::gguf {

inline constexpr char kMagic[4] = {'G', 'G', 'U', 'F'};
inline constexpr uint32_t kVersion = 3;
inline constexpr uint32_t kAlignment = 32;  // general.alignment, ggml's default

// Metadata value types.
enum class ValueType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, Bool = 7, String = 8, Array = 9,
  U64 = 10, I64 = 11, F64 = 12,
};
const char* value_type_name(ValueType t);
// Bytes of one scalar of type t; 0 for String and Array (variable) and unknown types.
size_t scalar_size(ValueType t);

// ggml tensor types shardforge writes and reads (ggml.h enum ggml_type).
enum class GgmlType : uint32_t { F32 = 0, F16 = 1, Q4_0 = 2, Q8_0 = 8, BF16 = 30 };

// The ggml type storing a QType the same bytes, row by row; none for int8 / int4 (GGUF has no
// equivalent of their per-row and group layouts).
std::optional<GgmlType> ggml_type_of(QType t);
std::optional<QType> qtype_of_ggml(uint32_t ggml_type);
const char* ggml_type_name(uint32_t ggml_type);  // "q4_0", or "type N" for others
// What --format gguf takes, for messages: "f32, f16, bf16, q8_0, q4_0".
std::string gguf_scheme_names();
std::vector<QType> gguf_storable_types();
// ggml's block size along a row (32 for q4_0 / q8_0, 1 for floats): rows must be whole blocks.
size_t block_elements(QType t);

// llama.cpp's general.file_type (enum llama_ftype) for a model whose linear weights are `t`.
uint32_t file_type_of(QType t);

// tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
enum class TokenType : int32_t { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 };

}  // namespace sf::gguf
