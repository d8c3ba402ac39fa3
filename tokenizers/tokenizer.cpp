#include "tokenizers/tokenizer.h"

#include <new>

#include "core/error.h"
#include "core/fs_util.h"

namespace sf {

std::vector<int> Tokenizer::encode(const std::string& text) const { return encode_text(text, files_.front()); }

std::vector<int> Tokenizer::encode_file(const std::string& path) const {
  const std::string text = read_file(path, kMaxTextBytes);
  try {
    return encode_text(text, path);
  } catch (const std::bad_alloc&) {
    fail_file(path, "out of memory while tokenizing the text", ErrorKind::IO);
  }
}

}  // namespace sf
