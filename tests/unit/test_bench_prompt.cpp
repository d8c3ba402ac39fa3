// bench's prompt avoids a prefix-bidirectional model's special ids ([MASK], [gMASK], <sop>), which
// would change its mask and positions, and still draws every other id.
#include <gtest/gtest.h>

#include <set>

#include "validators/speed.h"

namespace sf {
namespace {

ModelDesc with_special(int64_t vocab, int64_t mask, int64_t gmask, int64_t bos) {
  ModelDesc d;
  d.vocab_size = vocab;
  d.special = {mask, gmask, bos};
  return d;
}

TEST(BenchPrompt, AvoidsTheSpecialIdsAndDrawsEveryOther) {
  const std::vector<int32_t> prompt = bench_prompt(with_special(10, 3, 4, 9), 2000);
  ASSERT_EQ(prompt.size(), 2000u);
  const std::set<int32_t> seen(prompt.begin(), prompt.end());
  EXPECT_EQ(seen, (std::set<int32_t>{0, 1, 2, 5, 6, 7, 8}));
}

TEST(BenchPrompt, IsFixed) {
  const ModelDesc d = with_special(150528, 150000, 150001, 150004);
  EXPECT_EQ(bench_prompt(d, 64), bench_prompt(d, 64));
  for (int32_t id : bench_prompt(d, 20000)) {
    EXPECT_TRUE(id >= 0 && id < 150528) << id;
    EXPECT_TRUE(id != 150000 && id != 150001 && id != 150004) << id;
  }
}

TEST(BenchPrompt, ModelsWithoutSpecialIdsDrawFromTheWholeVocabulary) {
  const std::vector<int32_t> prompt = bench_prompt(with_special(7, -1, -1, -1), 500);
  EXPECT_EQ(std::set<int32_t>(prompt.begin(), prompt.end()), (std::set<int32_t>{0, 1, 2, 3, 4, 5, 6}));
  // A vocabulary of special ids only (no real model) still gives a prompt rather than looping.
  const std::vector<int32_t> only = bench_prompt(with_special(2, 0, 1, -1), 8);
  EXPECT_EQ(only.size(), 8u);
}

}  // namespace
}  // namespace sf
