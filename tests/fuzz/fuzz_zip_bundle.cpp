// libFuzzer target: a zip bundle (--format zip), checked as verify does (the archive, its entries'
// names, kinds, methods, alignment and sizes against the manifest, every sha256, the artifact's
// structure) and, when intact, opened for the executor and run on two tokens.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "executor/exec_model.h"
#include "executor/session.h"
#include "formats/zip_bundle.h"
#include "fuzz_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz_input_file(data, size, ".zip");
  sf::is_zip_bundle(path);
  if (!sf::verify_zip_bundle(path).empty()) return 0;
  try {
    const sf::ExecModel model(path);
    sf::Session s(model, 2, nullptr);
    const int32_t ids[2] = {0, int32_t(model.desc().vocab_size - 1)};
    s.forward(ids, 2, 1);
  } catch (const sf::Error&) {
  }
  return 0;
}
