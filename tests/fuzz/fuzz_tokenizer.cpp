// libFuzzer target: a GPT-2 BPE tokenizer directory (vocab.json, merges.txt, and a text file named
// "text", packed into one input as fuzz_file.h describes) opened through the tokenizer factory,
// then the text encoded and decoded. Any bytes must decode back to themselves: a difference is a
// finding (abort), like a crash.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "core/fs_util.h"
#include "fuzz_file.h"
#include "tokenizers/tokenizer_kinds.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string dir = fuzz_input_dir(data, size);
  try {
    const auto tok = sf::open_tokenizer(dir);
    std::string text;
    if (sf::file_exists(dir + "/text")) text = sf::read_file(dir + "/text", sf::kMaxTextBytes);
    const std::vector<int> ids = tok->encode(text);
    if (tok->decode(ids) != text) std::abort();
    std::string streamed;
    for (int id : ids) streamed += tok->piece_text(-1, id);
    if (streamed != text) std::abort();
  } catch (const sf::Error&) {
  }
  return 0;
}
