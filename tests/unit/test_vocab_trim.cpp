// --trim-vocab spec parsing, the keep set of range and ids specs, and vocab_map.bin's encoding and
// validation (docs/format.md).
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/vocab_map.h"
#include "pipeline/vocab_trim.h"

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
  EXPECT_EQ(kept(trim_keep_set(t, 10, nullptr)), (std::vector<int64_t>{0, 1, 2, 5, 7, 8, 9}));
  // Overlapping ranges are a union.
  EXPECT_EQ(kept(trim_keep_set(parse_trim_spec("range:2-4,3-5"), 8, nullptr)), (std::vector<int64_t>{2, 3, 4, 5}));
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
}

TEST(TrimSpec, BadSpecsAreUsageErrors) {
  for (const char* spec : {"", "range", "range:", "range:5-2", "range:a-b", "range:1,,2", "range:-3", "range:1-2-3",
                           "words:1-2", "corpus:", "ids:", "corpus:f.txt:0", "range:99999999999999999"}) {
    SCOPED_TRACE(spec);
    EXPECT_EQ(kind_of([&] { parse_trim_spec(spec); }), ErrorKind::Usage);
  }
  EXPECT_NE(message_of([] { parse_trim_spec("range:5-2"); }).find("backwards"), std::string::npos);
  EXPECT_NE(message_of([] { parse_trim_spec("words:1"); }).find("unknown kind 'words'"), std::string::npos);
}

TEST(TrimSpec, IdsOutsideTheVocabularyAreRefused) {
  EXPECT_EQ(kind_of([] { trim_keep_set(parse_trim_spec("range:0-10"), 10, nullptr); }), ErrorKind::Usage);
  EXPECT_EQ(kind_of([] { trim_keep_set(parse_trim_spec("range:10-"), 10, nullptr); }), ErrorKind::Usage);
  EXPECT_EQ(kind_of([] { trim_keep_set(parse_trim_spec("corpus:x.txt"), 10, nullptr); }), ErrorKind::Usage)
      << "corpus mode without a tokenizer";
}

TEST(TrimSpec, IdsFile) {
  const std::string good = temp_file("4, 2\n9\t2\r\n");
  EXPECT_EQ(kept(trim_keep_set(parse_trim_spec("ids:" + good), 10, nullptr)), (std::vector<int64_t>{2, 4, 9}));
  const std::string outside = temp_file("1 10");
  EXPECT_NE(message_of([&] { trim_keep_set(parse_trim_spec("ids:" + outside), 10, nullptr); }).find(outside + ": id 10"),
            std::string::npos);
  const std::string junk = temp_file("1 two");
  EXPECT_NE(message_of([&] { trim_keep_set(parse_trim_spec("ids:" + junk), 10, nullptr); }).find("'two'"),
            std::string::npos);
  const std::string empty = temp_file(" \n");
  EXPECT_NE(message_of([&] { trim_keep_set(parse_trim_spec("ids:" + empty), 10, nullptr); }).find("no token ids"),
            std::string::npos);
  EXPECT_NE(message_of([] { trim_keep_set(parse_trim_spec("ids:/nonexistent/ids.txt"), 10, nullptr); })
                .find("/nonexistent/ids.txt"),
            std::string::npos);
  for (const auto& f : {good, outside, junk, empty}) std::remove(f.c_str());
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
