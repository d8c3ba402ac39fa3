#include "tokenizers/gpt2_pretokenizer.h"

#include <unicode/uchar.h>

#include <array>

#include "tokenizers/byte_level.h"

namespace sf {

namespace {

enum class CharClass : uint8_t { Space, Letter, Number, Other };

CharClass classify(char32_t cp) {
  if (u_isUWhiteSpace(UChar32(cp))) return CharClass::Space;
  const uint32_t mask = U_GET_GC_MASK(UChar32(cp));
  if (mask & U_GC_L_MASK) return CharClass::Letter;
  if (mask & U_GC_N_MASK) return CharClass::Number;
  return CharClass::Other;
}

// ASCII, the bulk of most texts, from a table built once with the same rule.
const std::array<CharClass, 128>& ascii_classes() {
  static const std::array<CharClass, 128> table = [] {
    std::array<CharClass, 128> t{};
    for (char32_t c = 0; c < 128; ++c) t[c] = classify(c);
    return t;
  }();
  return table;
}

struct Char {
  CharClass cls;
  size_t len;
};

Char char_at(std::string_view s, size_t pos) {
  const uint8_t b = uint8_t(s[pos]);
  if (b < 0x80) return {ascii_classes()[b], 1};
  const Utf8Char c = utf8_at(s, pos);
  return {c.valid ? classify(c.cp) : CharClass::Other, c.len};
}

// The contractions, tried first at an apostrophe: 's 't 're 've 'm 'll 'd (lowercase only, as in
// GPT-2's pattern).
size_t contraction_length(std::string_view s, size_t pos) {
  static constexpr std::string_view kSuffixes[] = {"s", "t", "re", "ve", "m", "ll", "d"};
  const std::string_view rest = s.substr(pos + 1);
  for (std::string_view suffix : kSuffixes)
    if (rest.substr(0, suffix.size()) == suffix) return 1 + suffix.size();
  return 0;
}

// The end of the run of characters of class `cls` starting at pos.
size_t run_end(std::string_view s, size_t pos, CharClass cls) {
  while (pos < s.size()) {
    const Char c = char_at(s, pos);
    if (c.cls != cls) break;
    pos += c.len;
  }
  return pos;
}

}  // namespace

bool Gpt2Pretokenizer::next(std::string_view& piece) {
  const std::string_view s = text_;
  const size_t start = pos_;
  if (start >= s.size()) return false;
  size_t end;
  const Char first = char_at(s, start);
  if (s[start] == '\'' && contraction_length(s, start) > 0) {
    end = start + contraction_length(s, start);
  } else if (first.cls != CharClass::Space) {
    // " ?\p{L}+", " ?\p{N}+", " ?[^\s\p{L}\p{N}]+" without the space: the run of this class.
    end = run_end(s, start + first.len, first.cls);
  } else if (s[start] == ' ' && start + 1 < s.size() && char_at(s, start + 1).cls != CharClass::Space) {
    // The same three with the optional space: a space glues to the run after it.
    end = run_end(s, start + 1, char_at(s, start + 1).cls);
  } else {
    // "\s+(?!\S)": whitespace up to the end of the text, or all but its last character when
    // something follows (that character starts the next piece, e.g. as the space of " word");
    // "\s+" when the run is a single character followed by something.
    size_t last = start, pos = start;
    while (pos < s.size()) {
      const Char c = char_at(s, pos);
      if (c.cls != CharClass::Space) break;
      last = pos;
      pos += c.len;
    }
    end = pos == s.size() || last == start ? pos : last;
  }
  piece = s.substr(start, end - start);
  pos_ = end;
  return true;
}

}  // namespace sf
