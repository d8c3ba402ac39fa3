// inspect SOURCE|ARTIFACT: architecture, hyper-parameters, tensor table, sizes.
#include <filesystem>
#include <iostream>
#include <memory>

#include "cli/common.h"
#include "converters/architectures/architecture.h"
#include "converters/reader_registry.h"
#include "core/fs_util.h"
#include "core/error.h"
#include "core/messages.h"
#include "formats/artifact.h"
#include "formats/artifact_readers.h"
#include "formats/gguf/gguf_file.h"
#include "formats/gguf/gguf_model.h"
#include "formats/manifest.h"

namespace sf::cli {

namespace {

struct InspectOpts {
  std::string path;
  bool json_out = false;
};

// A trimmed artifact's vocabulary: what it kept, and the bytes the dropped rows would have taken
// in the embedding and the output projection as stored (a tied head shares the embedding's rows).
json vocab_trim_info(const Artifact& a) {
  const VocabMap* map = a.vocab_map();
  if (!map) return nullptr;
  const uint64_t dropped = uint64_t(map->old_size() - map->kept());
  const uint64_t embedding = dropped * a.tensor("embed.weight").row_bytes;
  const uint64_t output = a.desc().tied_embeddings ? 0 : dropped * a.tensor("head.output.weight").row_bytes;
  json ranges = json::array();
  for (const auto& [first, last] : map->kept_ranges()) ranges.push_back({first, last});
  return {{"old_vocab_size", map->old_size()}, {"kept", map->kept()}, {"dropped", dropped}, {"kept_ranges", ranges},
          {"embedding_bytes_saved", embedding}, {"output_bytes_saved", output}, {"bytes_saved", embedding + output}};
}

json inspect_artifact(const std::string& dir) {
  const Artifact a = open_model(dir);
  json tensors = json::array();
  for (const auto& spec : all_tensors(a.desc())) {
    const TensorView& t = a.tensor(spec.name);
    json e = {{"name", t.name}, {"role", role_name(spec.role)}, {"type", qtype_traits(t.type).name},
              {"shape", t.shape}, {"bytes", t.nbytes}};
    if (t.group) e["group"] = t.group;
    tensors.push_back(e);
  }
  const json& m = a.manifest();
  return {{"kind", "artifact"}, {"path", dir}, {"model", m["model"]}, {"source", m.value("source", json())},
          {"pipeline", m.value("pipeline", json())}, {"summary", m.value("summary", json())},
          {"file_bytes", a.file_bytes()}, {"vocab_trim", vocab_trim_info(a)}, {"tensors", tensors}};
}

// A metadata value as JSON: scalars as they are, strings made printable (a file's bytes need not be
// UTF-8), arrays as their element type and count (a vocabulary is thousands of entries).
json gguf_value(const GgufValue& v) {
  using gguf::ValueType;
  switch (v.type) {
    case ValueType::String: return printable(v.s);
    case ValueType::Array: return {{"array", gguf::value_type_name(v.elem)}, {"count", v.count}};
    case ValueType::Bool: return v.u != 0;
    case ValueType::F32: case ValueType::F64: return v.f;
    case ValueType::I8: case ValueType::I16: case ValueType::I32: case ValueType::I64: return v.i;
    default: return v.u;
  }
}

json inspect_gguf(const std::string& path) {
  const GgufFile f(path);
  json meta = json::object();
  for (const auto& [k, v] : f.metadata()) meta[printable(k)] = gguf_value(v);
  json tensors = json::array();
  for (const auto& t : f.tensors())
    tensors.push_back({{"name", printable(t.name)}, {"type", gguf::ggml_type_name(t.type)}, {"ggml_type", t.type},
                       {"shape", t.ne}, {"offset", t.offset}, {"bytes", t.bytes}});
  json model = nullptr;
  std::string why;
  try {
    model = gguf_model_desc(f).to_json();
  } catch (const Error& e) {
    why = e.message();
  }
  json info = {{"kind", "gguf"}, {"path", path}, {"version", f.version()}, {"alignment", f.alignment()},
               {"metadata", meta}, {"model", model}, {"file_bytes", f.file_size()}, {"tensors", tensors}};
  if (!why.empty()) info["model_problem"] = why;  // inspect still shows a file shardforge cannot run
  return info;
}

void print_gguf(const json& info) {
  std::cout << "gguf: " << info["path"].get<std::string>() << " (version " << info["version"] << ", alignment "
            << info["alignment"] << ")\n";
  if (info["model"].is_object()) {
    std::cout << "model:";
    for (const auto& [k, v] : info["model"].items()) std::cout << " " << k << "=" << v.dump();
    std::cout << "\n";
  } else {
    std::cout << "model: not one shardforge runs (" << info["model_problem"].get<std::string>() << ")\n";
  }
  std::cout << "\n";
  std::vector<std::vector<std::string>> meta;
  for (const auto& [k, v] : info["metadata"].items()) {
    std::string shown = v.is_string() ? v.get<std::string>() : v.dump();
    if (v.is_object()) {
      shown = "[";
      shown += v["array"].get<std::string>();
      shown += " x ";
      shown += v["count"].dump();
      shown += "]";
    }
    if (shown.size() > 100) shown = shown.substr(0, 97) + "...";
    meta.push_back({k, shown});
  }
  print_table({"key", "value"}, meta);
  std::cout << "\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& t : info["tensors"]) {
    std::string shape;
    for (const auto& d : t["shape"]) {
      if (!shape.empty()) shape += "x";
      shape += d.dump();
    }
    rows.push_back({t["name"].get<std::string>(), t["type"].get<std::string>(), shape,
                    human_bytes(t["bytes"].get<uint64_t>())});
  }
  print_table({"tensor", "type", "shape (ggml order)", "size"}, rows);
  std::cout << "\ntotal: " << human_bytes(info["file_bytes"].get<uint64_t>()) << "\n";
}

json inspect_source(const std::string& path) {
  auto src = open_source(path);
  const CanonicalModel cm = map_architecture(*src);
  json tensors = json::array();
  uint64_t total = 0;
  for (const auto& spec : all_tensors(cm.desc)) {
    const std::string& name = spec.name;
    const CanonicalTensor& t = cm.at(name);
    // Its share of the source: a fused source (q, k and v in one tensor) counts once over its parts.
    uint64_t numel = 1;
    for (int64_t d : spec.shape) numel *= uint64_t(d);
    const uint64_t bytes = numel * dtype_size(t.source->dtype);
    total += bytes;
    tensors.push_back({{"name", name}, {"role", role_name(spec.role)}, {"source_name", t.source->name},
                       {"dtype", dtype_name(t.source->dtype)}, {"shape", spec.shape}, {"bytes", bytes}});
  }
  return {{"kind", "source"}, {"path", path}, {"format", src->format},
          {"architecture", cm.family + "/" + cm.variant}, {"model", cm.desc.to_json()},
          // What convert would take: none for a family whose tokenizer shardforge does not reproduce.
          {"tokenizer", src->tokenizer_path.empty() || cm.tokenizer_not_reproduced ? json(nullptr)
                                                                                   : json(src->tokenizer_path)},
          {"tensor_bytes", total}, {"tensors", tensors}};
}

int run_inspect(const InspectOpts& o) {
  set_current_input(o.path);
  if (is_gguf_file(o.path)) {
    const json info = inspect_gguf(o.path);
    if (o.json_out) print_json(info);
    else print_gguf(info);
    return 0;
  }
  const bool artifact = is_artifact(o.path);
  const json info = artifact ? inspect_artifact(o.path) : inspect_source(o.path);
  if (o.json_out) {
    print_json(info);
    return 0;
  }
  std::cout << info["kind"].get<std::string>() << ": " << o.path << "\n";
  if (!artifact) std::cout << "architecture: " << info["architecture"].get<std::string>() << "\n";
  else {
    // Fields the artifact reader does not need are shown as found, whatever their JSON type.
    const json& src = info["source"];
    const json arch = src.is_object() && src.contains("architecture") ? src["architecture"] : json("?");
    std::cout << "made from: " << (arch.is_string() ? arch.get<std::string>() : arch.dump()) << ", pipeline "
              << info["pipeline"].dump() << "\n";
  }
  std::cout << "model:";
  for (const auto& [k, v] : info["model"].items()) std::cout << " " << k << "=" << v.dump();
  std::cout << "\n";
  if (artifact && info["vocab_trim"].is_object()) {
    const json& v = info["vocab_trim"];
    std::vector<std::pair<int64_t, int64_t>> ranges;
    for (const auto& r : v["kept_ranges"]) ranges.emplace_back(r[0].get<int64_t>(), r[1].get<int64_t>());
    std::cout << "vocabulary: trimmed to " << v["kept"].get<int64_t>() << " of " << v["old_vocab_size"].get<int64_t>()
              << " ids (kept " << describe_ranges(ranges) << "), saving "
              << human_bytes(v["bytes_saved"].get<uint64_t>()) << " (embedding "
              << human_bytes(v["embedding_bytes_saved"].get<uint64_t>()) << ", output projection "
              << (info["model"].value("tied_embeddings", false)
                      ? std::string("tied")
                      : human_bytes(v["output_bytes_saved"].get<uint64_t>()))
              << ")\n";
  }
  std::cout << "\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& t : info["tensors"]) {
    std::string shape;
    for (const auto& d : t["shape"]) shape += (shape.empty() ? "" : "x") + d.dump();
    std::string type = artifact ? t["type"].get<std::string>() : t["dtype"].get<std::string>();
    if (t.contains("group")) type += ":g" + t["group"].dump();
    rows.push_back({t["name"].get<std::string>(), type, shape, human_bytes(t["bytes"].get<uint64_t>())});
  }
  print_table({"tensor", "type", "shape", "size"}, rows);
  const uint64_t total = artifact ? info["file_bytes"].get<uint64_t>() : info["tensor_bytes"].get<uint64_t>();
  std::cout << "\ntotal: " << human_bytes(total) << "\n";
  return 0;
}

}  // namespace

void add_inspect(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<InspectOpts>();
  auto* c = app.add_subcommand("inspect", "Show architecture, hyper-parameters and tensors of a source or artifact");
  c->add_option("path", o->path, "checkpoint file, directory, artifact directory or GGUF file")->required();
  c->add_flag("--json", o->json_out, "print one JSON object");
  c->callback([o, &exit_code] { exit_code = run_inspect(*o); });
}

}  // namespace sf::cli
