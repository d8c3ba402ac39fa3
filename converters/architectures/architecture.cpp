#include "converters/architectures/architecture.h"

#include <algorithm>
#include <set>

#include "core/error.h"

namespace sf {

namespace {

std::string with_index(const std::string& pattern, int64_t i) {
  std::string s = pattern;
  const size_t p = s.find("{i}");
  if (p != std::string::npos) s.replace(p, 3, std::to_string(i));
  return s;
}

// q/k rows of one head in HF order are [x_0 .. x_{h/2-1}, y_0 .. y_{h/2-1}] for pairs (x_i, y_i);
// canonical order interleaves them: [x_0, y_0, x_1, y_1, ...].
void rope_half_to_interleaved(std::vector<float>& w, const std::vector<int64_t>& shape, int64_t heads) {
  const int64_t rows = shape[0], cols = shape.size() > 1 ? shape[1] : 1;
  const int64_t hd = rows / heads, half = hd / 2;
  std::vector<float> out(w.size());
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t part = 0; part < 2; ++part) {
        const int64_t src = h * hd + part * half + i, dst = h * hd + 2 * i + part;
        std::copy_n(&w[size_t(src * cols)], cols, &out[size_t(dst * cols)]);
      }
  w.swap(out);
}

const ArchitectureMap* pick_map(const SourceModel& src, const std::string& arch) {
  const auto& maps = architecture_maps();
  std::vector<const ArchitectureMap*> candidates;
  for (const auto& m : maps) {
    const std::string fam = m.family, full = fam + "/" + m.variant;
    if (arch == "auto" || arch == fam || arch == full) candidates.push_back(&m);
  }
  if (candidates.empty()) {
    std::string known;
    for (const auto& m : maps) known += std::string(known.empty() ? "" : ", ") + m.family + "/" + m.variant;
    fail_usage("--arch: unknown architecture '" + arch + "' (known: auto, " + known + ")");
  }
  // A Hugging Face config names its architecture: it must be one a map serves.
  if (src.config_kind == "hf_config" && src.config.contains("architectures") && src.config["architectures"].is_array() &&
      !src.config["architectures"].empty()) {
    const std::string name = src.config["architectures"][0].is_string() ? src.config["architectures"][0].get<std::string>() : "?";
    for (const auto* m : candidates)
      for (const char* a : m->config_architectures)
        if (name == a) return m;
    fail(src.path + ": unknown architecture '" + name + "' in config.json");
  }
  for (const auto* m : candidates)
    if (src.tensors.count(with_index(m->detect, 0))) return m;
  const std::string example = src.tensors.empty() ? "none" : src.tensors.begin()->first;
  fail(src.path + ": unknown architecture: no known family matches its tensor names (first: '" + example + "')");
}

}  // namespace

std::string config_origin(const SourceModel& src) {
  if (src.config_kind == "hf_config") return "config.json";
  if (src.config_kind == "params_json") return "params.json";
  if (src.config_kind == "model_args") return "the checkpoint's model_args";
  return "the configuration";
}

int64_t config_int(const SourceModel& src, const char* key, int64_t fallback, const char* field) {
  if (!src.config.is_object() || !src.config.contains(key) || src.config[key].is_null()) {
    if (fallback == -1) fail(src.path + ": hyper-parameter '" + key + "' is missing from the model's configuration");
    return fallback;
  }
  const json& v = src.config[key];
  if (!v.is_number_integer()) fail(src.path + ": " + config_origin(src) + ": '" + key + "' is not an integer");
  if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX))
    fail(src.path + ": " + config_origin(src) + ": '" + key + "' is " + v.dump() + ", beyond 64-bit integers");
  const int64_t x = v.get<int64_t>();
  if (field)
    if (const std::string p = ModelDesc::int_problem(field, x); !p.empty())
      fail(src.path + ": " + config_origin(src) + ": '" + key + "' " + p);
  return x;
}

double config_num(const SourceModel& src, const char* key, double fallback, const char* field) {
  if (!src.config.is_object() || !src.config.contains(key) || src.config[key].is_null()) return fallback;
  const json& v = src.config[key];
  if (!v.is_number()) fail(src.path + ": " + config_origin(src) + ": '" + key + "' is not a number");
  const double x = v.get<double>();
  if (field)
    if (const std::string p = ModelDesc::real_problem(field, x); !p.empty())
      fail(src.path + ": " + config_origin(src) + ": '" + key + "' " + p);
  return x;
}

std::string config_string(const SourceModel& src, const char* key, const std::string& fallback) {
  if (!src.config.is_object() || !src.config.contains(key) || src.config[key].is_null()) return fallback;
  const json& v = src.config[key];
  if (!v.is_string()) fail(src.path + ": " + config_origin(src) + ": '" + key + "' is not a string");
  return v.get<std::string>();
}

bool config_bool(const SourceModel& src, const char* key, bool fallback) {
  if (!src.config.is_object() || !src.config.contains(key) || src.config[key].is_null()) return fallback;
  const json& v = src.config[key];
  if (!v.is_boolean()) fail(src.path + ": " + config_origin(src) + ": '" + key + "' is not true or false");
  return v.get<bool>();
}

const CanonicalTensor& CanonicalModel::at(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end()) fail("canonical tensor " + name + " does not exist in this model");
  return it->second;
}

std::vector<float> CanonicalModel::load(const std::string& name) const {
  const CanonicalTensor& t = at(name);
  std::vector<float> w = t.source->to_f32();
  switch (t.transform) {
    case Transform::None: break;
    case Transform::RopeHalfToInterleavedQ: rope_half_to_interleaved(w, t.shape, desc.n_heads); break;
    case Transform::RopeHalfToInterleavedK: rope_half_to_interleaved(w, t.shape, desc.n_kv_heads); break;
  }
  return w;
}

void CanonicalModel::release(const std::string& name) const { at(name).source->release(); }

CanonicalModel map_architecture(const SourceModel& src, const std::string& arch) {
  const ArchitectureMap* map = pick_map(src, arch);
  CanonicalModel cm;
  cm.family = map->family;
  cm.variant = map->variant;
  cm.source = &src;
  cm.desc = map->hyperparams(src);
  // The stated layer count against the layers the tensors hold, before any per-layer work: a
  // configuration saying 10^12 layers must not make us loop or allocate for each of them.
  int64_t held = 0;
  while (held < int64_t(src.tensors.size()) && src.tensors.count(with_index(map->detect, held))) ++held;
  if (cm.desc.n_layers != held)
    fail(src.path + ": " + config_origin(src) + " says " + std::to_string(cm.desc.n_layers) +
         " layers but the checkpoint holds " + std::to_string(held));
  try {
    cm.desc.validate();
  } catch (const Error& e) {
    std::string why = e.message();
    if (why.rfind("model description: ", 0) == 0) why.erase(0, 19);
    fail(src.path + ": " + config_origin(src) + ": " + why);
  }

  std::set<std::string> used;
  for (const char* ign : map->ignored)
    for (int64_t i = 0; i < std::max<int64_t>(cm.desc.n_layers, 1); ++i) used.insert(with_index(ign, i));
  if (cm.desc.tied_embeddings) {
    used.insert(map->output_source);
    // A tied model reads its output from the embedding; a separate stored projection is unused,
    // as in the training framework, but the user should know the file carried one.
    const auto out = src.tensors.find(map->output_source);
    const NameRule* embed_rule = nullptr;
    for (const auto& r : map->rules)
      if (std::string(r.canonical) == "embed.weight") embed_rule = &r;
    const auto embed = embed_rule ? src.tensors.find(embed_rule->source) : src.tensors.end();
    if (out != src.tensors.end() && embed != src.tensors.end() && !out->second.same_data(embed->second))
      cm.warnings.push_back(src.path + ": the model is tied (output = embedding), so the separate " +
                            map->output_source + " in the checkpoint is not used");
  }

  for (const TensorSpec& spec : all_tensors(cm.desc)) {
    // Find the rule whose canonical pattern produces this name.
    const NameRule* rule = nullptr;
    std::string source_name;
    int64_t block = 0;
    if (spec.name.rfind("blocks.", 0) == 0) block = std::stoll(spec.name.substr(7));
    for (const auto& r : map->rules)
      if (with_index(r.canonical, block) == spec.name) {
        rule = &r;
        source_name = with_index(r.source, block);
        break;
      }
    if (!rule) fail(std::string("architecture map ") + map->family + "/" + map->variant + " has no rule for " + spec.name);
    auto it = src.tensors.find(source_name);
    if (it == src.tensors.end()) fail(src.path + ": missing tensor " + source_name + " (canonical " + spec.name + ")");
    if (it->second.shape != spec.shape)
      fail(src.path + ": tensor " + source_name + " has shape " + shape_string(it->second.shape) +
           " but the configuration implies " + shape_string(spec.shape));
    used.insert(source_name);
    cm.tensors[spec.name] = CanonicalTensor{spec.name, &it->second, rule->transform, spec.shape, spec.is_norm};
  }
  for (const auto& [name, t] : src.tensors)
    if (!used.count(name))
      fail(src.path + ": tensor " + name + " is not part of a " + map->family + " model with " +
           std::to_string(cm.desc.n_layers) + " layers (wrong configuration?)");
  return cm;
}

}  // namespace sf
