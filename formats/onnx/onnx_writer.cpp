#include "formats/onnx/onnx_writer.h"

#include <functional>
#include <map>

#include "core/error.h"
#include "core/fs_util.h"
#include "core/input_file.h"
#include "formats/manifest.h"
#include "formats/onnx/onnx_decoder.h"
#include "formats/onnx/onnx_weights.h"
#include "shardforge_version.h"

namespace sf {

using namespace onnx_out;

namespace {

constexpr const char* kGraphName = "model.onnx";
constexpr const char* kDataName = "model.onnx_data";
constexpr uint64_t kAlignment = 4096;  // every initializer starts at a multiple: a runtime may map it
constexpr uint64_t kMaxGraphBytes = uint64_t(256) << 20;

// A decimal offset or length of an external reference; -1 when it is not one.
int64_t decimal(const std::string& s) {
  if (s.empty() || s.size() > 18 || s.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stoll(s);
}

// The graph must parse, and every external reference must name the data file and lie inside it
// at an aligned offset.
void check_graph(const std::string& dir, const std::string& name) {
  const std::string path = dir + "/" + name;
  // The graphs hold no weights (a 70B model's is a few MB): the cap bounds what parsing a damaged
  // or hostile file may allocate.
  const std::string bytes = read_file(path, kMaxGraphBytes);
  onnx::ModelProto m;
  if (!m.ParseFromString(bytes)) fail_file(path, "does not parse as an ONNX model");
  const uint64_t data_size = InputFile(dir + "/" + kDataName).size();
  for (const auto& t : m.graph().initializer()) {
    if (t.data_location() != onnx::TensorProto::EXTERNAL) continue;
    std::string location;
    int64_t off = -1, len = -1;
    for (const auto& e : t.external_data()) {
      if (e.key() == "location") location = e.value();
      if (e.key() == "offset") off = decimal(e.value());
      if (e.key() == "length") len = decimal(e.value());
    }
    if (location != kDataName || off < 0 || len < 0 || uint64_t(off) % kAlignment != 0 || uint64_t(off) > data_size ||
        uint64_t(len) > data_size - uint64_t(off))
      fail_file(path, "initializer " + t.name() + " does not lie inside " + kDataName + " at an aligned offset");
  }
}

// What convert puts in place is checked as verify checks it.
void read_back(const std::string& dir) { check_onnx_output(dir); }

class OnnxWriter : public FormatWriter {
 public:
  OnnxWriter(const OutputTarget& target, const ModelDesc& desc) : desc_(desc), split_(target.split == "blocks"), w_(target) {
    w_.begin_stream(kDataName);
  }

  // Vectors (norms, biases) are used as f32: a quantized one has no per-channel meaning here.
  void check_plan(const std::map<std::string, QType>& types) override {
    for (const auto& t : all_tensors(desc_)) {
      const auto it = types.find(t.name);
      if (it == types.end() || t.shape.size() == 2) continue;
      const QType q = it->second;
      if (q != QType::F32 && q != QType::F16 && q != QType::BF16)
        fail("--format onnx: " + t.name + " is a vector planned as " + qtype_traits(q).name +
                 "; the ONNX writer stores vectors as f32, f16 or bf16",
             ErrorKind::Usage);
    }
  }

  void write_unit(const EncodedUnit& u) override {
    for (const EncodedTensor& t : u.tensors) {
      WrittenWeight ww{t.name, t.type, t.group, t.shape, weight_parts(t)};
      for (WeightPart& p : ww.parts) {
        p.ref = place(p.bytes.data(), p.bytes.size());
        p.bytes = {};
      }
      bytes_ += t.data.size();
      params_ += t.rows() * t.cols();
      weights_[t.name] = std::move(ww);
    }
  }

  const char* format_name() const override { return "onnx"; }
  std::vector<QType> storable_types() const override { return onnx_storable_types(); }
  void add_file(const std::string& name, const std::string& src_path) override { w_.copy_file(name, src_path); }
  void add_bytes(const std::string& name, const std::string& bytes) override {
    w_.write_file(name, std::vector<uint8_t>(bytes.begin(), bytes.end()));
  }

  json finish(json manifest) override {
    Weights w{&weights_, {}, {}};
    if (desc_.positional == PositionalKind::Rope) {
      std::vector<float> cos, sin;
      rope_tables(desc_, rope_rows(desc_), cos, sin);
      w.rope_cos = place(cos.data(), cos.size() * sizeof(float));
      w.rope_sin = place(sin.data(), sin.size() * sizeof(float));
    }
    w_.end_stream();
    json graphs = json::array();
    auto write_graph = [&](const std::string& name, const std::function<void(onnx::GraphProto*)>& build) {
      onnx::ModelProto m;
      m.set_ir_version(kIrVersion);
      m.set_producer_name("shardforge");
      m.set_producer_version(SHARDFORGE_VERSION);
      onnx::OperatorSetIdProto* op = m.add_opset_import();
      op->set_domain("");
      op->set_version(kOpset);
      // The model description travels with each graph too, for a consumer given one file alone.
      for (const auto& [key, value] : {std::pair<std::string, std::string>{"shardforge.model", desc_.to_json().dump()},
                                       {"shardforge.graph", name}}) {
        onnx::StringStringEntryProto* e = m.add_metadata_props();
        e->set_key(key);
        e->set_value(value);
      }
      build(m.mutable_graph());
      std::string bytes;
      if (!m.SerializeToString(&bytes)) fail("--format onnx: the graph of " + name + " could not be serialized");
      w_.write_file(name, std::vector<uint8_t>(bytes.begin(), bytes.end()));
      graphs.push_back(name);
    };
    if (split_) {
      write_graph("embedding.onnx", [&](onnx::GraphProto* g) { embedding_graph(g, desc_, w); });
      for (int64_t i = 0; i < desc_.n_layers; ++i)
        write_graph(unit_name(UnitKind::Block, i) + ".onnx", [&](onnx::GraphProto* g) { block_graph(g, desc_, w, i); });
      write_graph("head.onnx", [&](onnx::GraphProto* g) { head_graph(g, desc_, w); });
    } else {
      write_graph(kGraphName, [&](onnx::GraphProto* g) { whole_graph(g, desc_, w); });
    }
    manifest["onnx"] = {{"graphs", graphs}, {"split", split_ ? "blocks" : "none"}, {"data", kDataName},
                        {"opset", kOpset}, {"ir_version", kIrVersion}, {"alignment", kAlignment},
                        {"rope_rows", rotary() ? rope_rows(desc_) : 0}};
    manifest["summary"] = {{"parameters", params_}, {"tensor_bytes", bytes_},
                           {"bits_per_weight", params_ ? 8.0 * double(bytes_) / double(params_) : 0.0}};
    return w_.commit(std::move(manifest), read_back);
  }

 private:
  bool rotary() const { return desc_.positional == PositionalKind::Rope; }
  ExternalRef place(const void* data, size_t n) {
    w_.pad_to(kAlignment);
    const uint64_t at = w_.append(data, n);
    return {kDataName, at, n};
  }

  ModelDesc desc_;
  bool split_;
  ArtifactWriter w_;
  std::map<std::string, WrittenWeight> weights_;
  uint64_t bytes_ = 0;
  int64_t params_ = 0;
};

}  // namespace

void check_onnx_output(const std::string& dir) {
  const json m = read_manifest(dir);
  for (const auto& g : m.at("onnx").at("graphs")) check_graph(dir, g.get<std::string>());  // names checked by read_manifest
}

std::unique_ptr<FormatWriter> make_onnx_writer(const OutputTarget& target, const ModelDesc& desc) {
  if (!target.split.empty() && target.split != "blocks")
    fail_usage("--split: unknown value '" + target.split + "' (known: blocks)");
  if (const std::string why = unsupported_settings(desc); !why.empty())
    fail("--format onnx: the " + desc.family + " model uses " + why + ", which the ONNX writer does not generate",
         ErrorKind::Unsupported);
  return std::make_unique<OnnxWriter>(target, desc);
}

}  // namespace sf
