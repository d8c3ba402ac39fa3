// libFuzzer target: the .shard reader, and decoding every row of every tensor it accepts.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "formats/shard_file.h"
#include "fuzz_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz_input_file(data, size, ".shard");
  try {
    sf::ShardFile f(path);
    for (const auto& t : f.tensors()) {
      if (t.cols() > (1 << 20)) continue;
      std::vector<float> row(size_t(t.cols()));
      for (int64_t r = 0; r < t.rows(); ++r)
        sf::qtype_traits(t.type).dequantize_row(t.row(r), size_t(t.cols()), t.group, row.data());
    }
  } catch (const sf::Error&) {
  }
  return 0;
}
