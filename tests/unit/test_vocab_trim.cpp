// --trim-vocab spec parsing, the keep set of range, ids and corpus specs, and vocab_map.bin's
// encoding and validation (docs/format.md).
#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/vocab_map.h"
#include "pipeline/vocab_trim.h"
#include "tokenizers/tokenizer.h"

namespace sf {
namespace {

ErrorKind kind_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.kind();
  }
  ADD_FAILURE() << "no error";
  return ErrorKind::Invalid;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.message();
  }
  return "";
}

std::vector<int64_t> kept(const std::vector<bool>& keep) {
  std::vector<int64_t> ids;
  for (size_t i = 0; i < keep.size(); ++i)
    if (keep[i]) ids.push_back(int64_t(i));
  return ids;
}

ModelDesc desc_of(int64_t vocab) {
  ModelDesc d;
  d.vocab_size = vocab;
  return d;
}

// The keep set of a spec whose file (if any) is read as convert reads it.
std::vector<bool> keep_of(const std::string& spec, int64_t vocab, const Tokenizer* tok = nullptr) {
  const TrimSpec t = parse_trim_spec(spec);
  return trim_keep_set(t, read_trim_file(t), desc_of(vocab), tok);
}

// A tokenizer of 8 pieces: 0 <unk>, 1 <s>, 2 </s> (reserved), 'a' 3, 'b' 4, 'c' 5, any other
// non-space byte 6; spaces give nothing. It records the texts it was given.
class LetterTokenizer : public Tokenizer {
 public:
  LetterTokenizer() : Tokenizer({"letters.model"}) {}
  mutable std::vector<std::string> texts;
  const char* kind() const override { return "letters"; }
  // Decoding is unused here.
  std::string decode_ids(const std::vector<int>&) const override { return ""; }
  std::string piece_text_of(int, int) const override { return ""; }
  int bos() const override { return 1; }
  int eos() const override { return 2; }
  int vocab_size() const override { return 8; }
  bool prompt_starts_with_bos() const override { return true; }
  int unk() const override { return 0; }
  std::string piece(int id) const override { return std::to_string(id); }
  std::vector<int> reserved_ids() const override { return {0, 1, 2}; }
  std::vector<int> byte_spelling(int) const override { return {}; }

 protected:
  std::vector<int> encode_text(const std::string& text, const std::string&) const override {
    texts.push_back(text);
    std::vector<int> ids;
    for (char c : text)
      if (c != ' ' && c != '\n') ids.push_back(c >= 'a' && c <= 'c' ? 3 + (c - 'a') : 6);
    return ids;
  }
};

std::string temp_file(const std::string& content) {
  char name[] = "/tmp/sf-trim-XXXXXX";
  const int fd = ::mkstemp(name);
  EXPECT_GE(fd, 0);
  ::close(fd);
  std::ofstream(name, std::ios::binary) << content;
  return name;
}

TEST(TrimSpec, RangesParse) {
  const TrimSpec t = parse_trim_spec("range:0-2,5,7-");
  ASSERT_EQ(t.kind, TrimSpec::Kind::Range);
  ASSERT_EQ(t.ranges.size(), 3u);
  EXPECT_EQ(t.ranges[0], (std::pair<int64_t, int64_t>{0, 2}));
  EXPECT_EQ(t.ranges[1], (std::pair<int64_t, int64_t>{5, 5}));
  EXPECT_EQ(t.ranges[2], (std::pair<int64_t, int64_t>{7, -1}));  // open end
  EXPECT_EQ(kept(keep_of("range:0-2,5,7-", 10)), (std::vector<int64_t>{0, 1, 2, 5, 7, 8, 9}));
  EXPECT_EQ(kept(keep_of("range:2-4,5-5", 8)), (std::vector<int64_t>{2, 3, 4, 5}));  // adjacent is fine
}

TEST(TrimSpec, RangesMustIncreaseWithoutOverlapping) {
  const std::pair<const char*, const char*> cases[] = {
      {"range:2-4,3-5", "range 3-5 does not come after range 2-4"},   // overlapping
      {"range:2-4,2-4", "range 2-4 does not come after range 2-4"},   // repeated
      {"range:5-6,1-2", "range 1-2 does not come after range 5-6"},   // out of order
      {"range:5-,9", "range 9 does not come after range 5-"},         // past an open end
      {"range:0-,0-", "range 0- does not come after range 0-"}};
  for (const auto& c : cases) {
    const char* spec = c.first;  // a plain variable: lambdas may not capture structured bindings in C++20
    const char* message = c.second;
    SCOPED_TRACE(spec);
    EXPECT_EQ(kind_of([&] { parse_trim_spec(spec); }), ErrorKind::Usage);
    EXPECT_NE(message_of([&] { parse_trim_spec(spec); }).find(message), std::string::npos)
        << message_of([&] { parse_trim_spec(spec); });
  }
}

TEST(TrimSpec, RangeCountIsCappedAndWorkIsLinear) {
  std::string spec = "range:";
  for (size_t i = 0; i < kMaxTrimRanges; ++i) {
    if (i) spec += ',';
    spec += std::to_string(2 * i);
  }
  EXPECT_EQ(parse_trim_spec(spec).ranges.size(), kMaxTrimRanges);
  EXPECT_EQ(kept(keep_of(spec, int64_t(2 * kMaxTrimRanges))).size(), kMaxTrimRanges);
  const std::string one_more = spec + "," + std::to_string(2 * kMaxTrimRanges);
  EXPECT_NE(message_of([&] { parse_trim_spec(one_more); }).find("more than 65536 ranges"), std::string::npos);
  // The reviewer's 400,000 copies of "0-": refused at the second, with a message of one short line.
  std::string copies = "range:0-";
  for (int i = 0; i < 400000; ++i) copies += ",0-";
  const auto start = std::chrono::steady_clock::now();
  const std::string m = message_of([&] { parse_trim_spec(copies); });
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 1.0);
  EXPECT_NE(m.find("range 0- does not come after range 0-"), std::string::npos) << m;
  EXPECT_LT(m.size(), 300u);
}

TEST(TrimSpec, FileKindsAndMinimumCount) {
  TrimSpec t = parse_trim_spec("corpus:/a/b.txt:3");
  EXPECT_EQ(t.kind, TrimSpec::Kind::Corpus);
  EXPECT_EQ(t.file, "/a/b.txt");
  EXPECT_EQ(t.min_count, 3);
  t = parse_trim_spec("corpus:b.txt");
  EXPECT_EQ(t.file, "b.txt");
  EXPECT_EQ(t.min_count, 1);
  t = parse_trim_spec("ids:x:1");  // ids takes no count: the whole rest is the file
  EXPECT_EQ(t.kind, TrimSpec::Kind::Ids);
  EXPECT_EQ(t.file, "x:1");
  // The manifest records base names only, with the count made explicit.
  EXPECT_EQ(recorded_trim_spec("corpus:/a/b.txt", parse_trim_spec("corpus:/a/b.txt")), "corpus:b.txt:1");
  EXPECT_EQ(recorded_trim_spec("ids:/d/k.txt", parse_trim_spec("ids:/d/k.txt")), "ids:k.txt");
  EXPECT_EQ(recorded_trim_spec("range:0-5", parse_trim_spec("range:0-5")), "range:0-5");
  // A suffix that is not number-like is part of the file name.
  EXPECT_EQ(parse_trim_spec("corpus:notes:v2").file, "notes:v2");
  EXPECT_EQ(parse_trim_spec("corpus:a:5:1").file, "a:5");
}

TEST(TrimSpec, MinimumCountThatLooksLikeANumberMustBeOne) {
  for (const char* spec : {"corpus:f.txt:0", "corpus:f.txt:-1", "corpus:f.txt: 2", "corpus:f.txt:2 ",
                           "corpus:f.txt:+3", "corpus:f.txt:999999999999999", "corpus:f.txt:67108865"}) {
    SCOPED_TRACE(spec);
    EXPECT_EQ(kind_of([&] { parse_trim_spec(spec); }), ErrorKind::Usage);
    EXPECT_NE(message_of([&] { parse_trim_spec(spec); }).find("MIN"), std::string::npos);
    EXPECT_NE(message_of([&] { parse_trim_spec(spec); }).find("must be an integer >= 1"), std::string::npos);
  }
  EXPECT_EQ(parse_trim_spec("corpus:f.txt:67108864").min_count, 67108864);
}

TEST(TrimSpec, BadSpecsAreUsageErrors) {
  for (const char* spec : {"", "range", "range:", "range:5-2", "range:a-b", "range:1,,2", "range:-3", "range:1-2-3",
                           "words:1-2", "corpus:", "ids:", "corpus:f.txt:0", "range:99999999999999999",
                           "range:1-2,2-3"}) {
    SCOPED_TRACE(spec);
    EXPECT_EQ(kind_of([&] { parse_trim_spec(spec); }), ErrorKind::Usage);
  }
  EXPECT_NE(message_of([] { parse_trim_spec("range:5-2"); }).find("backwards"), std::string::npos);
  EXPECT_NE(message_of([] { parse_trim_spec("words:1"); }).find("unknown kind 'words'"), std::string::npos);
}

TEST(TrimSpec, IdsOutsideTheVocabularyAreRefused) {
  EXPECT_EQ(kind_of([] { keep_of("range:0-10", 10); }), ErrorKind::Usage);
  EXPECT_EQ(kind_of([] { keep_of("range:10-", 10); }), ErrorKind::Usage);
  EXPECT_EQ(kind_of([] { trim_keep_set(parse_trim_spec("corpus:x.txt"), "abc", desc_of(10), nullptr); }),
            ErrorKind::Usage)
      << "corpus mode without a tokenizer";
}

TEST(TrimSpec, IdsFile) {
  const std::string good = temp_file("4, 2\n9\t2\r\n");
  EXPECT_EQ(kept(keep_of("ids:" + good, 10)), (std::vector<int64_t>{2, 4, 9}));
  const std::string outside = temp_file("1 10");
  EXPECT_NE(message_of([&] { keep_of("ids:" + outside, 10); }).find(outside + ": id 10"),
            std::string::npos);
  const std::string junk = temp_file("1 two");
  EXPECT_NE(message_of([&] { keep_of("ids:" + junk, 10); }).find("'two'"),
            std::string::npos);
  const std::string empty = temp_file(" \n");
  EXPECT_NE(message_of([&] { keep_of("ids:" + empty, 10); }).find("no token ids"),
            std::string::npos);
  EXPECT_NE(message_of([] { keep_of("ids:/nonexistent/ids.txt", 10); })
                .find("/nonexistent/ids.txt"),
            std::string::npos);
  for (const auto& f : {good, outside, junk, empty}) std::remove(f.c_str());
}

TEST(TrimSpec, CorpusKeepsWhatNoCorpusCanCount) {
  const LetterTokenizer tok;
  ModelDesc d = desc_of(12);  // 4 rows past the tokenizer's 8 pieces
  d.special.gmask = 7;        // a model special id the tokenizer never gives
  const TrimSpec t = parse_trim_spec("corpus:c.txt:2");
  // 'a' twice, 'b' once, 'x' (6) twice: MIN 2 keeps 3 and 6, plus reserved 0-2, special 7, 8-11.
  EXPECT_EQ(kept(trim_keep_set(t, "a b a\nx x\n", d, &tok)), (std::vector<int64_t>{0, 1, 2, 3, 6, 7, 8, 9, 10, 11}));
}

TEST(TrimSpec, CorpusOfWhiteSpaceOrNotTextIsRefused) {
  const LetterTokenizer tok;
  const TrimSpec t = parse_trim_spec("corpus:c.txt");
  EXPECT_NE(message_of([&] { trim_keep_set(t, " \n\t \r\n", desc_of(8), &tok); }).find("c.txt: holds only white space"),
            std::string::npos);
  EXPECT_NE(message_of([&] { trim_keep_set(t, "", desc_of(8), &tok); }).find("c.txt: is empty"), std::string::npos);
  EXPECT_NE(message_of([&] { trim_keep_set(t, std::string("a\0b", 3), desc_of(8), &tok); }).find("not UTF-8 text"),
            std::string::npos);
}

TEST(TrimSpec, CorpusIsTokenizedInChunksCutAtLineEnds) {
  // 3.5 MiB of 100-byte lines: every text the tokenizer is given is at most one chunk, ends at a
  // line end (but the last), and together they are the corpus; the counts are the whole text's.
  std::string line(99, 'a');
  line += '\n';
  std::string text;
  while (text.size() < 3 * kCorpusChunkBytes + kCorpusChunkBytes / 2) text += line;
  const LetterTokenizer tok;
  const TrimSpec t = parse_trim_spec("corpus:c.txt:" + std::to_string(text.size() / 100 * 99));
  EXPECT_EQ(kept(trim_keep_set(t, text, desc_of(8), &tok)), (std::vector<int64_t>{0, 1, 2, 3}));
  ASSERT_EQ(tok.texts.size(), 4u);
  std::string joined;
  for (const auto& chunk : tok.texts) {
    EXPECT_LE(chunk.size(), kCorpusChunkBytes);
    joined += chunk;
  }
  EXPECT_EQ(joined, text);
  for (size_t i = 0; i + 1 < tok.texts.size(); ++i) EXPECT_EQ(tok.texts[i].back(), '\n');
}

TEST(TrimSpec, LongLinesAreCutBeforeASpaceOrBetweenCharacters) {
  // One line of words: cut before a space, so each later chunk starts with " word".
  std::string words;
  while (words.size() < 2 * kCorpusChunkBytes + 10) words += "lorem ipsum ";
  size_t end = corpus_chunk_end(words, 0);
  EXPECT_LE(end, kCorpusChunkBytes);
  EXPECT_EQ(words[end], ' ');
  // One "word" of 3-byte characters: cut at a character boundary, never inside one.
  std::string han;
  while (han.size() < 2 * kCorpusChunkBytes) han += "\xe4\xb8\xad";
  for (size_t begin = 0; begin < han.size(); begin = end) {
    end = corpus_chunk_end(han, begin);
    ASSERT_GT(end, begin);
    EXPECT_LE(end - begin, kCorpusChunkBytes);
    EXPECT_EQ(end % 3, 0u);
  }
}

TEST(VocabMap, NumbersKeptIdsInOrder) {
  const VocabMap m = VocabMap::from_keep({false, true, true, false, true});
  EXPECT_EQ(m.old_size(), 5);
  EXPECT_EQ(m.kept(), 3);
  EXPECT_EQ(m.new_id(0), -1);
  EXPECT_EQ(m.new_id(1), 0);
  EXPECT_EQ(m.new_id(4), 2);
  EXPECT_EQ(m.new_id(5), -1);   // past the source vocabulary
  EXPECT_EQ(m.new_id(-1), -1);
  EXPECT_EQ(m.old_id(2), 4);
  EXPECT_THROW(m.old_id(3), Error);
  EXPECT_EQ(m.kept_ranges(), (std::vector<std::pair<int64_t, int64_t>>{{1, 2}, {4, 4}}));
  EXPECT_EQ(describe_ranges(m.kept_ranges()), "1-2, 4");
  // Little-endian int32, -1 for dropped.
  const std::string b = m.bytes();
  const std::string want("\xff\xff\xff\xff\x00\x00\x00\x00\x01\x00\x00\x00\xff\xff\xff\xff\x02\x00\x00\x00", 20);
  EXPECT_EQ(b, want);
  EXPECT_EQ(VocabMap::parse(b, 5, 3, "m"), m);
}

TEST(VocabMap, ParseRefusesWhatIsNotAnIncreasingMap) {
  auto bytes_of = [](std::vector<int32_t> v) {
    std::string s;
    for (int32_t x : v)
      for (int b = 0; b < 4; ++b) s.push_back(char((uint32_t(x) >> (8 * b)) & 0xff));
    return s;
  };
  EXPECT_THROW(VocabMap::parse(bytes_of({0, 1}), 3, 2, "m"), Error);        // wrong size
  EXPECT_THROW(VocabMap::parse(bytes_of({1, 0, -1}), 3, 2, "m"), Error);    // a permutation
  EXPECT_THROW(VocabMap::parse(bytes_of({0, 0, 1}), 3, 2, "m"), Error);     // a repeated id
  EXPECT_THROW(VocabMap::parse(bytes_of({0, 2, -1}), 3, 2, "m"), Error);    // a gap
  EXPECT_THROW(VocabMap::parse(bytes_of({0, -2, 1}), 3, 2, "m"), Error);    // negative other than -1
  EXPECT_THROW(VocabMap::parse(bytes_of({0, 1, -1}), 3, 3, "m"), Error);    // kept count differs
  EXPECT_THROW(VocabMap::parse(bytes_of({-1, -1}), 2, 0, "m"), Error);      // keeps nothing
  EXPECT_NE(message_of([&] { VocabMap::parse(bytes_of({1, 0, -1}), 3, 2, "f.bin"); }).find("f.bin: old id 0"),
            std::string::npos);
  EXPECT_EQ(VocabMap::parse(bytes_of({-1, 0, 1}), 3, 2, "m").old_id(1), 2);
}

}  // namespace
}  // namespace sf
