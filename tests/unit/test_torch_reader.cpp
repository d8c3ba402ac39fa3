// Reads tests/fixtures/make_fixtures.py's dtypes.pt, written by real torch.save.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "converters/reader_registry.h"
#include "core/error.h"
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

// A storage of n bytes counting 0, 1, 2, ... that records the largest read.
class CountingStorage : public Storage {
 public:
  explicit CountingStorage(uint64_t n) : n_(n) {}
  uint64_t size() const override { return n_; }
  void read(uint64_t offset, void* dst, size_t n) override {
    if (offset > n_ || n > n_ - offset) throw Error("read outside");
    for (size_t i = 0; i < n; ++i) static_cast<uint8_t*>(dst)[i] = uint8_t(offset + i);
  }
  std::string describe() const override { return "test: storage"; }

 private:
  uint64_t n_;
};

std::string bounds_error(std::vector<int64_t> shape, std::vector<int64_t> strides, int64_t offset, DType dt = DType::U8) {
  LazyTensor t;
  t.name = "t";
  t.dtype = dt;
  t.shape = std::move(shape);
  t.strides = std::move(strides);
  t.offset = offset;
  t.storage = std::make_shared<CountingStorage>(4096);
  try {
    t.check_bounds();
    t.to_f32();
  } catch (const Error& e) {
    return e.message();
  }
  return "";
}

TEST(TorchReader, ViewBoundsCannotWrapAround) {
  EXPECT_EQ(bounds_error({16, 16}, {16, 1}, 0), "");
  EXPECT_EQ(bounds_error({4, 4}, {1, 4}, 100), "");  // transposed view
  // (shape - 1) * stride, their sum, offset + sum and numel each overflow 64 bits on their own.
  // Sums that wrapped around in signed 64-bit arithmetic (and passed) are refused.
  EXPECT_NE(bounds_error({3}, {INT64_MAX / 2 + 1}, 0).find("needs"), std::string::npos);
  EXPECT_NE(bounds_error({2}, {1}, INT64_MAX).find("needs"), std::string::npos);
  EXPECT_NE(bounds_error({2, 2}, {INT64_MAX, INT64_MAX}, 2).find("overflows"), std::string::npos);
  EXPECT_NE(bounds_error({5, 5}, {INT64_MAX / 2, INT64_MAX / 2}, 0).find("overflows"), std::string::npos);
  EXPECT_NE(bounds_error({int64_t(1) << 32, int64_t(1) << 32}, {0, 0}, 0).find("overflows"), std::string::npos);
  EXPECT_NE(bounds_error({int64_t(1) << 40}, {0}, 0).find("repeats"), std::string::npos);
  EXPECT_NE(bounds_error({4097}, {1}, 0).find("needs 4097"), std::string::npos);
  EXPECT_NE(bounds_error({1025}, {1}, 0, DType::F32).find("needs 1025"), std::string::npos);
  EXPECT_NE(bounds_error({2}, {1}, -1).find("negative"), std::string::npos);
}

TEST(TorchReader, StridedViewsReadTheRightElements) {
  LazyTensor t;
  t.name = "t";
  t.dtype = DType::U8;
  t.shape = {3, 2};
  t.strides = {1, 1000};  // far apart: read element by element or as one span
  t.offset = 7;
  t.storage = std::make_shared<CountingStorage>(4096);
  const auto v = t.to_f32();
  const std::vector<float> want = {7, float(uint8_t(1007)), 8, float(uint8_t(1008)), 9, float(uint8_t(1009))};
  EXPECT_EQ(v, want);
}

}  // namespace
}  // namespace sf
