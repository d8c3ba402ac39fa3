// The HDF5 container's row split (formats/hdf5/hdf5_layout.cpp): for every storage type the parts
// cover each byte of a row exactly once, so splitting rows into datasets and joining them back gives
// the shard's bytes, whatever the width and group.
#include <gtest/gtest.h>

#include <numeric>
#include <random>
#include <vector>

#include "core/quant_types.h"
#include "formats/hdf5/hdf5_layout.h"

namespace sf {
namespace {

TEST(Hdf5Layout, PartsCoverEveryByteOfARowOnce) {
  const QType types[] = {QType::F32, QType::F16, QType::BF16, QType::Int8, QType::Int4Sym, QType::Int4Asym,
                         QType::Q8_0, QType::Q4_0};
  for (QType t : types)
    for (size_t cols : {1, 7, 31, 32, 33, 64, 100, 257})
      for (size_t group : {2, 16, 32, 48}) {
        const size_t g = qtype_traits(t).grouped ? group : 0;
        const size_t row_bytes = qtype_traits(t).row_bytes(cols, g);
        std::vector<int> hits(row_bytes, 0);
        for (const auto& p : h5::row_parts(t, cols, g)) {
          EXPECT_EQ(p.row_bytes() % h5::elem_size(p.elem), 0u);
          for (size_t k = 0; k < p.pieces; ++k)
            for (size_t b = 0; b < p.piece_bytes; ++b) {
              const size_t at = p.first + k * p.stride + b;
              ASSERT_LT(at, row_bytes) << qtype_traits(t).name << " cols " << cols;
              ++hits[at];
            }
        }
        for (size_t i = 0; i < row_bytes; ++i)
          ASSERT_EQ(hits[i], 1) << qtype_traits(t).name << " cols " << cols << " group " << g << " byte " << i;
      }
}

TEST(Hdf5Layout, SplitThenJoinGivesTheRowsBack) {
  std::mt19937 rng(7);
  const size_t rows = 5, cols = 70, group = 32;
  for (QType t : {QType::Int4Asym, QType::Q4_0, QType::Q8_0, QType::Int8}) {
    const size_t g = qtype_traits(t).grouped ? group : 0;
    const size_t row_bytes = qtype_traits(t).row_bytes(cols, g);
    std::vector<uint8_t> tensor(rows * row_bytes), back(tensor.size(), 0);
    for (auto& b : tensor) b = uint8_t(rng());
    for (const auto& p : h5::row_parts(t, cols, g)) {
      const auto part = h5::split_part(tensor.data(), rows, row_bytes, p);
      EXPECT_EQ(part.size(), rows * p.row_bytes());
      h5::join_part(part.data(), rows, row_bytes, p, back.data());
    }
    EXPECT_EQ(back, tensor) << qtype_traits(t).name;
  }
}

}  // namespace
}  // namespace sf
