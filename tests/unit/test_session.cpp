// Session refuses a KV cache it cannot hold before allocating it, naming the artifact; one call on
// T tokens computes what T calls on one token compute.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/fs_util.h"
#include "executor/session.h"
#include "pipeline/convert.h"

namespace sf {
namespace {

// Converts a fixture to a fresh directory (removed by the caller); empty when fixtures are absent.
std::string convert_fixture(const std::string& name, const std::string& scheme = "f32") {
  const char* d = std::getenv("SF_FIXTURES");
  const std::string src = std::string(d ? d : "") + "/" + name;
  if (!file_exists(src + "/pytorch_model.bin")) return "";
  const std::string out = (std::filesystem::temp_directory_path() /
                           ("sf-unit-session-" + name + scheme + std::to_string(::getpid()))).string();
  ConvertOptions opt;
  opt.source = src;
  opt.out = out;
  opt.scheme = scheme;
  opt.force = true;
  opt.progress = false;
  convert(opt);
  return out;
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
  Session ok(model, 128, nullptr);  // the model's own context is fine
  EXPECT_NE(ok.forward(1), nullptr);
  std::filesystem::remove_all(out);
}

}  // namespace
}  // namespace sf
