// libFuzzer target: a .safetensors file, its header checked and every tensor it accepts converted.
#include <cstddef>
#include <cstdint>

#include "converters/reader_registry.h"
#include "core/error.h"
#include "fuzz_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz_input_file(data, size, ".safetensors");
  try {
    auto src = sf::open_source(path, "safetensors");
    for (const auto& [name, t] : src->tensors)
      if (t.numel() < (1 << 22)) t.to_f32();
  } catch (const sf::Error&) {
  }
  return 0;
}
