#pragma once
// How a tensor's rows (docs/format.md, "Tensor storage types") become HDF5 datasets, and back.
// Float types are one dataset of their numbers. A quantized row interleaves scales and codes
// (q8_0 / q4_0: per block of 32), so each row is split into parts, one dataset per part with one
// row per tensor row: "NAME" holds the codes (packed as in the row: int4 nibble pairs, q4_0's
// ggml order), "NAME.scales" the scales, "NAME.zeros" int4_asym's m (the value of code 0).
// Joining the parts' rows back gives exactly the shard's bytes.
#include <cstdint>
#include <string>
#include <vector>

#include "core/model_desc.h"
#include "core/quant_types.h"
#include "formats/hdf5/hdf5_util.h"

namespace sf::h5 {

// One dataset's share of a row: `pieces` runs of `piece_bytes` bytes, the k-th at row offset
// `first + k * stride`.
struct RowPart {
  std::string suffix;  // "" (the tensor's own dataset), ".scales", ".zeros"
  Elem elem;
  size_t pieces, piece_bytes, first, stride;
  size_t row_bytes() const { return pieces * piece_bytes; }
  size_t row_elems() const { return row_bytes() / elem_size(elem); }
};

// The parts of a row of `cols` values of `type`; their row_bytes add up to the type's row size.
std::vector<RowPart> row_parts(QType type, size_t cols, size_t group);

// The dataset's dimensions for a tensor of `shape`: a float tensor keeps its shape; a quantized
// part is [rows, row_elems] (a vector is one row).
std::vector<hsize_t> part_dims(QType type, const RowPart& part, const std::vector<int64_t>& shape);

// Gathers part `p` of every row of `tensor` (rows x row_bytes) / scatters it back.
std::vector<uint8_t> split_part(const uint8_t* tensor, size_t rows, size_t row_bytes, const RowPart& p);
void join_part(const uint8_t* part, size_t rows, size_t row_bytes, const RowPart& p, uint8_t* tensor);

}  // namespace sf::h5

namespace sf::h5 {

// Group paths, fixed by the layout (the reader opens these and nothing else).
inline constexpr const char* kBlocksGroup = "blocks";
inline constexpr const char* kFilesGroup = "files";  // tokenizer files and vocab_map.bin, byte for byte
// "embedding", "head", or the block's name inside kBlocksGroup: "000", "001", ...
std::string unit_group_name(UnitKind kind, int64_t index);
// The chunk rows of a dataset with rows of `row_bytes` bytes: at most 1 MiB per chunk (or one row),
// the rows spread evenly over the chunks.
hsize_t chunk_rows(hsize_t rows, size_t row_bytes);

}  // namespace sf::h5
