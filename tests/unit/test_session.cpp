// Session refuses a KV cache it cannot hold before allocating it, naming the artifact; one call on
// T tokens computes what T calls on one token compute; sequences decoded together (one row per
// slot, one matrix product per weight) give each sequence the logits it gets decoded alone.
#include <gtest/gtest.h>

#include <cstdint>
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/fs_util.h"
#include "executor/session.h"
#include "fixture_convert.h"

namespace sf {
namespace {

std::string convert_fixture(const std::string& name, const std::string& scheme = "f32") {
  return test::convert_fixture(name, scheme, "sf-unit-session-", "pytorch_model.bin");
}

TEST(Session, OneCallOnTTokensEqualsTCallsOnOne) {
  for (const std::string scheme : {"f32", "int8", "int4:g32"}) {
    const std::string out = convert_fixture("hf_gqa", scheme);
    if (out.empty()) GTEST_SKIP() << "fixture hf_gqa missing (ctest generates it)";
    const ExecModel model(out);
    const size_t V = size_t(model.desc().vocab_size);
    const std::vector<int32_t> prompt = {1, 17, 254, 3, 99, 180, 42, 7, 250, 61, 128, 5};
    ThreadPool pool(2);
    Session batched(model, 32, &pool), single(model, 32, nullptr);
    // Prefill 8 in one call, then 4 more in a second call: the same sequence as 12 single steps.
    const float* rows = batched.forward(prompt.data(), 8, 0);
    std::vector<float> want(rows, rows + 8 * V);
    rows = batched.forward(prompt.data() + 8, 4, 2);  // only the last two rows asked for
    std::vector<float> tail(rows, rows + 2 * V);
    EXPECT_EQ(batched.pos(), 12);
    for (size_t t = 0; t < prompt.size(); ++t) {
      const float* l = single.forward(prompt[t], t < 8 || t >= 10);
      if (t >= 8 && t < 10) {
        EXPECT_EQ(l, nullptr);
        continue;
      }
      const float* w = t < 8 ? &want[t * V] : &tail[(t - 10) * V];
      float scale = 0, err = 0;
      for (size_t i = 0; i < V; ++i) scale = std::max(scale, std::fabs(l[i]));
      for (size_t i = 0; i < V; ++i) err = std::max(err, std::fabs(l[i] - w[i]));
      EXPECT_LE(err, 1e-5f * scale) << scheme << " position " << t;
    }
    std::filesystem::remove_all(out);
  }
}

// The largest |a - b| relative to the largest |b|: the batched product decodes each weight row
// once and reuses it for every row, the single-token product uses the type's own dot, so the two
// agree to rounding, not to the bit.
float relative_error(const float* a, const float* b, size_t n) {
  float scale = 0, err = 0;
  for (size_t i = 0; i < n; ++i) scale = std::max(scale, std::fabs(b[i]));
  for (size_t i = 0; i < n; ++i) err = std::max(err, std::fabs(a[i] - b[i]));
  return scale > 0 ? err / scale : err;
}

// Prompts of different lengths, two of them the same. A prefix-bidirectional model gets its
// [gMASK] <sop> ending, as its tokenizer writes it.
std::vector<std::vector<int32_t>> batch_prompts(const ModelDesc& d) {
  std::vector<std::vector<int32_t>> p = {{17, 254, 3, 99, 180}, {42, 7}, {17, 254, 3, 99, 180}, {250, 61, 128, 5, 77, 200, 33, 11, 9}};
  for (auto& prompt : p) {
    for (auto& id : prompt) id %= int32_t(d.vocab_size);
    if (d.mask == MaskKind::PrefixBidirectional) {
      prompt.push_back(int32_t(d.special.gmask));
      prompt.push_back(int32_t(d.special.bos));
    }
  }
  return p;
}

// Each sequence alone in its own session: its prompt's last logits, then each step's logits for
// the given continuation (teacher-forced, so a near-tie in argmax cannot make the runs diverge).
std::vector<std::vector<float>> decode_alone(const ExecModel& model, const std::vector<int32_t>& prompt,
                                             const std::vector<int32_t>& continuation) {
  const size_t V = size_t(model.desc().vocab_size);
  Session s(model, 64, nullptr);
  std::vector<std::vector<float>> out;
  const float* l = s.forward(prompt.data(), prompt.size(), prompt.size() - 1);
  out.emplace_back(l, l + V);
  for (int32_t id : continuation) {
    l = s.forward(id);
    out.emplace_back(l, l + V);
  }
  return out;
}

void check_batched_decode(const std::string& fixture, const std::string& scheme) {
  const std::string out = convert_fixture(fixture, scheme);
  if (out.empty()) GTEST_SKIP() << "fixture " << fixture << " missing (ctest generates it)";
  const ExecModel model(out);
  const ModelDesc& d = model.desc();
  const size_t V = size_t(d.vocab_size);
  const auto prompts = batch_prompts(d);
  const size_t B = prompts.size();
  const size_t steps = 6;
  auto next = [&](size_t b, size_t step) { return int32_t((31 * b + 7 * step + 3) % 50); };

  ThreadPool pool(2);
  Session batch(model, 64, &pool, B);
  ASSERT_EQ(batch.slots(), B);
  std::vector<std::vector<std::vector<float>>> want(B);
  for (size_t b = 0; b < B; ++b) {
    std::vector<int32_t> continuation;
    for (size_t step = 0; step < steps; ++step) continuation.push_back(next(b, step));
    want[b] = decode_alone(model, prompts[b], continuation);
    // Prefill of one slot is the single-sequence call on that slot's cache: the same bits.
    const float* l = batch.prefill(b, prompts[b].data(), prompts[b].size(), prompts[b].size() - 1);
    EXPECT_EQ(0, std::memcmp(l, want[b][0].data(), V * sizeof(float))) << fixture << " " << scheme << " slot " << b;
    EXPECT_EQ(batch.pos(b), int64_t(prompts[b].size()));
  }
  // Slots in a shuffled order: each row's logits belong to the slot it names.
  const std::vector<size_t> order = {2, 0, 3, 1};
  std::vector<int32_t> tokens(B);
  for (size_t step = 0; step < steps; ++step) {
    for (size_t i = 0; i < B; ++i) tokens[i] = next(order[i], step);
    const float* rows = batch.decode(tokens.data(), order.data(), B);
    for (size_t i = 0; i < B; ++i)
      EXPECT_LE(relative_error(rows + i * V, want[order[i]][step + 1].data(), V), 1e-5f)
          << fixture << " " << scheme << " slot " << order[i] << " step " << step;
  }
  for (size_t b = 0; b < B; ++b) EXPECT_EQ(batch.pos(b), int64_t(prompts[b].size() + steps));
  std::filesystem::remove_all(out);
}

TEST(Session, SequencesDecodedTogetherMatchEachDecodedAloneCausal) {
  for (const std::string scheme : {"f32", "int8", "int4:g32"}) check_batched_decode("hf_gqa", scheme);
}

TEST(Session, SequencesDecodedTogetherMatchEachDecodedAlonePrefixBidirectional) {
  for (const std::string scheme : {"f32", "int8"}) check_batched_decode("chatglm_6b", scheme);
}

TEST(Session, SequencesDecodedTogetherMatchEachDecodedAloneLearnedPositions) {
  check_batched_decode("gpt2_hub", "f32");
}

// A decode step on some slots leaves the others where they were, and a slot that starts in a
// decode step (no prompt) runs as a one-token sequence does alone. One row takes the same path as
// the single-sequence call, so the bits are equal.
TEST(Session, DecodingSomeSlotsLeavesTheOthersAlone) {
  for (const std::string fixture : {"hf_gqa", "chatglm_6b"}) {
    const std::string out = convert_fixture(fixture, "int8");
    if (out.empty()) GTEST_SKIP() << "fixture " << fixture << " missing (ctest generates it)";
    const ExecModel model(out);
    const size_t V = size_t(model.desc().vocab_size);
    Session batch(model, 16, nullptr, 3), alone(model, 16, nullptr);
    const int32_t first = 5, second = 9;
    const size_t slot = 2;
    const float* l = batch.decode(&first, &slot, 1);
    std::vector<float> got(l, l + V);
    EXPECT_EQ(0, std::memcmp(got.data(), alone.forward(first), V * sizeof(float))) << fixture;
    l = batch.decode(&second, &slot, 1);
    got.assign(l, l + V);
    EXPECT_EQ(0, std::memcmp(got.data(), alone.forward(second), V * sizeof(float))) << fixture;
    EXPECT_EQ(batch.pos(0), 0);
    EXPECT_EQ(batch.pos(1), 0);
    EXPECT_EQ(batch.pos(2), 2);
    batch.reset(2);
    EXPECT_EQ(batch.pos(2), 0);
    std::filesystem::remove_all(out);
  }
}

TEST(Session, RefusesABadDecodeStep) {
  const std::string out = convert_fixture("hf_gqa");
  if (out.empty()) GTEST_SKIP() << "fixture hf_gqa missing (ctest generates it)";
  const ExecModel model(out);
  Session s(model, 2, nullptr, 2);
  const int32_t tokens[] = {1, 2, 3};
  const size_t twice[] = {1, 1}, outside[] = {2}, both[] = {0, 1, 0};
  EXPECT_THROW(s.decode(tokens, twice, 2), Error);
  EXPECT_THROW(s.decode(tokens, outside, 1), Error);
  EXPECT_THROW(s.decode(tokens, both, 3), Error);  // more rows than slots
  EXPECT_THROW(s.prefill(2, tokens, 1, 0), Error);
  EXPECT_EQ(s.pos(0) + s.pos(1), 0) << "a refused step must not move any sequence";
  const int32_t bad = int32_t(model.desc().vocab_size);
  EXPECT_THROW(s.decode(&bad, twice, 1), Error);
  s.prefill(0, tokens, 2, 2);  // slot 0 full
  EXPECT_THROW(s.decode(tokens, both, 2), Error);
  EXPECT_EQ(s.pos(1), 0);
  std::filesystem::remove_all(out);
}

TEST(Session, RefusesAKvCacheBeyondMemoryOrOverflowingBeforeAllocating) {
  const std::string out = convert_fixture("hf_gqa");
  if (out.empty()) GTEST_SKIP() << "fixture hf_gqa missing (ctest generates it)";
  const ExecModel model(out);
  // 2 layers x 2^40 positions x 32 kv dims x 8 bytes: 16 PiB, more than any machine has.
  for (int64_t ctx : {int64_t(1) << 40, INT64_MAX}) {
    try {
      Session s(model, ctx, nullptr);
      ADD_FAILURE() << "allocated a KV cache for " << ctx << " positions";
    } catch (const Error& e) {
      EXPECT_EQ(e.message().rfind(out + ": ", 0), 0u) << e.message();
      EXPECT_NE(e.message().find("KV cache"), std::string::npos) << e.message();
    }
  }
  // Many sequences multiply the cache: refused the same way.
  try {
    Session s(model, 128, nullptr, size_t(1) << 40);
    ADD_FAILURE() << "allocated a KV cache for 2^40 sequences";
  } catch (const Error& e) {
    EXPECT_EQ(e.message().rfind(out + ": ", 0), 0u) << e.message();
    EXPECT_NE(e.message().find("sequences"), std::string::npos) << e.message();
  }
  Session ok(model, 128, nullptr);  // the model's own context is fine
  EXPECT_NE(ok.forward(1), nullptr);
  std::filesystem::remove_all(out);
}

}  // namespace
}  // namespace sf
