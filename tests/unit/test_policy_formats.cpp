// The quantization policy with an output format's say (FormatRules): ggml's block schemes keep
// q8_0 embeddings, a format refuses what it cannot store, and rows that are not whole blocks fall
// back to f16 only where the format demands whole blocks.
#include <gtest/gtest.h>

#include "core/error.h"
#include "quantizers/policy.h"

namespace sf {
namespace {

TensorSpec matrix(const std::string& name, TensorRole role, int64_t rows, int64_t cols) {
  return {name, {rows, cols}, role, -1};
}

const FormatRules kShards{"shards", {}, false};
const FormatRules kGguf{"gguf", {QType::F32, QType::F16, QType::BF16, QType::Q8_0, QType::Q4_0}, true};

TEST(PolicyFormats, BlockBasesKeepQ8_0EmbeddingsAndOutput) {
  for (const char* base : {"q4_0", "q8_0"}) {
    Policy p(parse_scheme(base));
    EXPECT_EQ(p.scheme_for(matrix("embed.weight", TensorRole::TokenEmbedding, 300, 64)).type, QType::Q8_0) << base;
    EXPECT_EQ(p.scheme_for(matrix("head.output.weight", TensorRole::Output, 300, 64)).type, QType::Q8_0) << base;
  }
  EXPECT_EQ(Policy(parse_scheme("int4")).scheme_for(matrix("embed.weight", TensorRole::TokenEmbedding, 8, 64)).type,
            QType::Int8);
}

TEST(PolicyFormats, RowsThatAreNotWholeBlocksAreF16OnlyWhereTheFormatSaysSo) {
  Policy p(parse_scheme("q4_0"));
  const TensorSpec down = matrix("blocks.0.ffn.down.weight", TensorRole::LinearWeight, 64, 100);
  const TensorSpec up = matrix("blocks.0.ffn.up.weight", TensorRole::LinearWeight, 100, 64);
  EXPECT_EQ(p.scheme_for(down, kGguf).type, QType::F16);
  EXPECT_EQ(p.scheme_for(down, kShards).type, QType::Q4_0);
  EXPECT_EQ(p.scheme_for(up, kGguf).type, QType::Q4_0);
  const TensorSpec norm = {"blocks.0.attn_norm.weight", {100}, TensorRole::NormWeight, 0};
  EXPECT_EQ(p.scheme_for(norm, kGguf).type, QType::F32);
}

TEST(PolicyFormats, TypesTheFormatCannotStoreAreUsageErrors) {
  const TensorSpec q = matrix("blocks.0.attn.q.weight", TensorRole::LinearWeight, 64, 64);
  for (const char* base : {"int8", "int4", "int4:g32:asym"}) {
    try {
      Policy(parse_scheme(base)).scheme_for(q, kGguf);
      ADD_FAILURE() << base << " was not refused";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Usage);
      EXPECT_NE(e.message().find("q4_0"), std::string::npos) << e.message();
    }
  }
  Policy p(parse_scheme("q4_0"));
  p.add_override("blocks.*.attn.q.weight=int8");
  EXPECT_THROW(p.scheme_for(q, kGguf), Error);
  EXPECT_EQ(p.scheme_for(q, kShards).type, QType::Int8);
}

}  // namespace
}  // namespace sf
