#pragma once
// Small file helpers shared by readers and writers.
#include <cstdint>
#include <string>

namespace sf {

// The whole file (a regular file only, see core/input_file.h); throws Error naming the file,
// also when it is larger than max_bytes.
std::string read_file(const std::string& path, uint64_t max_bytes = uint64_t(1) << 30);
// True for an existing regular file (after symlinks); never opens it.
bool file_exists(const std::string& path);
// True when something exists at path (a FIFO or dangling symlink included): such a file is then
// opened, and the opener names what is wrong with it, instead of it being skipped or reported
// missing without a word.
bool present(const std::string& path);
// True when s ends with suffix.
bool ends_with(const std::string& s, const std::string& suffix);

}  // namespace sf
