// Tensors concatenated from parts (LazyTensor::parts) and the merge of Meta model-parallel files
// (converters/pytorch/model_parallel.h), over in-memory storages whose values the tests choose.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "converters/pytorch/model_parallel.h"
#include "core/error.h"

namespace sf {
namespace {

namespace fs = std::filesystem;

class BytesStorage : public Storage {
 public:
  explicit BytesStorage(std::vector<uint8_t> b, std::string what = "part") : b_(std::move(b)), what_(std::move(what)) {}
  uint64_t size() const override { return b_.size(); }
  void read(uint64_t offset, void* dst, size_t n) override {
    if (offset > b_.size() || n > b_.size() - offset) throw Error("read outside");
    std::memcpy(dst, b_.data() + offset, n);
  }
  std::string describe() const override { return what_; }

 private:
  std::vector<uint8_t> b_;
  std::string what_;
};

// A contiguous f32 tensor holding `values` (row-major) with the given shape.
LazyTensor f32_tensor(const std::string& name, std::vector<int64_t> shape, const std::vector<float>& values,
                      const std::string& file = "part") {
  LazyTensor t;
  t.name = name;
  t.shape = shape;
  t.strides.assign(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) t.strides[i - 1] = t.strides[i] * shape[i];
  std::vector<uint8_t> b(values.size() * 4);
  std::memcpy(b.data(), values.data(), b.size());
  t.storage = std::make_shared<BytesStorage>(std::move(b), file);
  return t;
}

// Values that say where they came from: part p, flat index i -> 100 * p + i.
std::vector<float> tagged(int part, size_t n) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = float(100 * part + int(i));
  return v;
}

LazyTensor concat(const std::string& name, std::vector<LazyTensor> parts, size_t axis, std::vector<int64_t> shape) {
  LazyTensor t;
  t.name = name;
  t.shape = std::move(shape);
  t.parts = std::move(parts);
  t.concat_axis = axis;
  return t;
}

TEST(Concatenation, RowsColumnsAndMiddleAxis) {
  // [2,3] and [1,3] along rows: the second part's row follows the first's.
  auto rows = concat("r", {f32_tensor("r", {2, 3}, tagged(0, 6)), f32_tensor("r", {1, 3}, tagged(1, 3))}, 0, {3, 3});
  EXPECT_EQ(rows.to_f32(), (std::vector<float>{0, 1, 2, 3, 4, 5, 100, 101, 102}));
  // [2,2] and [2,1] along columns: each row is part 0's row then part 1's.
  auto cols = concat("c", {f32_tensor("c", {2, 2}, tagged(0, 4)), f32_tensor("c", {2, 1}, tagged(1, 2))}, 1, {2, 3});
  EXPECT_EQ(cols.to_f32(), (std::vector<float>{0, 1, 100, 2, 3, 101}));
  // [2,1,2] and [2,2,2] along axis 1 of a 3-d tensor.
  auto mid = concat("m", {f32_tensor("m", {2, 1, 2}, tagged(0, 4)), f32_tensor("m", {2, 2, 2}, tagged(1, 8))}, 1,
                    {2, 3, 2});
  EXPECT_EQ(mid.to_f32(), (std::vector<float>{0, 1, 100, 101, 102, 103, 2, 3, 104, 105, 106, 107}));
}

TEST(Concatenation, NonContiguousPart) {
  // Part 1 is a transposed view: element (r, c) at storage index c * 2 + r.
  LazyTensor t1 = f32_tensor("c", {2, 2}, {10, 30, 20, 40});
  t1.strides = {1, 2};
  auto cols = concat("c", {f32_tensor("c", {2, 1}, {1, 2}), t1}, 1, {2, 3});
  EXPECT_EQ(cols.to_f32(), (std::vector<float>{1, 10, 20, 2, 30, 40}));
}

TEST(Concatenation, PartsMustFit) {
  auto expect_refused = [](const LazyTensor& t, const std::string& needle) {
    try {
      t.to_f32();
      ADD_FAILURE() << "accepted; expected " << needle;
    } catch (const Error& e) {
      EXPECT_NE(e.message().find(needle), std::string::npos) << e.message();
    }
  };
  expect_refused(concat("a", {f32_tensor("a", {2, 2}, tagged(0, 4)), f32_tensor("a", {2, 3}, tagged(1, 6))}, 0, {4, 2}),
                 "does not fit");
  expect_refused(concat("a", {f32_tensor("a", {2, 2}, tagged(0, 4)), f32_tensor("a", {1, 2}, tagged(1, 2))}, 0, {4, 2}),
                 "add up to 3");
  expect_refused(concat("a", {f32_tensor("a", {2}, tagged(0, 2))}, 1, {2}), "no axis 1");
  LazyTensor short_part = f32_tensor("a", {2, 2}, tagged(0, 3));  // storage of 3 floats for 4
  expect_refused(concat("a", {short_part}, 0, {2, 2}), "needs 4");
}

TEST(Concatenation, SameDataComparesParts) {
  auto p0 = f32_tensor("a", {1, 2}, tagged(0, 2)), p1 = f32_tensor("a", {1, 2}, tagged(1, 2));
  const auto a = concat("a", {p0, p1}, 0, {2, 2});
  EXPECT_TRUE(a.same_data(concat("b", {p0, p1}, 0, {2, 2})));
  EXPECT_FALSE(a.same_data(concat("b", {p1, p0}, 0, {2, 2})));
  EXPECT_FALSE(a.same_data(concat("b", {p0, p1}, 1, {1, 4})));
  EXPECT_FALSE(a.same_data(p0));
}

// Two ranks of a tiny Meta model: every split rule, a replicated norm and rope.freqs.
std::vector<ModelParallelPart> two_ranks() {
  std::vector<ModelParallelPart> parts(2);
  for (int r = 0; r < 2; ++r) {
    auto& p = parts[size_t(r)];
    p.path = "/d/consolidated.0" + std::to_string(r) + ".pth";
    p.tensors["layers.0.attention.wq.weight"] = f32_tensor("layers.0.attention.wq.weight", {1, 2}, tagged(r, 2), p.path);
    p.tensors["layers.0.attention.wo.weight"] = f32_tensor("layers.0.attention.wo.weight", {2, 1}, tagged(r, 2), p.path);
    p.tensors["tok_embeddings.weight"] = f32_tensor("tok_embeddings.weight", {3, 1}, tagged(r, 3), p.path);
    p.tensors["output.weight"] = f32_tensor("output.weight", {2, 2}, tagged(r, 4), p.path);
    p.tensors["layers.0.attention_norm.weight"] = f32_tensor("layers.0.attention_norm.weight", {2}, {1, 2}, p.path);
    p.tensors["rope.freqs"] = f32_tensor("rope.freqs", {1}, {0.5f}, p.path);
  }
  return parts;
}

// two_ranks' model width: each rank's embedding holds one of its 2 feature columns.
constexpr int64_t kDim = 2;

std::string merge_error(const std::vector<ModelParallelPart>& parts, int64_t dim = kDim) {
  try {
    merge_model_parallel(parts, dim);
  } catch (const Error& e) {
    return e.message();
  }
  return "";
}

TEST(ModelParallel, MergesAlongEachWeightsSplitAxis) {
  const auto merged = merge_model_parallel(two_ranks(), kDim);
  EXPECT_EQ(merged.at("layers.0.attention.wq.weight").shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(merged.at("layers.0.attention.wq.weight").to_f32(), (std::vector<float>{0, 1, 100, 101}));
  EXPECT_EQ(merged.at("layers.0.attention.wo.weight").to_f32(), (std::vector<float>{0, 100, 1, 101}));
  EXPECT_EQ(merged.at("tok_embeddings.weight").shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(merged.at("tok_embeddings.weight").to_f32(), (std::vector<float>{0, 100, 1, 101, 2, 102}));
  EXPECT_EQ(merged.at("output.weight").shape, (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(merged.at("layers.0.attention_norm.weight").shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(merged.at("layers.0.attention_norm.weight").to_f32(), (std::vector<float>{1, 2}));
  EXPECT_TRUE(merged.at("layers.0.attention_norm.weight").parts.empty());
  EXPECT_FALSE(merged.at("output.weight").same_data(merged.at("tok_embeddings.weight")));
}

TEST(ModelParallel, RefusesPartsThatDisagree) {
  {
    auto p = two_ranks();
    p[1].tensors["layers.0.attention_norm.weight"] = f32_tensor("n", {2}, {1, 2.5f}, p[1].path);
    const auto e = merge_error(p);
    EXPECT_NE(e.find("/d/consolidated.01.pth: tensor layers.0.attention_norm.weight"), std::string::npos) << e;
    EXPECT_NE(e.find("differs from the one in consolidated.00.pth"), std::string::npos) << e;
  }
  {
    auto p = two_ranks();
    p[1].tensors["layers.0.attention.wq.weight"] = f32_tensor("q", {1, 3}, tagged(1, 3), p[1].path);
    EXPECT_NE(merge_error(p).find("[1, 3], which does not match [1, 2] outside axis 0"), std::string::npos) << merge_error(p);
  }
  {
    auto p = two_ranks();
    p[1].tensors["rope.freqs"].dtype = DType::F16;
    p[1].tensors["rope.freqs"].shape = {2};
    EXPECT_NE(merge_error(p).find("rope.freqs is f16 but f32"), std::string::npos) << merge_error(p);
  }
  {
    auto p = two_ranks();
    p[1].tensors.erase("output.weight");
    EXPECT_NE(merge_error(p).find("consolidated.01.pth: lacks tensor output.weight"), std::string::npos);
    p = two_ranks();
    p[1].tensors["extra"] = f32_tensor("extra", {1}, {0}, p[1].path);
    EXPECT_NE(merge_error(p).find("consolidated.01.pth: holds tensor extra"), std::string::npos);
  }
  {
    auto p = two_ranks();
    for (auto& part : p) part.tensors["layers.0.attention.bias"] = f32_tensor("b", {1}, {0}, part.path);
    EXPECT_NE(merge_error(p).find("no rule for merging"), std::string::npos);
  }
  {
    auto p = two_ranks();
    for (auto& part : p) part.tensors["layers.0.attention.wo.weight"] = f32_tensor("o", {2}, {0, 1}, part.path);
    EXPECT_NE(merge_error(p).find("consolidated.00.pth: tensor layers.0.attention.wo.weight [2] has no axis 1"),
              std::string::npos)
        << merge_error(p);
    // Only one rank short of the axis: rank 0 (checked before the merged shape is made) or rank 1.
    p = two_ranks();
    p[0].tensors["output.weight"] = f32_tensor("o", {}, {0}, p[0].path);
    EXPECT_NE(merge_error(p).find("consolidated.00.pth: tensor output.weight [] has no axis 0"), std::string::npos)
        << merge_error(p);
    p = two_ranks();
    p[1].tensors["output.weight"] = f32_tensor("o", {}, {0}, p[1].path);
    EXPECT_NE(merge_error(p).find("consolidated.01.pth: tensor output.weight [] has no axis 0"), std::string::npos)
        << merge_error(p);
    p = two_ranks();
    p[1].tensors["tok_embeddings.weight"] = f32_tensor("e", {3}, {0, 1, 2}, p[1].path);
    EXPECT_NE(merge_error(p).find("consolidated.01.pth: tensor tok_embeddings.weight [3] is not a matrix"),
              std::string::npos)
        << merge_error(p);
  }
}

// Llama 3's VocabParallelEmbedding: each rank holds a block of vocabulary rows, all dim columns.
TEST(ModelParallel, EmbeddingSplitByVocabularyRows) {
  auto p = two_ranks();
  for (int r = 0; r < 2; ++r)
    p[size_t(r)].tensors["tok_embeddings.weight"] = f32_tensor("e", {2, 2}, tagged(r, 4), p[size_t(r)].path);
  const auto merged = merge_model_parallel(p, kDim);
  EXPECT_EQ(merged.at("tok_embeddings.weight").shape, (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(merged.at("tok_embeddings.weight").to_f32(), (std::vector<float>{0, 1, 2, 3, 100, 101, 102, 103}));
  // The other weights keep their own axes.
  EXPECT_EQ(merged.at("layers.0.attention.wo.weight").to_f32(), (std::vector<float>{0, 100, 1, 101}));
}

TEST(ModelParallel, EmbeddingThatFitsNeitherSplitIsRefused) {
  // Columns 1 + 1 are neither dim 3 each nor adding up to 3.
  std::string e = merge_error(two_ranks(), 3);
  EXPECT_NE(e.find("/d/consolidated.00.pth: tensor tok_embeddings.weight: the parts [3, 1] in consolidated.00.pth, "
                   "[3, 1] in consolidated.01.pth"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("dim 3"), std::string::npos) << e;
  // One part of dim columns, one of half: neither layout.
  auto p = two_ranks();
  p[0].tensors["tok_embeddings.weight"] = f32_tensor("e", {3, 2}, tagged(0, 6), p[0].path);
  e = merge_error(p);
  EXPECT_NE(e.find("[3, 2] in consolidated.00.pth, [3, 1] in consolidated.01.pth"), std::string::npos) << e;
  // Without the model's width the layout cannot be told.
  e = merge_error(two_ranks(), 0);
  EXPECT_NE(e.find("tok_embeddings.weight is split"), std::string::npos) << e;
  EXPECT_NE(e.find("needs the model's dim"), std::string::npos) << e;
}

class PartFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / ("sf-mp-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void touch(const std::string& name) { std::ofstream(dir_ / name) << "x"; }
  std::string error() {
    try {
      model_parallel_files(dir_.string());
    } catch (const Error& e) {
      return e.message();
    }
    return "";
  }
  fs::path dir_;
};

TEST_F(PartFiles, ListsRanksInOrder) {
  EXPECT_TRUE(model_parallel_files(dir_.string()).empty());
  touch("consolidated.00.pth");
  EXPECT_TRUE(model_parallel_files(dir_.string()).empty());  // one file: not a model-parallel set
  touch("consolidated.10.pth");
  for (int r = 1; r < 10; ++r) touch("consolidated.0" + std::to_string(r) + ".pth");
  touch("consolidated.xx.pth");  // not a rank
  const auto files = model_parallel_files(dir_.string());
  ASSERT_EQ(files.size(), 11u);
  for (size_t r = 0; r < files.size(); ++r) {
    const std::string want = std::string("consolidated.") + (r < 10 ? "0" : "") + std::to_string(r) + ".pth";
    EXPECT_EQ(fs::path(files[r]).filename().string(), want);
  }
}

TEST_F(PartFiles, RefusesGapsDuplicatesAndAbsurdRanks) {
  touch("consolidated.00.pth");
  touch("consolidated.02.pth");
  EXPECT_NE(error().find("consolidated.01.pth: is missing"), std::string::npos) << error();
  touch("consolidated.01.pth");
  touch("consolidated.1.pth");
  EXPECT_NE(error().find("claims model-parallel rank 1"), std::string::npos) << error();
  fs::remove(dir_ / "consolidated.1.pth");
  touch("consolidated.999999.pth");
  EXPECT_NE(error().find("past the 256 parts"), std::string::npos) << error();
}

}  // namespace
}  // namespace sf
