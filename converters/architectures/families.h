#pragma once
// Each family's maps, one function per family file in this folder; families.cpp lists them.
#include <vector>

#include "converters/architectures/architecture.h"

namespace sf {

std::vector<ArchitectureMap> llama_maps();
std::vector<ArchitectureMap> chatglm_maps();  // chatglm (ChatGLM-6B), chatglm2 (ChatGLM2-6B, ChatGLM3-6B)
std::vector<ArchitectureMap> internlm2_maps();
std::vector<ArchitectureMap> gpt2_maps();

}  // namespace sf
