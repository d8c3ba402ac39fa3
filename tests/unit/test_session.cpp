// Session refuses a KV cache it cannot hold before allocating it, naming the artifact.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "core/error.h"
#include "core/fs_util.h"
#include "executor/session.h"
#include "pipeline/convert.h"

namespace sf {
namespace {

TEST(Session, RefusesAKvCacheBeyondMemoryOrOverflowingBeforeAllocating) {
  const char* d = std::getenv("SF_FIXTURES");
  const std::string src = std::string(d ? d : "") + "/hf_gqa";
  if (!file_exists(src + "/pytorch_model.bin")) GTEST_SKIP() << "fixture " << src << " missing (ctest generates it)";
  const std::string out = (std::filesystem::temp_directory_path() / ("sf-unit-session-" + std::to_string(::getpid()))).string();
  ConvertOptions opt;
  opt.source = src;
  opt.out = out;
  opt.force = true;
  opt.progress = false;
  convert(opt);
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
