#pragma once
// Small file helpers shared by readers and writers.
#include <string>

namespace sf {

std::string read_text_file(const std::string& path);  // throws Error naming the file
bool file_exists(const std::string& path);

}  // namespace sf
