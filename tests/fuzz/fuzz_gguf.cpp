// libFuzzer target: a GGUF file, parsed and validated (GgufFile), its arrays read, opened for the
// executor (description from the metadata, views into the map) and, when that succeeds, run on
// two tokens.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "executor/exec_model.h"
#include "executor/session.h"
#include "formats/gguf/gguf_file.h"
#include "formats/gguf/gguf_model.h"
#include "fuzz_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz_input_file(data, size, ".gguf");
  try {
    const sf::GgufFile f(path);
    for (const auto& [key, v] : f.metadata()) {
      if (v.type != sf::gguf::ValueType::Array) continue;
      if (v.elem == sf::gguf::ValueType::String) f.array_strings(key);
      else if (v.count < (1 << 20)) f.array_numbers(key);
    }
  } catch (const sf::Error&) {
    return 0;
  }
  try {
    const sf::ExecModel model(path);
    sf::Session s(model, 2, nullptr);
    const int32_t ids[2] = {0, int32_t(model.desc().vocab_size - 1)};
    s.forward(ids, 2, 1);
  } catch (const sf::Error&) {
  }
  return 0;
}
