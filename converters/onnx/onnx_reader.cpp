#include "converters/onnx/onnx_reader.h"

#include <filesystem>

#include "converters/onnx/onnx_dequant.h"
#include "converters/onnx/onnx_graph.h"
#include "converters/onnx/onnx_proto.h"
#include "converters/onnx/onnx_split.h"
#include "converters/onnx/onnx_structure.h"
#include "converters/onnx/onnx_tensors.h"
#include "converters/source_dir.h"
#include "core/error.h"
#include "core/fs_util.h"
#include "core/json_util.h"

namespace sf {

namespace fs = std::filesystem;

namespace {

constexpr const char* kOnnxExtension = ".onnx";

std::vector<std::string> onnx_in(const std::string& dir) {
  std::vector<std::string> found;
  for (const auto& p : directory_entries(dir))
    if (std::error_code ec; p.extension() == kOnnxExtension && !fs::is_directory(p, ec)) found.push_back(p.string());
  return found;
}

// Every initializer of the graph and of the subgraphs its nodes carry (If branches), by name.
void collect_initializers(onnx::GraphProto& g, int depth, ExternalFiles& external, const std::string& file,
                          std::map<std::string, LazyTensor>& out) {
  if (depth > kMaxOnnxGraphDepth) fail_file(file, "subgraphs nest deeper than " + std::to_string(kMaxOnnxGraphDepth) + " levels");
  if (g.sparse_initializer_size() > 0)
    fail_file(file, "sparse initializer " + g.sparse_initializer(0).values().name() + " is not supported", ErrorKind::Unsupported);
  for (auto& t : *g.mutable_initializer()) {
    LazyTensor lt = onnx_initializer(t, external, file);
    const std::string name = lt.name;
    if (!out.emplace(name, std::move(lt)).second) fail_file(file, "initializer '" + name + "' is defined twice");
  }
  for (auto& n : *g.mutable_node())
    for (auto& a : *n.mutable_attribute()) {
      if (a.has_g()) collect_initializers(*a.mutable_g(), depth + 1, external, file, out);
      for (auto& sub : *a.mutable_graphs()) collect_initializers(sub, depth + 1, external, file, out);
    }
}

}  // namespace

bool onnx_probe(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return !onnx_in(path).empty();
  return ends_with(path, kOnnxExtension) || looks_like_onnx(path);
}

std::unique_ptr<SourceModel> onnx_open(const std::string& path) {
  std::error_code ec;
  std::string file = path;
  std::vector<std::string> units;  // a directory of unit graphs (onnx_split.h)
  if (fs::is_directory(path, ec)) {
    const auto found = onnx_in(path);
    if (found.empty()) fail_file(path, "directory holds no .onnx model");
    units = split_graph_files(path, found);
    if (found.size() > 1 && units.empty())
      fail_file(path, "directory holds several .onnx files that are not one graph per unit (embedding.onnx, "
                      "block_000.onnx …, head.onnx); name one");
    file = units.empty() ? found[0] : units[0];
  }
  const std::string dir = parent_dir(file);
  auto proto = units.empty() ? parse_onnx_file(file) : join_split_graphs(units);
  auto m = std::make_unique<SourceModel>();
  m->path = path;
  m->format = "onnx";
  ExternalFiles external(file);
  std::map<std::string, LazyTensor> initializers;
  collect_initializers(*proto->mutable_graph(), 0, external, file, initializers);
  if (units.empty()) m->files.push_back(file);
  for (const auto& u : units) m->files.push_back(u);
  for (const auto& p : external.paths()) m->files.push_back(p);
  fold_dequantized_weights(*proto->mutable_graph(), initializers, file);
  const OnnxGraph graph(proto->graph(), initializers, file);
  const json hf_config = present(dir + "/config.json") ? read_json_file(dir + "/config.json") : json();
  recover_structure(*m, graph, hf_config);
  find_tokenizer(*m, dir);
  return m;
}

}  // namespace sf
