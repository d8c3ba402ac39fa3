#pragma once
// One .safetensors file: an 8-byte little-endian header length, a JSON header naming every tensor's
// dtype, shape and byte range, then the data. The file is memory-mapped and its tensors are read in
// place; the header is checked in full before any tensor is handed out.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "converters/source_model.h"

namespace sf {

// A header longer than this is refused before it is read (real ones are kilobytes to a few MiB).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = uint64_t(100) << 20;

struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range in the file (data_offsets moved past the header)
};

struct SafetensorsHeader {
  uint64_t data_start = 0;  // 8 + header length
  std::vector<SafetensorsEntry> entries;
  std::map<std::string, std::string> metadata;  // "__metadata__"
};

// Checks the header of a whole file held in memory (`file`, `size` bytes): the length is bounded
// (at most kMaxSafetensorsHeaderBytes and inside the file), the JSON is an object (depth-limited),
// every dtype is one shardforge reads, every dimension is non-negative with a product that fits,
// every [begin, end) lies inside the data, spans exactly numel x element size bytes and overlaps
// no other tensor, and __metadata__ maps strings to strings. Throws Error "path: problem".
SafetensorsHeader parse_safetensors_header(const uint8_t* file, uint64_t size, const std::string& path);

// The file's tensors, each over a storage that copies from the file's map (registered with
// core/map_fault.h, so a file truncated while mapped ends the run with one line, not SIGBUS).
std::map<std::string, LazyTensor> read_safetensors(const std::string& path);

// True when the file begins like a safetensors file: a header length that fits the file, then '{'.
bool looks_like_safetensors(const std::string& path);

}  // namespace sf
