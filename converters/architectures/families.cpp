// The table of model families: every map of every family file, in detection order.
#include "converters/architectures/families.h"

namespace sf {

const std::vector<ArchitectureMap>& architecture_maps() {
  static const std::vector<ArchitectureMap> maps = [] {
    std::vector<ArchitectureMap> all;
    for (auto family : {llama_maps, chatglm_maps, internlm2_maps, gpt2_maps})
      for (auto& m : family()) all.push_back(std::move(m));
    return all;
  }();
  return maps;
}

const char* tokenizer_not_reproduced(const std::string& family) {
  for (const auto& m : architecture_maps())
    if (family == m.family) return m.tokenizer_not_reproduced;
  return nullptr;
}

}  // namespace sf
