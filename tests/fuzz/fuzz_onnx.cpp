// libFuzzer target: an ONNX model directory (model.onnx and its external-data files, packed as
// fuzz_file.h describes), parsed, its weights found by structure and read.
#include <cstddef>
#include <cstdint>
#include <filesystem>

#include "converters/reader_registry.h"
#include "core/error.h"
#include "fuzz_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string dir = fuzz_input_dir(data, size);
  try {
    auto src = sf::open_source(dir, "onnx");
    for (const auto& [name, t] : src->tensors)
      if (t.numel() < (1 << 22)) t.to_f32();
  } catch (const sf::Error&) {
  }
  return 0;
}
