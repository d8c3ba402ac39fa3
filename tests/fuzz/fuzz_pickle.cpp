// libFuzzer target: the allow-listed pickle interpreter on arbitrary bytes.
#include <cstddef>
#include <cstdint>

#include "converters/pytorch/pickle_vm.h"
#include "converters/pytorch/torch_checkpoint.h"
#include "core/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sf::pickle;
  const PersistentLoad load = [](const ValuePtr&) {
    auto v = make(Kind::Storage);
    v->storage = std::make_shared<StorageRef>();
    v->storage->numel = 16;
    return v;
  };
  try {
    Tree t = run(data, size, sf::torch_allow_list(), load, "fuzz.pkl");
    if (t.root) sf::pickle_to_json(*t.root);
  } catch (const sf::Error&) {
  }
  return 0;
}
