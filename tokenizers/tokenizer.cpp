#include "tokenizers/tokenizer.h"

#include <new>

#include "core/error.h"
#include "core/fs_util.h"

namespace sf {

std::vector<int> Tokenizer::encode(const std::string& text) const { return encode_text(text, files_.front()); }

std::string Tokenizer::decode(const std::vector<int>& ids) const {
  std::vector<int> known;
  known.reserve(ids.size());
  for (int id : ids)
    if (is_decodable(id)) known.push_back(id);
  return decode_ids(known);
}

std::string Tokenizer::piece_text(int prev, int id) const {
  if (!is_decodable(id)) return "";
  return piece_text_of(is_decodable(prev) ? prev : -1, id);
}

std::vector<int> Tokenizer::encode_file(const std::string& path) const {
  const std::string text = read_file(path, kMaxTextBytes);
  try {
    return encode_text(text, path);
  } catch (const std::bad_alloc&) {
    fail_file(path, "out of memory while tokenizing the text", ErrorKind::IO);
  }
}

}  // namespace sf
