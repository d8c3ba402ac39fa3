#pragma once
// GPT-2's pre-tokenizer: the text is cut into pieces before BPE, as the regular expression
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// would cut it (leftmost alternative first, each greedy). No regex library on Debian handles
// \p{L}, so the alternatives are matched by hand, with ICU's character properties: letters are
// general category L*, numbers N*, and \s is White_Space. A byte that is not valid UTF-8 counts as
// one character of the "other" class (neither space, letter nor number), so any bytes split and
// round-trip.
#include <cstddef>
#include <string_view>

namespace sf {

class Gpt2Pretokenizer {
 public:
  explicit Gpt2Pretokenizer(std::string_view text) : text_(text) {}
  // The next piece, or false at the end of the text. Pieces cover the text exactly, in order.
  bool next(std::string_view& piece);

 private:
  std::string_view text_;
  size_t pos_ = 0;
};

}  // namespace sf
