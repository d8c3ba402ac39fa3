#pragma once
// Parsing an ONNX model file with libprotobuf (Debian's libonnx-dev messages), within limits set
// before the parse: a protobuf message is parsed whole, so the file's size, nesting and the number
// of objects it makes are checked first, and a hostile file is refused in bounded time and memory.
#include <cstdint>
#include <memory>
#include <string>

#include "onnx/onnx.pb.h"

namespace sf {

// Past protobuf's own 2 GiB message limit nothing parses; larger models keep their weights as
// external data.
constexpr uint64_t kMaxOnnxFileBytes = (uint64_t(1) << 31) - 1;
// Graph nodes over the model, subgraphs included. A 70B LLaMA export has about 30 000.
constexpr uint64_t kMaxOnnxNodes = 1'000'000;
// Every field occurrence in graphs, nodes, attributes and tensors becomes an object (a message, a
// string) of tens of bytes from as little as two bytes of file: this bounds what the parse allocates.
constexpr uint64_t kMaxOnnxFields = 8'000'000;
// Subgraphs nest (If branches inside If branches); each level is a few protobuf levels.
constexpr int kMaxOnnxGraphDepth = 16;

// Graph nodes and fields parsed so far. Files parsed as one model (a directory of unit graphs)
// share one, so the limits above hold for all of them together.
struct OnnxParseCounts {
  uint64_t nodes = 0;
  uint64_t fields = 0;
};

// Reads and parses `path`; throws Error naming it when it is not a well-formed ONNX model within
// the limits above (counting from `counts`, which it updates, when given).
std::unique_ptr<onnx::ModelProto> parse_onnx_file(const std::string& path, OnnxParseCounts* counts = nullptr);

// True when the first bytes look like an ONNX ModelProto (field 1 ir_version varint, as every
// exporter writes first); cheap, for the reader's probe.
bool looks_like_onnx(const std::string& path);

}  // namespace sf
