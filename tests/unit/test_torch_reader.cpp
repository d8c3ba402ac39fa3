// Reads tests/fixtures/make_fixtures.py's dtypes.pt, written by real torch.save.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "converters/reader_registry.h"
#include "core/fs_util.h"

namespace sf {
namespace {

std::string fixture_dir() {
  const char* d = std::getenv("SF_FIXTURES");
  return d ? d : "";
}

TEST(TorchReader, ReadsEveryDtypeOffsetAndStride) {
  const std::string path = fixture_dir() + "/dtypes.pt";
  if (!file_exists(path)) GTEST_SKIP() << "fixture " << path << " missing (ctest generates it)";
  auto src = open_source(path);
  EXPECT_EQ(src->format, "pytorch");
  // base = arange(-6, 6).reshape(3, 4); floating types hold base * 1.5.
  for (const char* name : {"f32", "f16", "bf16", "f64", "i64", "i32", "i16", "i8", "u8", "bool"}) {
    SCOPED_TRACE(name);
    const LazyTensor& t = src->tensors.at(name);
    EXPECT_EQ(t.shape, (std::vector<int64_t>{3, 4}));
    const auto v = t.to_f32();
    ASSERT_EQ(v.size(), 12u);
    const std::string n = name;
    for (int i = 0; i < 12; ++i) {
      const double base = i - 6;
      const double want = n == "u8" ? base + 6 : n == "bool" ? (base > 0) : n[0] == 'f' || n == "bf16" ? base * 1.5 : base;
      EXPECT_EQ(v[size_t(i)], float(want)) << "element " << i;
    }
  }
  const auto off = src->tensors.at("offset_view").to_f32();  // arange(40)[10:22]
  for (int i = 0; i < 12; ++i) EXPECT_EQ(off[size_t(i)], float(10 + i));
  const LazyTensor& st = src->tensors.at("strided_view");    // arange(40).view(4,10)[:, ::3]
  EXPECT_EQ(st.strides, (std::vector<int64_t>{10, 3}));
  const auto s = st.to_f32();
  ASSERT_EQ(s.size(), 16u);
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) EXPECT_EQ(s[size_t(r * 4 + c)], float(r * 10 + c * 3));
  // Views of one storage share one Storage object.
  EXPECT_EQ(src->tensors.at("shared_a").storage, src->tensors.at("offset_view").storage);
}

}  // namespace
}  // namespace sf
