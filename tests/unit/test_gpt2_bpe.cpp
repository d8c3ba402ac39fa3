// GPT-2 byte-level BPE on the real GPT-2 vocab.json / merges.txt (../shared/tokenizers), checked
// against encodings published by the real GPT-2 tokenizers (tests/unit/data/gpt2_encodings.json
// says where each comes from), and by exact round trips of the shared corpora.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <cstdlib>
#include <memory>
#include <string>

#include "core/error.h"
#include "core/fs_util.h"
#include "core/json_util.h"
#include "tokenizers/byte_level.h"
#include "tokenizers/gpt2_bpe.h"
#include "tokenizers/tokenizer_kinds.h"

namespace sf {
namespace {

using json = nlohmann::json;

std::string shared_dir() {
  const char* d = std::getenv("SF_SHARED");
  return d ? d : SF_SHARED_DEFAULT;
}
std::string vocab_path() { return shared_dir() + "/tokenizers/gpt2_vocab.json"; }
std::string merges_path() { return shared_dir() + "/tokenizers/gpt2_merges.txt"; }

class Gpt2Bpe : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (file_exists(vocab_path()) && file_exists(merges_path()))
      tok_ = std::make_unique<Gpt2BpeTokenizer>(vocab_path(), merges_path());
  }
  static void TearDownTestSuite() { tok_.reset(); }
  void SetUp() override {
    if (!tok_) GTEST_SKIP() << "GPT-2 tokenizer files not found at " << vocab_path() << ": ../shared is absent, skipping";
  }
  static std::unique_ptr<Gpt2BpeTokenizer> tok_;
};
std::unique_ptr<Gpt2BpeTokenizer> Gpt2Bpe::tok_;

TEST_F(Gpt2Bpe, MatchesPublishedEncodings) {
  const json data = read_json_file(std::string(SF_UNIT_DATA) + "/gpt2_encodings.json");
  int checked = 0;
  for (const char* source : {"llama_cpp", "tiktoken"})
    for (const auto& c : data.at(source)) {
      const std::string text = c.at("text").get<std::string>();
      const std::vector<int> want = c.at("ids").get<std::vector<int>>();
      EXPECT_EQ(tok_->encode(text), want) << source << ": " << json(text).dump();
      EXPECT_EQ(tok_->decode(want), text) << source << ": " << json(text).dump();
      ++checked;
    }
  EXPECT_EQ(checked, 46 + 19);
}

TEST_F(Gpt2Bpe, SpecialTokenAndSizes) {
  EXPECT_STREQ(tok_->kind(), "gpt2_bpe");
  EXPECT_EQ(tok_->vocab_size(), 50257);
  EXPECT_EQ(tok_->bos(), 50256);
  EXPECT_EQ(tok_->eos(), 50256);
  EXPECT_FALSE(tok_->prompt_starts_with_bos());
  EXPECT_EQ(tok_->encode("<|endoftext|>"), std::vector<int>{50256});
  EXPECT_EQ(tok_->decode({50256}), "<|endoftext|>");
  // Only the exact spelling is special; a near miss is ordinary text.
  const std::vector<int> near = tok_->encode("<|endoftext|");
  EXPECT_EQ(std::count(near.begin(), near.end(), 50256), 0);
  EXPECT_EQ(tok_->decode(near), "<|endoftext|");
}

TEST_F(Gpt2Bpe, RoundTripsSharedCorporaExactly) {
  for (const char* name : {"tinystories_sample.txt", "tinystories_valid_head.txt", "wikitext2_test_tokenized.txt"}) {
    const std::string path = shared_dir() + "/corpus/" + name;
    const auto start = std::chrono::steady_clock::now();
    const std::vector<int> ids = tok_->encode_file(path);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const std::string text = read_file(path);
    EXPECT_GT(ids.size(), text.size() / 8) << name;
    EXPECT_LT(ids.size(), text.size()) << name;
    EXPECT_TRUE(tok_->decode(ids) == text) << name << " does not decode to its own bytes";
    std::cout << "[ info     ] " << name << ": " << text.size() << " bytes -> " << ids.size() << " tokens in "
              << seconds << " s\n";
  }
}

// Every byte sequence encodes (invalid UTF-8 included) and decodes back to itself.
TEST_F(Gpt2Bpe, RoundTripsArbitraryBytes) {
  std::string all;
  for (int b = 0; b < 256; ++b) {
    const std::string one(1, char(b));
    EXPECT_EQ(tok_->decode(tok_->encode(one)), one) << "byte " << b;
    all += one;
  }
  EXPECT_EQ(tok_->decode(tok_->encode(all)), all);
  const std::string broken = "caf\xc3 \xe2\x82 na\xefve \xf0\x9f\xa6 \xed\xa0\x80 \xc0\xaf end\xf4";
  EXPECT_EQ(tok_->decode(tok_->encode(broken)), broken);
  uint32_t x = 12345;
  std::string random;
  for (int i = 0; i < 20000; ++i) random += char((x = x * 1103515245 + 12345) >> 24);
  EXPECT_EQ(tok_->decode(tok_->encode(random)), random);
}

// Streaming: pieces may end inside a UTF-8 character; together they are the text.
TEST_F(Gpt2Bpe, PiecesConcatenateToTheText) {
  const std::string text = " this is 🦙.cpp нещо 我想在apple工作";
  const std::vector<int> ids = tok_->encode(text);
  std::string streamed;
  int prev = -1, partial = 0;
  for (int id : ids) {
    const std::string piece = tok_->piece_text(prev, id);
    for (size_t pos = 0; pos < piece.size(); pos += utf8_at(piece, pos).len) partial += !utf8_at(piece, pos).valid;
    streamed += piece;
    prev = id;
  }
  EXPECT_EQ(streamed, text);
  EXPECT_GT(partial, 0) << "expected pieces holding part of a character (the llama emoji is split in three)";
}

TEST_F(Gpt2Bpe, LongRunsAreNotQuadratic) {
  for (const std::string unit : {" ", "a", "\n", "0", "!"}) {
    std::string text;
    for (int i = 0; i < 200000; ++i) text += unit;
    const auto start = std::chrono::steady_clock::now();
    const auto ids = tok_->encode(text);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(tok_->decode(ids), text);
    EXPECT_LT(seconds, 10.0) << json(unit).dump();
  }
}

// Models have more rows than the tokenizer has pieces (nanoGPT pads GPT-2 to 50304) and may
// generate one: it shows as nothing, and the ids around it decode as without it.
TEST_F(Gpt2Bpe, IdsOutsideTheVocabularyDecodeToNothing) {
  EXPECT_EQ(tok_->decode({15496, 50257, 995, -1, 50303}), tok_->decode({15496, 995}));
  EXPECT_EQ(tok_->decode({15496, 995}), "Hello world");
  EXPECT_EQ(tok_->piece_text(-1, 50284), "");
  EXPECT_EQ(tok_->piece_text(50284, 995), tok_->piece_text(-1, 995));  // an unknown prev is none
  EXPECT_FALSE(tok_->is_decodable(50257));
  EXPECT_TRUE(tok_->is_decodable(50256));
}

TEST_F(Gpt2Bpe, FactoryFindsTheMergesBesideTheVocabulary) {
  const auto tok = open_tokenizer(vocab_path());
  EXPECT_STREQ(tok->kind(), "gpt2_bpe");
  EXPECT_EQ(tok->files(), (std::vector<std::string>{vocab_path(), merges_path()}));
  EXPECT_EQ(tok->encode("hello world"), (std::vector<int>{31373, 995}));
}

}  // namespace
}  // namespace sf
