#include "formats/onnx/onnx_weights.h"

#include <cstring>
#include <functional>

#include "core/error.h"

namespace sf::onnx_out {

namespace {

size_t groups_of(int64_t cols, size_t group) { return (size_t(cols) + group - 1) / group; }

// The 4-bit codes of every row as one ONNX int4/uint4 tensor: elements in row-major order, two to a
// byte, the even element in the low nibble (our rows pack the same way, each row on its own bytes,
// so rows of odd width are re-packed across row boundaries). `flip` XORs each code with 8: our
// symmetric code c stands for c - 8, which is the two's-complement int4 nibble c ^ 8.
std::vector<uint8_t> packed_codes(const EncodedTensor& t, size_t code_offset, bool flip) {
  const size_t rows = size_t(t.rows()), cols = size_t(t.cols()), rb = t.row_bytes(), cb = (cols + 1) / 2;
  std::vector<uint8_t> out((rows * cols + 1) / 2, 0);
  const uint8_t x = flip ? 0x88 : 0;
  if (cols % 2 == 0) {
    for (size_t r = 0; r < rows; ++r)
      for (size_t j = 0; j < cb; ++j) out[r * cb + j] = t.data[r * rb + code_offset + j] ^ x;
    return out;
  }
  for (size_t r = 0; r < rows; ++r) {
    const uint8_t* codes = &t.data[r * rb + code_offset];
    for (size_t i = 0; i < cols; ++i) {
      const uint8_t c = uint8_t(((codes[i >> 1] >> ((i & 1) * 4)) & 15) ^ (x & 15));
      const size_t e = r * cols + i;
      out[e >> 1] = uint8_t(out[e >> 1] | c << ((e & 1) * 4));
    }
  }
  return out;
}

// ggml's blocks (q8_0, q4_0): 32 elements, an f16 scale first. The scales of every row, [rows, B].
constexpr size_t kGgmlBlock = 32;
std::vector<uint8_t> block_scales(const EncodedTensor& t, size_t block_bytes) {
  const size_t rows = size_t(t.rows()), B = groups_of(t.cols(), kGgmlBlock), rb = t.row_bytes();
  std::vector<uint8_t> out(rows * B * 2);
  for (size_t r = 0; r < rows; ++r)
    for (size_t b = 0; b < B; ++b) std::memcpy(&out[(r * B + b) * 2], &t.data[r * rb + b * block_bytes], 2);
  return out;
}

// q8_0's int8 codes as one [rows, cols] tensor (a short last block's padding left out).
std::vector<uint8_t> q8_0_codes(const EncodedTensor& t) {
  const size_t rows = size_t(t.rows()), cols = size_t(t.cols()), rb = t.row_bytes();
  std::vector<uint8_t> out(rows * cols);
  for (size_t r = 0; r < rows; ++r)
    for (size_t i = 0; i < cols; ++i) out[r * cols + i] = t.data[r * rb + (i / 32) * 34 + 2 + i % 32];
  return out;
}

// q4_0's codes as one int4 tensor: in ggml's block, element j < 16 is the low nibble of byte j and
// element j >= 16 the high nibble of byte j - 16; stored as code - 8 (the nibble XOR 8).
std::vector<uint8_t> q4_0_codes(const EncodedTensor& t) {
  const size_t rows = size_t(t.rows()), cols = size_t(t.cols()), rb = t.row_bytes();
  std::vector<uint8_t> out((rows * cols + 1) / 2, 0);
  for (size_t r = 0; r < rows; ++r)
    for (size_t i = 0; i < cols; ++i) {
      const size_t j = i % 32;
      const uint8_t byte = t.data[r * rb + (i / 32) * 18 + 2 + j % 16];
      const uint8_t c = uint8_t(((j < 16 ? byte : byte >> 4) & 15) ^ 8);
      const size_t e = r * cols + i;
      out[e >> 1] = uint8_t(out[e >> 1] | c << ((e & 1) * 4));
    }
  return out;
}

// `count` little-endian values of `size` bytes at byte `at` of every row, one after another.
std::vector<uint8_t> row_fields(const EncodedTensor& t, size_t at, size_t count, size_t size) {
  const size_t rows = size_t(t.rows()), rb = t.row_bytes();
  std::vector<uint8_t> out(rows * count * size);
  for (size_t r = 0; r < rows; ++r) std::memcpy(&out[r * count * size], &t.data[r * rb + at], count * size);
  return out;
}

}  // namespace

std::vector<QType> onnx_storable_types() {
  return {QType::F32, QType::F16, QType::BF16, QType::Int8, QType::Int4Sym, QType::Int4Asym, QType::Q8_0, QType::Q4_0};
}

std::vector<WeightPart> weight_parts(const EncodedTensor& t) {
  const std::vector<int64_t> dims = t.shape;
  switch (t.type) {
    case QType::F32: return {{"", kFloat, dims, t.data, {}}};
    case QType::F16: return {{"", kFloat16, dims, t.data, {}}};
    case QType::BF16: return {{"", kBfloat16, dims, t.data, {}}};
    default: break;
  }
  if (t.shape.size() != 2) fail("--format onnx: " + t.name + " is a vector of type " + qtype_traits(t.type).name);
  const size_t cols = size_t(t.cols());
  if (t.type == QType::Int8)  // row: f32 scale, then cols int8 codes
    return {{".q", kInt8, dims, row_fields(t, 4, cols, 1), {}}, {".scale", kFloat, {t.rows()}, row_fields(t, 0, 1, 4), {}}};
  if (t.type == QType::Q8_0 || t.type == QType::Q4_0) {  // ggml blocks of 32: block-wise like int4_sym
    const int64_t B = int64_t(groups_of(t.cols(), kGgmlBlock));
    const bool q8 = t.type == QType::Q8_0;
    return {{".q", q8 ? kInt8 : kInt4, dims, q8 ? q8_0_codes(t) : q4_0_codes(t), {}},
            {".scale", kFloat16, {t.rows(), B}, block_scales(t, q8 ? 34 : 18), {}}};
  }
  const size_t G = groups_of(t.cols(), t.group);
  if (t.type == QType::Int4Sym)  // row: G f16 scales, then codes
    return {{".q", kInt4, dims, packed_codes(t, 2 * G, true), {}},
            {".scale", kFloat16, {t.rows(), int64_t(G)}, row_fields(t, 0, G, 2), {}}};
  if (t.type == QType::Int4Asym)  // row: G f16 scales, G f16 minimums, then codes
    return {{".q", kUint4, dims, packed_codes(t, 4 * G, false), {}},
            {".scale", kFloat16, {t.rows(), int64_t(G)}, row_fields(t, 0, G, 2), {}},
            {".min", kFloat16, {t.rows(), int64_t(G)}, row_fields(t, 2 * G, G, 2), {}}};
  fail("--format onnx: " + t.name + " has type " + qtype_traits(t.type).name + ", which the ONNX writer does not store",
       ErrorKind::Unsupported);
}

namespace {

// The nodes giving w's f32 values from its initializers, each named by part(suffix): the whole
// tensor's, or rows gathered from them. rows: the row count, or 1 where it is only known at run
// time (Expand broadcasts it).
std::string dequantized(GraphBuilder& g, const WrittenWeight& w,
                        const std::function<std::string(const std::string& suffix)>& part, int64_t rows) {
  const auto to_f32 = [&](const std::string& v) { return g.op("Cast", {v}, {attr_i("to", kFloat)}); };
  switch (w.type) {
    case QType::F32: return part("");
    case QType::F16:
    case QType::BF16: return to_f32(part(""));
    case QType::Int8: return g.op("DequantizeLinear", {part(".q"), part(".scale")}, {attr_i("axis", 0)});
    default: break;
  }
  // Block-wise along each row (opset 21). The f16 scales are cast first, so the products are f32
  // ones, as the executor's.
  const bool ggml = w.type == QType::Q8_0 || w.type == QType::Q4_0;
  const std::vector<Attr> blocks = {attr_i("axis", 1), attr_i("block_size", int64_t(ggml ? kGgmlBlock : w.group))};
  const std::string deq = g.op("DequantizeLinear", {part(".q"), to_f32(part(".scale"))}, blocks);
  if (w.type != QType::Int4Asym) return deq;
  // Asymmetric: d * code + m, m repeated over its group (the last group cut to the row's width).
  const int64_t cols = w.shape[1], G = int64_t(groups_of(cols, w.group));
  std::string m = g.op("Unsqueeze", {to_f32(part(".min")), g.i64s({2})});
  m = g.op("Expand", {m, g.i64s({rows, G, int64_t(w.group)})});
  m = g.op("Reshape", {m, g.i64s({-1, G * int64_t(w.group)})});
  if (G * int64_t(w.group) != cols) m = g.op("Slice", {m, g.i64s({0}), g.i64s({cols}), g.i64s({1})});
  return g.op("Add", {deq, m});
}

void add_parts(GraphBuilder& g, const WrittenWeight& w) {
  for (const auto& p : w.parts) g.external(w.name + p.suffix, p.type, p.dims, p.ref);
}

}  // namespace

bool rows_gatherable(const WrittenWeight& w) {
  for (const auto& p : w.parts)
    if (p.type == kInt4 || p.type == kUint4) return false;
  return true;
}

std::string f32_value(GraphBuilder& g, const WrittenWeight& w) {
  add_parts(g, w);
  return dequantized(g, w, [&](const std::string& suffix) { return w.name + suffix; }, w.shape[0]);
}

std::string f32_rows(GraphBuilder& g, const WrittenWeight& w, const std::string& ids) {
  add_parts(g, w);
  const std::string flat = g.op("Reshape", {ids, g.i64s({-1})});
  if (!rows_gatherable(w)) return g.op("Gather", {f32_value(g, w), flat}, {attr_i("axis", 0)});
  return dequantized(
      g, w, [&](const std::string& suffix) { return g.op("Gather", {w.name + suffix, flat}, {attr_i("axis", 0)}); }, 1);
}

}  // namespace sf::onnx_out
