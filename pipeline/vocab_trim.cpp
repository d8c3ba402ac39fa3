#include "pipeline/vocab_trim.h"

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <new>

#include "core/error.h"
#include "core/fs_util.h"
#include "core/messages.h"
#include "core/model_desc.h"
#include "tokenizers/tokenizer.h"

namespace sf {

namespace {

constexpr const char* kSyntax = "range:A-B[,C-D...], corpus:FILE[:MIN] or ids:FILE";
// An ids file is a list of numbers: a few MiB even for the largest vocabularies.
constexpr uint64_t kMaxIdsFileBytes = uint64_t(64) << 20;

[[noreturn]] void bad_spec(const std::string& spec, const std::string& problem) {
  fail_usage("--trim-vocab '" + printable(spec) + "': " + problem);
}

// A decimal id: digits only, at most ModelDesc::kMaxSize. Empty when `s` is not one.
bool parse_id(const std::string& s, int64_t& out) {
  if (s.empty() || s.size() > 15) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  out = std::strtoll(s.c_str(), nullptr, 10);
  return out <= ModelDesc::kMaxSize;
}

std::vector<std::pair<int64_t, int64_t>> parse_ranges(const std::string& spec, const std::string& list) {
  std::vector<std::pair<int64_t, int64_t>> ranges;
  size_t start = 0;
  for (;;) {
    const size_t comma = std::min(list.find(',', start), list.size());
    const std::string item = list.substr(start, comma - start);
    const size_t dash = item.find('-');
    int64_t a = 0, b = 0;
    const std::string first = item.substr(0, dash), last = dash == std::string::npos ? first : item.substr(dash + 1);
    const bool open_end = dash != std::string::npos && last.empty();
    if (!parse_id(first, a) || (!open_end && !parse_id(last, b)))
      bad_spec(spec, "'" + item + "' is not a range (A-B, A- to the end, or one id A)");
    if (open_end) b = -1;
    else if (a > b) bad_spec(spec, "range " + item + " runs backwards (" + first + " > " + last + ")");
    ranges.emplace_back(a, b);
    if (comma == list.size()) break;
    start = comma + 1;
  }
  return ranges;
}

// Valid UTF-8 without NUL bytes: what a text corpus is (a binary file tokenizes into noise).
bool is_text(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == 0) return false;
    const size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    uint32_t cp = len == 1 ? c : c & (0x7F >> len);
    for (size_t k = 1; k < len; ++k) {
      const unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    // Overlong forms, surrogates and code points past U+10FFFF are not UTF-8.
    const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[len] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return false;
    i += len;
  }
  return true;
}

void keep_ranges(const TrimSpec& spec, int64_t vocab, std::vector<bool>& keep) {
  for (auto [a, b] : spec.ranges) {
    const int64_t last = b < 0 ? vocab - 1 : b;
    if (a >= vocab || last >= vocab)
      fail_usage("--trim-vocab: range " + std::to_string(a) + "-" + (b < 0 ? "" : std::to_string(b)) +
                 " lies outside the vocabulary (ids 0 to " + std::to_string(vocab - 1) + ")");
    for (int64_t id = a; id <= last; ++id) keep[size_t(id)] = true;
  }
}

void keep_listed(const TrimSpec& spec, int64_t vocab, std::vector<bool>& keep) {
  const std::string text = read_file(spec.file, kMaxIdsFileBytes);
  size_t i = 0, listed = 0;
  auto separator = [](char c) { return c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (i < text.size()) {
    if (separator(text[i])) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < text.size() && !separator(text[end])) ++end;
    const std::string item = text.substr(i, end - i);
    int64_t id = 0;
    if (!parse_id(item, id))
      fail_file(spec.file, std::string("'").append(printable(item.substr(0, 40))) +
                               "' is not a token id (the file lists decimal ids separated by spaces, commas or "
                               "newlines)");
    if (id >= vocab)
      fail_file(spec.file, "id " + item + " is outside the vocabulary (ids 0 to " + std::to_string(vocab - 1) + ")");
    keep[size_t(id)] = true;
    ++listed;
    i = end;
  }
  if (listed == 0) fail_file(spec.file, "lists no token ids");
}

void keep_corpus(const TrimSpec& spec, int64_t vocab, const Tokenizer& tok, std::vector<bool>& keep) {
  const std::string text = read_file(spec.file, kMaxTextBytes);
  if (text.empty()) fail_file(spec.file, "is empty: a corpus must hold the text the model is to read");
  if (!is_text(text)) fail_file(spec.file, "is not UTF-8 text (a corpus must be a text file)");
  std::vector<int> ids;
  try {
    ids = tok.encode(text);
  } catch (const std::bad_alloc&) {
    fail_file(spec.file, "out of memory while tokenizing the corpus", ErrorKind::IO);
  }
  std::vector<int64_t> count(size_t(vocab), 0);
  for (int id : ids)
    if (id >= 0 && id < vocab) ++count[size_t(id)];
  for (size_t id = 0; id < count.size(); ++id)
    if (count[id] >= spec.min_count) keep[id] = true;
  // So that any text stays encodable: specials, unknown, byte fallback.
  for (int id : tok.reserved_ids())
    if (id < vocab) keep[size_t(id)] = true;
}

}  // namespace

TrimSpec parse_trim_spec(const std::string& spec) {
  const size_t colon = spec.find(':');
  const std::string kind = spec.substr(0, colon), rest = colon == std::string::npos ? "" : spec.substr(colon + 1);
  TrimSpec t;
  if (kind == "range") {
    t.kind = TrimSpec::Kind::Range;
    if (rest.empty()) bad_spec(spec, "range needs ids, e.g. range:0-31999");
    t.ranges = parse_ranges(spec, rest);
  } else if (kind == "ids") {
    t.kind = TrimSpec::Kind::Ids;
    t.file = rest;
  } else if (kind == "corpus") {
    t.kind = TrimSpec::Kind::Corpus;
    t.file = rest;
    // A trailing ":digits" is the minimum count (a file whose name ends so needs ./NAME:1).
    const size_t last = rest.rfind(':');
    int64_t min = 0;
    if (last != std::string::npos && parse_id(rest.substr(last + 1), min)) {
      if (min < 1) bad_spec(spec, "the minimum count must be at least 1");
      t.min_count = min;
      t.file = rest.substr(0, last);
    }
  } else {
    bad_spec(spec, "unknown kind '" + kind + "' (expected " + kSyntax + ")");
  }
  if (t.kind != TrimSpec::Kind::Range && t.file.empty()) bad_spec(spec, kind + " needs a file, e.g. " + kind + ":FILE");
  return t;
}

std::string recorded_trim_spec(const std::string& spec, const TrimSpec& parsed) {
  switch (parsed.kind) {
    case TrimSpec::Kind::Range: return spec;
    case TrimSpec::Kind::Ids: return "ids:" + std::filesystem::path(parsed.file).filename().string();
    case TrimSpec::Kind::Corpus:
      return "corpus:" + std::filesystem::path(parsed.file).filename().string() + ":" +
             std::to_string(parsed.min_count);
  }
  return spec;
}

std::vector<bool> trim_keep_set(const TrimSpec& spec, int64_t vocab, const Tokenizer* tokenizer) {
  std::vector<bool> keep(size_t(vocab), false);
  switch (spec.kind) {
    case TrimSpec::Kind::Range: keep_ranges(spec, vocab, keep); break;
    case TrimSpec::Kind::Ids: keep_listed(spec, vocab, keep); break;
    case TrimSpec::Kind::Corpus:
      if (!tokenizer)
        fail_usage("--trim-vocab corpus:FILE needs the tokenizer: none is beside the source (pass --tokenizer FILE)");
      keep_corpus(spec, vocab, *tokenizer, keep);
      break;
  }
  bool any = false;
  for (bool k : keep) any = any || k;
  if (!any) fail_usage("--trim-vocab keeps no ids");
  return keep;
}

}  // namespace sf
