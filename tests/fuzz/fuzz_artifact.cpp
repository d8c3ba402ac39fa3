// libFuzzer target: an artifact directory (manifest.json and the files it lists, packed into one
// input as fuzz_file.h describes) opened by Artifact, every tensor's rows decoded, then
// verify_artifact over the same directory.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "core/model_desc.h"
#include "formats/artifact.h"
#include "fuzz_file.h"

namespace {

void decode_every_row(const sf::TensorView& t) {
  if (t.cols() > (1 << 20)) return;
  std::vector<float> row(size_t(t.cols()));
  for (int64_t r = 0; r < t.rows(); ++r)
    sf::qtype_traits(t.type).dequantize_row(t.row(r), size_t(t.cols()), t.group, row.data());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string dir = fuzz_input_dir(data, size);
  try {
    const sf::Artifact a(dir);
    for (const auto& spec : sf::all_tensors(a.desc()))
      if (a.has(spec.name)) decode_every_row(a.tensor(spec.name));
    a.file_bytes();
    a.tokenizer();
  } catch (const sf::Error&) {
  }
  try {
    sf::verify_artifact(dir);
  } catch (const sf::Error&) {
  }
  return 0;
}
