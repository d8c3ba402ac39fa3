#pragma once
// A file shrunk while it is memory-mapped makes the next read of a lost page raise SIGBUS. Sources
// are read with pread and never fault, but artifacts are executed from their maps. Every map is
// registered here, and a SIGBUS inside one ends the process with the usual one-line error naming
// the file (exit 1) instead of "Bus error" (exit 135). Signal-safe: fixed slots, atomics, write(2).
#include <cstddef>
#include <string>

namespace sf {

// Returns a slot handle for unregister_map (-1 when every slot is taken: the map then simply goes
// unnamed, and a fault in it is reported without a file name).
int register_map(const void* begin, size_t length, const std::string& path);
void unregister_map(int slot);

}  // namespace sf
