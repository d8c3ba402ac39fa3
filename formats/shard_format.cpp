#include "formats/shard_format.h"

#include "core/error.h"
#include "formats/artifact_writer.h"
#include "formats/shard_file.h"
#include "formats/zip_sink.h"

namespace sf {

namespace {

// The layout, written to a sink: a directory (--format shards) or a zip bundle (--format zip).
class ShardWriter : public FormatWriter {
 public:
  ShardWriter(std::unique_ptr<ArtifactSink> sink, const char* name) : sink_(std::move(sink)), w_(*sink_), name_(name) {}

  void write_unit(const EncodedUnit& u) override {
    const std::string name = unit_name(u.kind, u.index);
    if (u.kind == UnitKind::Embedding) {
      // The token embedding as raw rows, no header: an edge runtime seeks to row_bytes * token_id.
      // Anything else of the unit (the learned position table) goes to positions.shard.
      std::vector<EncodedTensor> rest;
      const EncodedTensor* token = nullptr;
      for (const auto& t : u.tensors) {
        if (t.name == "embed.weight" && !token) token = &t;
        else rest.push_back(t);
      }
      if (!token) fail("embedding unit has no embed.weight");
      w_.write_file("embedding.bin", token->data);
      json e = {{"file", "embedding.bin"}, {"tensor", token->name}, {"type", qtype_traits(token->type).name},
                {"shape", token->shape}, {"row_bytes", token->row_bytes()}};
      if (qtype_traits(token->type).grouped) e["group"] = token->group;
      units_["embedding"] = e;
      if (!rest.empty()) {
        w_.write_file("positions.shard", encode_shard("positions", rest));
        units_["positions"] = "positions.shard";
      }
    } else {
      const std::string file = name + ".shard";
      w_.write_file(file, encode_shard(name, u.tensors));
      if (u.kind == UnitKind::Block) units_["blocks"].push_back(file);
      else units_["head"] = file;
    }
    for (const auto& t : u.tensors) {
      bytes_ += t.data.size();
      params_ += t.rows() * t.cols();
    }
  }

  const char* format_name() const override { return name_; }
  void add_file(const std::string& name, const std::string& src_path) override { w_.copy_file(name, src_path); }
  void add_bytes(const std::string& name, const std::string& bytes) override {
    w_.write_file(name, std::vector<uint8_t>(bytes.begin(), bytes.end()));
  }

  json finish(json manifest) override {
    manifest["units"] = units_;
    manifest["summary"] = {{"parameters", params_}, {"tensor_bytes", bytes_},
                           {"bits_per_weight", params_ ? 8.0 * double(bytes_) / double(params_) : 0.0}};
    return w_.commit(std::move(manifest));
  }

 private:
  std::unique_ptr<ArtifactSink> sink_;
  ArtifactSink& w_;
  const char* name_;
  json units_ = {{"blocks", json::array()}};
  uint64_t bytes_ = 0;
  int64_t params_ = 0;
};

}  // namespace

std::unique_ptr<FormatWriter> make_shard_writer(const OutputTarget& target, const ModelDesc&) {
  return std::make_unique<ShardWriter>(std::make_unique<ArtifactWriter>(target), "shards");
}

std::unique_ptr<FormatWriter> make_zip_bundle_writer(const OutputTarget& target, const ModelDesc&) {
  return std::make_unique<ShardWriter>(std::make_unique<ZipSink>(target), "zip");
}

}  // namespace sf
