#include "converters/onnx/onnx_proto.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/wire_format_lite.h>

#include <algorithm>

#include "core/error.h"
#include "core/input_file.h"

namespace sf {

namespace {

using google::protobuf::io::CodedInputStream;
using google::protobuf::internal::WireFormatLite;

// The message kinds the pre-scan descends into, and which of their fields hold which kind (field
// numbers from onnx.proto). Fields not listed are counted and skipped.
enum class Msg { Model, Graph, Node, Attribute, Tensor, Function, Other };
struct SubField {
  Msg parent;
  int field;
  Msg child;
};
constexpr SubField kSubFields[] = {
    {Msg::Model, 7, Msg::Graph},        {Msg::Model, 25, Msg::Function},    {Msg::Graph, 1, Msg::Node},
    {Msg::Graph, 5, Msg::Tensor},       {Msg::Graph, 15, Msg::Other},       {Msg::Node, 5, Msg::Attribute},
    {Msg::Attribute, 5, Msg::Tensor},   {Msg::Attribute, 6, Msg::Graph},    {Msg::Attribute, 10, Msg::Tensor},
    {Msg::Attribute, 11, Msg::Graph},   {Msg::Function, 7, Msg::Node},      {Msg::Function, 11, Msg::Attribute},
};

Msg child_kind(Msg parent, int field) {
  for (const auto& s : kSubFields)
    if (s.parent == parent && s.field == field) return s.child;
  return Msg::Other;
}

// Walks one message's wire format with protobuf's own reader, counting fields and nodes; refuses
// before the counts pass their limits. Returns false when the bytes are not a valid message.
bool scan(CodedInputStream& in, uint64_t total, Msg kind, int depth, OnnxParseCounts& c, const std::string& path) {
  if (depth > 4 * kMaxOnnxGraphDepth) fail_file(path, "subgraphs nest deeper than " + std::to_string(kMaxOnnxGraphDepth) + " levels");
  while (true) {
    const uint32_t tag = in.ReadTag();
    if (tag == 0) return in.ConsumedEntireMessage();
    if (++c.fields > kMaxOnnxFields)
      fail_file(path, "holds more than " + std::to_string(kMaxOnnxFields) + " protobuf fields in its graphs");
    const int field = WireFormatLite::GetTagFieldNumber(tag);
    const Msg child = child_kind(kind, field);
    if (child == Msg::Node && ++c.nodes > kMaxOnnxNodes)
      fail_file(path, "has more than " + std::to_string(kMaxOnnxNodes) + " graph nodes");
    if (child == Msg::Other || WireFormatLite::GetTagWireType(tag) != WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      if (!WireFormatLite::SkipField(&in, tag)) return false;
      continue;
    }
    uint32_t length = 0;
    if (!in.ReadVarint32(&length)) return false;
    if (uint64_t(length) > total - uint64_t(in.CurrentPosition())) return false;  // runs past the file
    const auto limit = in.PushLimit(int(length));
    if (!scan(in, total, child, depth + 1, c, path)) return false;
    in.PopLimit(limit);
  }
}

// The file as protobuf's input stream, read with pread a block at a time: the parse holds the
// message it builds, never a second copy of the file. A read error ends the stream and is kept.
class PreadStream : public google::protobuf::io::CopyingInputStream {
 public:
  explicit PreadStream(const InputFile& f) : f_(f) {}
  int Read(void* buffer, int size) override {
    const uint64_t n = std::min<uint64_t>(uint64_t(size), f_.size() - pos_);
    if (n == 0) return 0;
    try {
      f_.read_at(pos_, buffer, n);
    } catch (const Error& e) {
      error_ = e.message();
      return -1;
    }
    pos_ += n;
    return int(n);
  }
  const std::string& error() const { return error_; }

 private:
  const InputFile& f_;
  uint64_t pos_ = 0;
  std::string error_;
};

}  // namespace

bool looks_like_onnx(const std::string& path) {
  const InputFile f(path);
  uint8_t head[2] = {};
  if (f.size() < 2) return false;
  f.read_at(0, head, 2);
  // Tag of field 1 (ir_version) as a varint, then a small version number.
  return head[0] == 0x08 && head[1] > 0 && head[1] < 0x40;
}

std::unique_ptr<onnx::ModelProto> parse_onnx_file(const std::string& path, OnnxParseCounts* counts) {
  const InputFile f(path);
  if (f.size() == 0) fail_file(path, "is empty");
  if (f.size() > kMaxOnnxFileBytes)
    fail_file(path, "is " + std::to_string(f.size()) + " bytes, past protobuf's 2 GiB message limit (larger models keep "
                    "their weights as external data)");
  // Two passes over the file: the pre-scan counts before anything is built, then the parse.
  {
    PreadStream raw(f);
    google::protobuf::io::CopyingInputStreamAdaptor stream(&raw);
    CodedInputStream in(&stream);
    in.SetRecursionLimit(8 * kMaxOnnxGraphDepth);
    OnnxParseCounts own;
    const bool ok = scan(in, f.size(), Msg::Model, 0, counts ? *counts : own, path);
    if (!raw.error().empty()) fail(raw.error());
    if (!ok) fail_file(path, "is not a valid ONNX protobuf (truncated or damaged)");
  }
  auto model = std::make_unique<onnx::ModelProto>();
  PreadStream raw(f);
  google::protobuf::io::CopyingInputStreamAdaptor stream(&raw);
  CodedInputStream in(&stream);
  in.SetRecursionLimit(8 * kMaxOnnxGraphDepth);
  const bool ok = model->ParseFromCodedStream(&in) && in.ConsumedEntireMessage();
  if (!raw.error().empty()) fail(raw.error());
  if (!ok) fail_file(path, "is not a valid ONNX protobuf (truncated or damaged)");
  if (!model->has_graph()) fail_file(path, "holds no graph");
  return model;
}

}  // namespace sf
