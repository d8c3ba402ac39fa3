#include "formats/hdf5/hdf5_layout.h"

#include <algorithm>
#include <cstring>

namespace sf::h5 {

namespace {

size_t div_up(size_t a, size_t b) { return (a + b - 1) / b; }

}  // namespace

std::vector<RowPart> row_parts(QType type, size_t cols, size_t group) {
  const size_t blocks = div_up(cols, 32), groups = group ? div_up(cols, group) : 0, packed = div_up(cols, 2);
  switch (type) {
    case QType::F32: return {{"", Elem::F32, 1, 4 * cols, 0, 0}};
    case QType::F16: return {{"", Elem::F16, 1, 2 * cols, 0, 0}};
    case QType::BF16: return {{"", Elem::U16, 1, 2 * cols, 0, 0}};
    case QType::Int8: return {{"", Elem::I8, 1, cols, 4, 0}, {".scales", Elem::F32, 1, 4, 0, 0}};
    case QType::Int4Sym: return {{"", Elem::U8, 1, packed, 2 * groups, 0}, {".scales", Elem::F16, 1, 2 * groups, 0, 0}};
    case QType::Int4Asym:
      return {{"", Elem::U8, 1, packed, 4 * groups, 0},
              {".scales", Elem::F16, 1, 2 * groups, 0, 0},
              {".zeros", Elem::F16, 1, 2 * groups, 2 * groups, 0}};
    case QType::Q8_0: return {{"", Elem::I8, blocks, 32, 2, 34}, {".scales", Elem::F16, blocks, 2, 0, 34}};
    case QType::Q4_0: return {{"", Elem::U8, blocks, 16, 2, 18}, {".scales", Elem::F16, blocks, 2, 0, 18}};
  }
  return {};
}

std::vector<hsize_t> part_dims(QType type, const RowPart& part, const std::vector<int64_t>& shape) {
  const bool floats = type == QType::F32 || type == QType::F16 || type == QType::BF16;
  if (floats) return std::vector<hsize_t>(shape.begin(), shape.end());
  const hsize_t rows = shape.size() == 2 ? hsize_t(shape[0]) : 1;
  return {rows, hsize_t(part.row_elems())};
}

std::vector<uint8_t> split_part(const uint8_t* tensor, size_t rows, size_t row_bytes, const RowPart& p) {
  std::vector<uint8_t> out(rows * p.row_bytes());
  uint8_t* o = out.data();
  for (size_t r = 0; r < rows; ++r)
    for (size_t k = 0; k < p.pieces; ++k, o += p.piece_bytes)
      std::memcpy(o, tensor + r * row_bytes + p.first + k * p.stride, p.piece_bytes);
  return out;
}

void join_part(const uint8_t* part, size_t rows, size_t row_bytes, const RowPart& p, uint8_t* tensor) {
  for (size_t r = 0; r < rows; ++r)
    for (size_t k = 0; k < p.pieces; ++k, part += p.piece_bytes)
      std::memcpy(tensor + r * row_bytes + p.first + k * p.stride, part, p.piece_bytes);
}

}  // namespace sf::h5

namespace sf::h5 {

std::string unit_group_name(UnitKind kind, int64_t index) {
  if (kind == UnitKind::Embedding) return "embedding";
  if (kind == UnitKind::Head) return "head";
  std::string n = std::to_string(index);
  return std::string(n.size() < 3 ? 3 - n.size() : 0, '0') + n;
}

// HDF5 stores every chunk whole, the last one too: the rows are spread evenly over as few chunks of
// at most 1 MiB as hold them, so padding is under one row per chunk instead of up to a chunk.
hsize_t chunk_rows(hsize_t rows, size_t row_bytes) {
  const hsize_t fit = std::max<hsize_t>(1, hsize_t((size_t(1) << 20) / std::max<size_t>(1, row_bytes)));
  if (rows == 0) return 1;
  const hsize_t chunks = (rows + fit - 1) / fit;
  return (rows + chunks - 1) / chunks;
}

}  // namespace sf::h5
