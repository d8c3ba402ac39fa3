#pragma once
// GPT-2's byte-level alphabet and the UTF-8 helpers around it. GPT-2 writes every byte as one
// printable code point, so its vocab.json and merges.txt hold only printable text: the bytes
// '!'..'~', 0xA1..0xAC and 0xAE..0xFF stand for themselves, and the other 68 bytes (controls, space,
// 0x7F..0xA0, 0xAD) become U+0100, U+0101, ... in increasing byte order (Ġ, U+0120, is the space).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sf {

char32_t byte_to_alphabet(uint8_t b);
int alphabet_to_byte(char32_t c);  // the byte shown as c, or -1 when c is not in the alphabet

// One code point of UTF-8 text at s[pos]. Invalid or truncated sequences (overlong forms,
// surrogates, values past U+10FFFF) are one byte long with valid = false.
struct Utf8Char {
  char32_t cp;
  size_t len;
  bool valid;
};
Utf8Char utf8_at(std::string_view s, size_t pos);
void append_utf8(std::string& out, char32_t cp);

// The bytes a vocabulary or merges string stands for; false when it holds a character outside the
// alphabet (or is not valid UTF-8).
bool alphabet_to_bytes(std::string_view shown, std::string& bytes);

}  // namespace sf
