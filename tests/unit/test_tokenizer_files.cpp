// Opening tokenizers by path and by kind, and refusing damaged GPT-2 BPE files with one line that
// names the file. The GPT-2 files here are tiny ones written by the test: the 256 byte tokens,
// <|endoftext|> and a few merges.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <tuple>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizers/byte_level.h"
#include "tokenizers/tokenizer_kinds.h"

namespace sf {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string shown(const std::string& bytes) {
  std::string s;
  for (char c : bytes) append_utf8(s, byte_to_alphabet(uint8_t(c)));
  return s;
}

// 256 byte tokens (ids 0-255), then "he" 256, "ll" 257, "hell" 258, "<|endoftext|>" 259.
json small_vocab() {
  json v = json::object();
  for (int b = 0; b < 256; ++b) v[shown(std::string(1, char(b)))] = b;
  v["he"] = 256;
  v["ll"] = 257;
  v["hell"] = 258;
  v["<|endoftext|>"] = 259;
  return v;
}
const char* kSmallMerges = "#version: 0.2\nh e\nl l\nhe ll\n";

class TokenizerFiles : public testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "sf-tok-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    write("vocab.json", small_vocab().dump());
    write("merges.txt", kSmallMerges);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  void write(const std::string& name, const std::string& bytes) const {
    std::ofstream(path(name), std::ios::binary) << bytes;
  }
  // The one-line error opening dir_/vocab.json gives; it must name `file`.
  std::string open_error(const std::string& file) const {
    try {
      open_tokenizer(path("vocab.json"));
    } catch (const Error& e) {
      EXPECT_EQ(e.message().find('\n'), std::string::npos) << e.message();
      EXPECT_NE(e.message().find(path(file)), std::string::npos) << e.message();
      return e.message();
    }
    ADD_FAILURE() << "opened";
    return "";
  }
  std::string dir_;
};

TEST_F(TokenizerFiles, SmallVocabularyMergesByRank) {
  const auto tok = open_tokenizer(path("vocab.json"));
  EXPECT_STREQ(tok->kind(), "gpt2_bpe");
  EXPECT_EQ(tok->vocab_size(), 260);
  EXPECT_EQ(tok->bos(), 259);
  // "hello": h e l l o -> he l l o -> he ll o -> hell o.
  EXPECT_EQ(tok->encode("hello"), (std::vector<int>{258, 'o'}));
  // The space is its own token here (no " h" merge): Ġ is byte 32's token, id 32.
  EXPECT_EQ(tok->encode("hell hell<|endoftext|>"), (std::vector<int>{258, 32, 258, 259}));
}

TEST_F(TokenizerFiles, OpensADirectoryAndNamedPairs) {
  EXPECT_EQ(open_tokenizer(dir_)->files(), (std::vector<std::string>{path("vocab.json"), path("merges.txt")}));
  write("gpt2-vocab.json", small_vocab().dump());
  write("gpt2-merges.txt", kSmallMerges);
  EXPECT_EQ(open_tokenizer(path("gpt2-vocab.json"))->files()[1], path("gpt2-merges.txt"));
  const auto by_kind = open_tokenizer("gpt2_bpe", {path("vocab.json"), path("merges.txt")}, "manifest.json");
  EXPECT_EQ(by_kind->vocab_size(), 260);
  const std::string sample = std::string(SF_SOURCE_DIR) + "/samples/jargon-llama/tokenizer.model";
  const auto sp = open_tokenizer(sample);
  EXPECT_STREQ(sp->kind(), "sentencepiece");
  EXPECT_TRUE(sp->prompt_starts_with_bos());
}

// A directory is searched for every kind: a SentencePiece tokenizer.model alone is found (the GPT-2
// rule once claimed every directory and said it held no tokenizer), both kinds are refused naming
// them, neither names what a tokenizer directory holds.
TEST_F(TokenizerFiles, DirectoriesAreSearchedForEveryKind) {
  const std::string sample = std::string(SF_SOURCE_DIR) + "/samples/jargon-llama/tokenizer.model";
  const std::string sp_dir = path("sp");
  fs::create_directory(sp_dir);
  fs::copy_file(sample, sp_dir + "/tokenizer.model");
  const auto sp = open_tokenizer(sp_dir);
  EXPECT_STREQ(sp->kind(), "sentencepiece");
  EXPECT_EQ(sp->files(), std::vector<std::string>{sp_dir + "/tokenizer.model"});
  const auto message = [](const std::string& dir) {
    try {
      open_tokenizer(dir);
    } catch (const Error& e) {
      EXPECT_EQ(e.message().find('\n'), std::string::npos) << e.message();
      return e.message();
    }
    ADD_FAILURE() << dir << " opened";
    return std::string();
  };
  fs::copy_file(sample, path("tokenizer.model"));  // dir_ now holds both kinds
  const std::string both = message(dir_);
  EXPECT_EQ(both.rfind(dir_ + ": holds several tokenizers", 0), 0u) << both;
  for (const char* name : {"tokenizer.model", "vocab.json", "merges.txt"})
    EXPECT_NE(both.find(name), std::string::npos) << both;
  const std::string empty = path("empty");
  fs::create_directory(empty);
  const std::string none = message(empty);
  EXPECT_NE(none.find("holds no tokenizer"), std::string::npos) << none;
  EXPECT_NE(none.find("tokenizer.model"), std::string::npos) << none;
  EXPECT_NE(none.find("vocab.json and merges.txt"), std::string::npos) << none;
  fs::copy_file(path("merges.txt"), empty + "/merges.txt");  // merges without their vocabulary
  EXPECT_NE(message(empty).find(empty + "/vocab.json: missing"), std::string::npos) << message(empty);
}

// SentencePiece ids past its pieces (a padded embedding) decode to nothing, as GPT-2's do.
TEST_F(TokenizerFiles, SentencePieceIdsOutsideTheModelDecodeToNothing) {
  const auto sp = open_tokenizer(std::string(SF_SOURCE_DIR) + "/samples/jargon-llama/tokenizer.model");
  const std::vector<int> ids = sp->encode("hello world");
  ASSERT_GE(ids.size(), 2u);
  const int past = sp->vocab_size();
  EXPECT_EQ(sp->decode({ids[0], past, ids[1], past + 7}), sp->decode({ids[0], ids[1]}));
  EXPECT_EQ(sp->piece_text(ids[0], past), "");
  EXPECT_EQ(sp->piece_text(past, ids[1]), sp->piece_text(-1, ids[1]));
}

TEST_F(TokenizerFiles, ArtifactKindAndFileCountAreChecked) {
  for (const auto& [kind, files, words] :
       std::vector<std::tuple<std::string, std::vector<std::string>, std::string>>{
           {"wordpiece", {path("vocab.json")}, "unknown"},
           {"gpt2_bpe", {path("vocab.json")}, "2 file(s), not 1"},
           {"sentencepiece", {path("a"), path("b")}, "1 file(s), not 2"}}) {
    try {
      open_tokenizer(kind, files, "ART/manifest.json");
      ADD_FAILURE() << kind << " opened";
    } catch (const Error& e) {
      EXPECT_EQ(e.message().rfind("ART/manifest.json: ", 0), 0u) << e.message();
      EXPECT_NE(e.message().find(words), std::string::npos) << e.message();
    }
  }
}

TEST_F(TokenizerFiles, MissingMergesNameTheMergesFile) {
  fs::remove(path("merges.txt"));
  EXPECT_NE(open_error("merges.txt").find("missing"), std::string::npos);
  try {
    open_tokenizer(dir_);
    ADD_FAILURE() << "opened a directory without merges.txt";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("merges.txt"), std::string::npos) << e.message();
  }
}

TEST_F(TokenizerFiles, DamagedVocabulariesAreRefused) {
  const auto with = [](const std::function<void(json&)>& edit) {
    json v = small_vocab();
    edit(v);
    return v.dump();
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{\"a\": 1,", "invalid JSON"},
      {"[1, 2, 3]", "not a GPT-2 vocabulary"},
      {"{}", "not a GPT-2 vocabulary"},
      {with([](json& v) { v["hell"] = 260; }), "ids must be 0 to 259"},
      {with([](json& v) { v["hell"] = -1; }), "ids must be 0 to 259"},
      {with([](json& v) { v["hell"] = uint64_t(1) << 63; }), "ids must be 0 to 259"},
      {with([](json& v) { v["hell"] = 256; }), "is given to both"},
      {with([](json& v) { v["hell"] = 2.5; }), "not an integer"},
      {with([](json& v) { v["hell"] = "258"; }), "not an integer"},
      {with([](json& v) { v.erase("<|endoftext|>"); v["\xc4\xa0x"] = 259; }), "<|endoftext|>"},
      {with([](json& v) { v.erase(shown("\n")); v["x y"] = 10; }), "byte-level alphabet"},
      {with([](json& v) { v.erase(shown("\n")); v["hello"] = 10; }), "no token for the byte 10"},
  };
  for (const auto& [content, words] : cases) {
    write("vocab.json", content);
    EXPECT_NE(open_error("vocab.json").find(words), std::string::npos) << content.substr(0, 80);
  }
}

TEST_F(TokenizerFiles, DamagedMergesAreRefusedWithTheirLine) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"h e\nhe\n", "line 2: expected two tokens separated by one space"},
      {"h e\nh  e\n", "line 2: expected two tokens"},
      {"h e\n e\n", "line 2: expected two tokens"},
      {"h e\nh e \n", "line 2: expected two tokens"},
      {"h e\nx y z\n", "line 2: expected two tokens"},
      {"h e\nhe zz\n", "line 2: \"zz\" is not a token of"},
      {"h e\nh \x01\n", "line 2: \"\x01\" is not a token of"},
      {"h e\nhe l\n", "line 2: merging \"he\" and \"l\" makes a token that is not in"},
      {"#version: 0.2\nh e\nl l\nh e\n", "line 4: the merge \"h e\" appears twice"},
  };
  for (const auto& [content, words] : cases) {
    write("merges.txt", content);
    EXPECT_NE(open_error("merges.txt").find(words), std::string::npos) << content;
  }
  write("merges.txt", "h e\r\nl l\r\n\r\n");  // Windows line ends and a last empty line are fine
  EXPECT_EQ(open_tokenizer(path("vocab.json"))->encode("hell"), (std::vector<int>{256, 257}));
}

TEST_F(TokenizerFiles, AbsurdSizesAreRefusedBeforeReading) {
  for (const char* name : {"vocab.json", "merges.txt"}) {
    write("vocab.json", small_vocab().dump());  // fresh, valid files
    write("merges.txt", kSmallMerges);
    ASSERT_EQ(::truncate(path(name).c_str(), off_t(1) << 40), 0);  // sparse: 1 TiB claimed, nothing written
    EXPECT_NE(open_error(name).find("more than the"), std::string::npos);
  }
}

TEST_F(TokenizerFiles, OtherJsonFilesAreNotTakenForSentencePiece) {
  write("tokenizer.json", "{}");
  try {
    open_tokenizer(path("tokenizer.json"));
    ADD_FAILURE() << "opened tokenizer.json";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("vocab.json"), std::string::npos) << e.message();
  }
}

}  // namespace
}  // namespace sf
