#include "tokenizers/byte_level.h"

#include <array>

namespace sf {

namespace {

bool shown_as_itself(int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); }

struct Alphabet {
  std::array<char32_t, 256> of_byte{};
  std::array<int16_t, 512> byte_of{};  // every code point of the alphabet is below U+0200
  Alphabet() {
    byte_of.fill(-1);
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      of_byte[size_t(b)] = shown_as_itself(b) ? char32_t(b) : next++;
      byte_of[of_byte[size_t(b)]] = int16_t(b);
    }
  }
};

const Alphabet& alphabet() {
  static const Alphabet a;
  return a;
}

}  // namespace

char32_t byte_to_alphabet(uint8_t b) { return alphabet().of_byte[b]; }

int alphabet_to_byte(char32_t c) { return c < 512 ? alphabet().byte_of[c] : -1; }

Utf8Char utf8_at(std::string_view s, size_t pos) {
  const auto byte = [&](size_t i) { return uint8_t(s[i]); };
  const uint8_t b0 = byte(pos);
  if (b0 < 0x80) return {b0, 1, true};
  const Utf8Char bad{b0, 1, false};
  size_t len;
  char32_t cp, min;
  if ((b0 & 0xE0) == 0xC0) len = 2, cp = b0 & 0x1F, min = 0x80;
  else if ((b0 & 0xF0) == 0xE0) len = 3, cp = b0 & 0x0F, min = 0x800;
  else if ((b0 & 0xF8) == 0xF0) len = 4, cp = b0 & 0x07, min = 0x10000;
  else return bad;
  if (s.size() - pos < len) return bad;
  for (size_t i = 1; i < len; ++i) {
    if ((byte(pos + i) & 0xC0) != 0x80) return bad;
    cp = (cp << 6) | (byte(pos + i) & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return bad;
  return {cp, len, true};
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

bool alphabet_to_bytes(std::string_view shown, std::string& bytes) {
  bytes.clear();
  for (size_t pos = 0; pos < shown.size();) {
    const Utf8Char c = utf8_at(shown, pos);
    const int b = c.valid ? alphabet_to_byte(c.cp) : -1;
    if (b < 0) return false;
    bytes += char(b);
    pos += c.len;
  }
  return true;
}

}  // namespace sf
