#include "pipeline/vocab_trim.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <new>
#include <string_view>

#include "core/error.h"
#include "core/fs_util.h"
#include "core/messages.h"
#include "core/model_desc.h"
#include "tokenizers/tokenizer.h"

namespace sf {

namespace {

constexpr const char* kSyntax = "range:A-B[,C-D...], corpus:FILE[:MIN] or ids:FILE";

[[noreturn]] void bad_spec(const std::string& spec, const std::string& problem) {
  // A spec of a million ranges is quoted by its start only: the message stays one short line.
  constexpr size_t kShown = 80;
  const std::string shown = spec.size() > kShown ? spec.substr(0, kShown) + "..." : spec;
  fail_usage("--trim-vocab '" + printable(shown) + "': " + problem);
}

// A decimal id: digits only, at most ModelDesc::kMaxSize. Empty when `s` is not one.
bool parse_id(const std::string& s, int64_t& out) {
  if (s.empty() || s.size() > 15) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  out = std::strtoll(s.c_str(), nullptr, 10);
  return out <= ModelDesc::kMaxSize;
}

// Ranges in increasing order without overlapping: each id is then marked once, so the work is
// O(vocabulary + ranges) whatever the spec says, and a repeated or misordered range (most likely
// a typing slip) is named instead of silently merged.
std::vector<std::pair<int64_t, int64_t>> parse_ranges(const std::string& spec, const std::string& list) {
  std::vector<std::pair<int64_t, int64_t>> ranges;
  std::string previous;
  size_t start = 0;
  for (;;) {
    if (ranges.size() == kMaxTrimRanges)
      bad_spec(spec, "more than " + std::to_string(kMaxTrimRanges) + " ranges");
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
    if (!ranges.empty() && (ranges.back().second < 0 || a <= ranges.back().second))
      bad_spec(spec, "range " + item + " does not come after range " + previous +
                         " (give ranges in increasing order, without overlapping or repeating)");
    ranges.emplace_back(a, b);
    previous = item;
    if (comma == list.size()) break;
    start = comma + 1;
  }
  return ranges;
}

// What ":MIN" is when the text after a corpus spec's last ':' looks like a number (spaces, a sign,
// digits): then it must be a count from 1 to the most tokens a corpus can hold, and anything else
// is a usage error rather than part of the file name. False when it does not look like one.
bool parse_min_count(const std::string& spec, const std::string& s, int64_t& out) {
  const size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  if (b == std::string::npos) return false;
  const size_t digits = b + (s[b] == '+' || s[b] == '-' ? 1 : 0);
  if (digits > e) return false;
  for (size_t i = digits; i <= e; ++i)
    if (s[i] < '0' || s[i] > '9') return false;
  if (!parse_id(s, out) || out < 1 || uint64_t(out) > kMaxTextBytes)
    bad_spec(spec, "MIN ('" + s + "') must be an integer >= 1 (at most " + std::to_string(kMaxTextBytes) +
                       "); a file whose name ends in ':' and a number is given as corpus:NAME:1");
  return true;
}


// The ranges are increasing and disjoint (parse_ranges): each id is marked at most once.
void keep_ranges(const TrimSpec& spec, int64_t vocab, std::vector<bool>& keep) {
  for (auto [a, b] : spec.ranges) {
    const int64_t last = b < 0 ? vocab - 1 : b;
    if (a >= vocab || last >= vocab)
      fail_usage("--trim-vocab: range " + std::to_string(a) + "-" + (b < 0 ? "" : std::to_string(b)) +
                 " lies outside the vocabulary (ids 0 to " + std::to_string(vocab - 1) + ")");
    for (int64_t id = a; id <= last; ++id) keep[size_t(id)] = true;
  }
}

void keep_listed(const TrimSpec& spec, const std::string& text, int64_t vocab, std::vector<bool>& keep) {
  for (int64_t id : parse_id_list(spec.file, text, vocab)) keep[size_t(id)] = true;
}

void keep_corpus(const TrimSpec& spec, const std::string& text, const ModelDesc& desc, const Tokenizer& tok,
                 std::vector<bool>& keep) {
  const int64_t vocab = desc.vocab_size;
  if (text.empty()) fail_file(spec.file, "is empty: a corpus must hold the text the model is to read");
  if (!is_text(text)) fail_file(spec.file, "is not UTF-8 text (a corpus must be a text file)");
  if (text.find_first_not_of(" \t\n\r\v\f") == std::string::npos)
    fail_file(spec.file, "holds only white space: a corpus must hold the text the model is to read");
  // Counting is all corpus mode needs, so the corpus is tokenized a chunk at a time: memory stays
  // that of one chunk. A token across a chunk boundary may come out split differently than in one
  // pass over the whole text; at most one word per MiB of text, which does not change what is kept
  // in any practical corpus.
  std::vector<int64_t> count(size_t(vocab), 0);
  for (size_t begin = 0, end = 0; begin < text.size(); begin = end) {
    end = corpus_chunk_end(text, begin);
    std::vector<int> ids;
    try {
      ids = tok.encode(text.substr(begin, end - begin));
    } catch (const std::bad_alloc&) {
      fail_file(spec.file, "out of memory while tokenizing the corpus", ErrorKind::IO);
    }
    for (int id : ids)
      if (id >= 0 && id < vocab) ++count[size_t(id)];
  }
  for (size_t id = 0; id < count.size(); ++id)
    if (count[id] >= spec.min_count) keep[id] = true;
  // Ids no corpus can count, kept whatever it says. The tokenizer's reserved ids: special pieces,
  // and the pieces it spells any bytes with, which a text's dropped token is spelt with
  // (validators/model_tokenizer.h), so any text stays encodable exactly.
  for (int id : tok.reserved_ids())
    if (id >= 0 && id < vocab) keep[size_t(id)] = true;
  // The model's own special ids (ChatGLM-6B's [MASK], [gMASK], <sop>), which prompts are framed with.
  for (auto [id, name] : model_special_ids(desc.special))
    if (id < vocab) keep[size_t(id)] = true;
  // Rows past the tokenizer's pieces (ChatGLM2's 65024 rows for a smaller SentencePiece model,
  // padded GPT-2s): the tokenizer never produces them, but the model may use or emit them.
  for (int64_t id = std::max<int64_t>(tok.vocab_size(), 0); id < vocab; ++id) keep[size_t(id)] = true;
}

}  // namespace

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

std::vector<int64_t> parse_id_list(const std::string& file, const std::string& text, int64_t vocab) {
  std::vector<int64_t> ids;
  size_t i = 0;
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
      fail_file(file, std::string("'").append(printable(item.substr(0, 40))) +
                          "' is not a token id (the file lists decimal ids separated by spaces, commas or "
                          "newlines)");
    if (id >= vocab)
      fail_file(file, "id " + item + " is outside the vocabulary (ids 0 to " + std::to_string(vocab - 1) + ")");
    ids.push_back(id);
    i = end;
  }
  if (ids.empty()) fail_file(file, "lists no token ids");
  return ids;
}

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
    // A trailing ":MIN" is the minimum count (a file whose name ends so needs NAME:1).
    const size_t last = rest.rfind(':');
    int64_t min = 0;
    if (last != std::string::npos && parse_min_count(spec, rest.substr(last + 1), min)) {
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

// A line longer than a chunk is cut before a space, so the next chunk starts with the word as the
// tokenizers see words (SentencePiece "▁word", GPT-2 " word").
size_t corpus_chunk_end(const std::string& text, size_t begin) {
  if (text.size() - begin <= kCorpusChunkBytes) return text.size();
  const std::string_view window = std::string_view(text).substr(begin, kCorpusChunkBytes);
  if (const size_t nl = window.rfind('\n'); nl != std::string_view::npos) return begin + nl + 1;
  if (const size_t sp = window.rfind(' '); sp != std::string_view::npos && sp > 0) return begin + sp;
  size_t end = begin + kCorpusChunkBytes;
  while (end > begin + 1 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return end;
}

std::string read_trim_file(const TrimSpec& spec) {
  switch (spec.kind) {
    case TrimSpec::Kind::Range: return "";
    case TrimSpec::Kind::Ids: return read_file(spec.file, kMaxIdsFileBytes);
    case TrimSpec::Kind::Corpus: return read_file(spec.file, kMaxTextBytes);
  }
  return "";
}

std::vector<std::pair<int64_t, const char*>> model_special_ids(const SpecialTokens& special) {
  std::vector<std::pair<int64_t, const char*>> ids;
  for (auto [id, name] : {std::pair{special.mask, "[MASK]"}, {special.gmask, "[gMASK]"}, {special.bos, "<sop>"}})
    if (id >= 0) ids.emplace_back(id, name);
  return ids;
}

std::vector<bool> trim_keep_set(const TrimSpec& spec, const std::string& file_bytes, const ModelDesc& desc,
                                const Tokenizer* tokenizer) {
  std::vector<bool> keep(size_t(desc.vocab_size), false);
  switch (spec.kind) {
    case TrimSpec::Kind::Range: keep_ranges(spec, desc.vocab_size, keep); break;
    case TrimSpec::Kind::Ids: keep_listed(spec, file_bytes, desc.vocab_size, keep); break;
    case TrimSpec::Kind::Corpus:
      if (!tokenizer)
        fail_usage("--trim-vocab corpus:FILE needs the tokenizer: none is beside the source (pass --tokenizer FILE)");
      keep_corpus(spec, file_bytes, desc, *tokenizer, keep);
      break;
  }
  bool any = false;
  for (bool k : keep) any = any || k;
  if (!any) fail_usage("--trim-vocab keeps no ids");
  return keep;
}

}  // namespace sf
