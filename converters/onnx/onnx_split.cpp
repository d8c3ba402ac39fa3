#include "converters/onnx/onnx_split.h"

#include <filesystem>
#include <map>
#include <set>

#include "converters/onnx/onnx_proto.h"
#include "core/error.h"
#include "core/input_file.h"

namespace sf {

namespace fs = std::filesystem;

std::vector<std::string> split_graph_files(const std::string& dir, const std::vector<std::string>& onnx_files) {
  std::set<std::string> names;
  for (const auto& f : onnx_files) names.insert(fs::path(f).filename().string());
  if (!names.count("embedding.onnx") || !names.count("head.onnx") || names.size() < 3) return {};
  const size_t blocks = names.size() - 2;
  std::vector<std::string> files = {dir + "/embedding.onnx"};
  for (size_t i = 0; i < blocks; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "block_%03zu.onnx", i);
    if (!names.count(name)) return {};
    files.push_back(dir + "/" + name);
  }
  files.push_back(dir + "/head.onnx");
  return files;
}

std::unique_ptr<onnx::ModelProto> join_split_graphs(const std::vector<std::string>& files) {
  uint64_t bytes = 0;
  for (const auto& f : files) {
    bytes += InputFile(f).size();
    if (bytes > kMaxOnnxFileBytes)
      fail_file(fs::path(f).parent_path().string(), "its unit graphs together exceed " + std::to_string(kMaxOnnxFileBytes) +
                                                        " bytes, one ONNX file's limit");
  }
  auto joined = std::make_unique<onnx::ModelProto>();
  onnx::GraphProto* out = joined->mutable_graph();
  std::map<std::string, std::string> produced;  // an earlier graph's output name -> its joined name
  std::set<std::string> inputs, bound;
  std::vector<std::string> outputs;
  OnnxParseCounts counts;  // the node and field limits hold for the files together
  for (size_t k = 0; k < files.size(); ++k) {
    auto model = parse_onnx_file(files[k], &counts);
    if (k == 0) {
      joined->set_ir_version(model->ir_version());
      *joined->mutable_opset_import() = model->opset_import();
    }
    onnx::GraphProto& g = *model->mutable_graph();
    std::string prefix = "u";  // built in steps: GCC 12 warns falsely (-Wrestrict) on "u" + to_string(k)
    prefix += std::to_string(k);
    prefix += '/';
    std::set<std::string> initializers;
    for (const auto& t : g.initializer()) initializers.insert(t.name());
    std::map<std::string, std::string> rename;
    for (const auto& in : g.input()) {
      if (initializers.count(in.name())) continue;
      if (const auto it = produced.find(in.name()); it != produced.end()) {
        rename[in.name()] = it->second;
        bound.insert(it->second);
      } else if (inputs.insert(in.name()).second) {
        *out->add_input() = in;
        rename[in.name()] = in.name();
      } else {
        rename[in.name()] = in.name();
      }
    }
    const auto joined_name = [&](const std::string& n) {
      if (n.empty()) return n;  // an optional input left out
      const auto it = rename.find(n);
      return it != rename.end() ? it->second : prefix + n;
    };
    for (auto& t : *g.mutable_initializer()) {
      t.set_name(joined_name(t.name()));
      *out->add_initializer() = std::move(t);
    }
    for (auto& n : *g.mutable_node()) {
      for (const auto& a : n.attribute())
        if (a.has_g() || a.graphs_size() > 0)
          fail_file(files[k], "node '" + n.name() + "' holds a subgraph, which a unit graph is not read with", ErrorKind::Unsupported);
      for (auto& i : *n.mutable_input()) i = joined_name(i);
      for (auto& o : *n.mutable_output()) o = joined_name(o);
      n.set_name(prefix + n.name());
      *out->add_node() = std::move(n);
    }
    for (const auto& o : g.output()) {
      const std::string name = joined_name(o.name());
      produced[o.name()] = name;
      const std::string suffix = "_out";
      if (o.name().size() > suffix.size() && o.name().compare(o.name().size() - suffix.size(), suffix.size(), suffix) == 0)
        produced[o.name().substr(0, o.name().size() - suffix.size())] = name;
      outputs.push_back(name);
      onnx::ValueInfoProto v = o;
      v.set_name(name);
      *out->add_value_info() = std::move(v);
    }
  }
  // What no later graph takes is an output of the joined graph (logits, present.N.*).
  for (const auto& name : outputs)
    if (!bound.count(name))
      for (const auto& v : out->value_info())
        if (v.name() == name) *out->add_output() = v;
  return joined;
}

}  // namespace sf
