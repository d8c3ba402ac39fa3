#pragma once
// Each family's maps, one function per family file in this folder; families.cpp lists them.
#include <vector>

#include "converters/architectures/architecture.h"

namespace sf {

std::vector<ArchitectureMap> llama_maps();
std::vector<ArchitectureMap> internlm2_maps();
std::vector<ArchitectureMap> gpt2_maps();

}  // namespace sf
