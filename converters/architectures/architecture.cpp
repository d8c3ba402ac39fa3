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

// Within each head (head_dim rows of `cols`), the segment [seg, seg + len) holds pairs (x_i, y_i)
// as [x_0 .. x_{len/2-1}, y_0 .. y_{len/2-1}]; canonical order interleaves them: [x_0, y_0, x_1, ...].
void rotate_half_to_interleaved(std::vector<float>& w, int64_t rows, int64_t cols, int64_t head_dim, int64_t seg,
                                int64_t len) {
  std::vector<float> out(w);
  const int64_t half = len / 2;
  for (int64_t h = 0; h < rows / head_dim; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t part = 0; part < 2; ++part) {
        const int64_t src = h * head_dim + seg + part * half + i, dst = h * head_dim + seg + 2 * i + part;
        std::copy_n(&w[size_t(src * cols)], cols, &out[size_t(dst * cols)]);
      }
  w.swap(out);
}

struct RowRange {
  int64_t start, count;
};

// The rows of a fused source that make part `part`, in order.
std::vector<RowRange> fused_rows(const ModelDesc& d, Fused f, int part) {
  const int64_t hd = d.head_dim, q = d.n_heads * hd, kv = d.n_kv_heads * hd;
  std::vector<RowRange> r;
  switch (f) {
    case Fused::None: break;
    case Fused::QkvStacked: {
      const int64_t starts[] = {0, q, q + kv}, counts[] = {q, kv, kv};
      r.push_back({starts[part], counts[part]});
      break;
    }
    case Fused::GateUpStacked: r.push_back({part * d.ffn_dim, d.ffn_dim}); break;
    case Fused::QkvPerHead:
      for (int64_t h = 0; h < d.n_heads; ++h) r.push_back({(3 * h + part) * hd, hd});
      break;
    case Fused::QkvPerKvGroup: {
      const int64_t g = d.n_heads / d.n_kv_heads;
      for (int64_t j = 0; j < d.n_kv_heads; ++j) {
        const int64_t base = j * (g + 2) * hd;
        if (part == 0) r.push_back({base, g * hd});
        else r.push_back({base + (g + part - 1) * hd, hd});
      }
      break;
    }
  }
  return r;
}

// Rows of the whole fused source (before any transpose).
int64_t fused_total_rows(const ModelDesc& d, Fused f) {
  const int64_t q = d.n_heads * d.head_dim, kv = d.n_kv_heads * d.head_dim;
  switch (f) {
    case Fused::None: return 0;
    case Fused::QkvStacked: case Fused::QkvPerKvGroup: return q + 2 * kv;
    case Fused::QkvPerHead: return 3 * q;
    case Fused::GateUpStacked: return 2 * d.ffn_dim;
  }
  return 0;
}

// The shape the source tensor must have for `rule` to produce `spec`.
std::vector<int64_t> source_shape(const ModelDesc& d, const NameRule& rule, const TensorSpec& spec) {
  std::vector<int64_t> shape = spec.shape;
  if (rule.fused != Fused::None) shape[0] = fused_total_rows(d, rule.fused);
  if (rule.transposed && shape.size() == 2) std::swap(shape[0], shape[1]);
  return shape;
}

std::vector<float> transpose(const std::vector<float>& w, int64_t rows, int64_t cols) {
  std::vector<float> out(w.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) out[size_t(c * rows + r)] = w[size_t(r * cols + c)];
  return out;
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
  // A Hugging Face config names its architecture: it must be one a map serves. Several families
  // can share a class name (ChatGLM-6B and ChatGLM2/3 are all "ChatGLMModel"): the tensor names
  // each variant alone has decide between them.
  if (src.config_kind == "hf_config" && src.config.contains("architectures") && src.config["architectures"].is_array() &&
      !src.config["architectures"].empty()) {
    const std::string name = src.config["architectures"][0].is_string() ? src.config["architectures"][0].get<std::string>() : "?";
    std::vector<const ArchitectureMap*> serving;
    for (const auto* m : candidates)
      for (const char* a : m->config_architectures)
        if (name == a) serving.push_back(m);
    if (serving.empty()) fail(src.path + ": unknown architecture '" + name + "' in config.json");
    if (serving.size() == 1) return serving[0];
    candidates = serving;
  }
  std::vector<const ArchitectureMap*> found;
  for (const auto* m : candidates)
    if (src.tensors.count(with_index(m->detect, 0))) found.push_back(m);
  if (found.size() == 1) return found[0];
  if (found.size() > 1) {
    std::string names;
    for (const auto* m : found) names += std::string(names.empty() ? "" : ", ") + m->family + "/" + m->variant;
    fail(src.path + ": ambiguous architecture: its tensor names match " + names + " (choose one with --arch)");
  }
  const std::string example = src.tensors.empty() ? "none" : src.tensors.begin()->first;
  if (candidates.size() < maps.size()) {
    std::string names;
    for (const auto* m : candidates) names += std::string(names.empty() ? "" : ", ") + m->family + "/" + m->variant;
    fail(src.path + ": tensor names match none of " + names + " (first: '" + example + "')");
  }
  fail(src.path + ": unknown architecture: no known family matches its tensor names (first: '" + example + "')");
}

}  // namespace

std::string config_origin(const SourceModel& src) {
  if (src.config_kind == "hf_config") return "config.json";
  if (src.config_kind == "params_json") return "params.json";
  if (src.config_kind == "model_args") return "the checkpoint's model_args";
  if (src.config_kind == "onnx_graph") return "the hyper-parameters recovered from the ONNX graph";
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

void refuse_config_value(const SourceModel& src, const char* family, const char* key, const std::string& what) {
  // The value is quoted from the file: keep the line short whatever it holds.
  std::string value = src.config.is_object() && src.config.contains(key) ? src.config[key].dump() : "absent";
  if (value.size() > 60) value = value.substr(0, 57) + "...";
  fail(src.path + ": " + config_origin(src) + ": '" + key + "' is " + value + ", but shardforge's " + family +
           " forward has no " + what,
       ErrorKind::Unsupported);
}

void refuse_unmodelled(const SourceModel& src, const char* family, const std::vector<UnmodelledKey>& keys) {
  if (!src.config.is_object()) return;
  for (const UnmodelledKey& k : keys) {
    const auto it = src.config.find(k.key);
    if (it == src.config.end() || it->is_null()) continue;
    if (k.neutral && *it == json::parse(k.neutral)) continue;
    const std::string allowed = k.neutral ? std::string("absent, null or ") + k.neutral : "absent or null";
    refuse_config_value(src, family, k.key, std::string(k.feature) + " (it must be " + allowed + ")");
  }
}

int64_t exact_head_dim(const SourceModel& src, int64_t width, const char* width_key, int64_t heads,
                       const char* heads_key) {
  if (heads <= 0 || width % heads != 0)
    fail(src.path + ": " + config_origin(src) + ": '" + width_key + "' (" + std::to_string(width) +
         ") is not a multiple of '" + heads_key + "' (" + std::to_string(heads) + ")");
  return width / heads;
}

const CanonicalTensor& CanonicalModel::at(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end()) fail("canonical tensor " + name + " does not exist in this model");
  return it->second;
}

std::vector<float> CanonicalModel::load(const std::string& name) const {
  const CanonicalTensor& t = at(name);
  const NameRule& r = *t.rule;
  const std::vector<int64_t> stored = t.source->shape;
  const int64_t cols = t.spec.shape.size() > 1 ? t.spec.shape[1] : 1;
  std::vector<float> w;
  if (r.fused == Fused::None) {
    w = t.source->to_f32();
    if (r.transposed && stored.size() == 2) w = transpose(w, stored[0], stored[1]);
  } else {
    auto it = fused_cache_.find(t.source);
    if (it == fused_cache_.end()) {
      std::vector<float> full = t.source->to_f32();
      if (r.transposed && stored.size() == 2) full = transpose(full, stored[0], stored[1]);
      it = fused_cache_.emplace(t.source, std::move(full)).first;
    }
    w.reserve(size_t(t.spec.shape[0] * cols));
    for (const RowRange& rr : fused_rows(desc, r.fused, r.part)) {
      const auto begin = it->second.begin() + rr.start * cols;
      w.insert(w.end(), begin, begin + rr.count * cols);
    }
  }
  const int64_t rows = t.spec.shape[0];
  switch (r.reorder) {
    case RopeReorder::None: break;
    case RopeReorder::RotateHalf: rotate_half_to_interleaved(w, rows, cols, desc.head_dim, 0, desc.rope_dims); break;
    case RopeReorder::RotateHalfHalves:
      for (int64_t seg = 0; seg < 2; ++seg)
        rotate_half_to_interleaved(w, rows, cols, desc.head_dim, seg * desc.head_dim / 2, desc.head_dim / 2);
      break;
  }
  return w;
}

void CanonicalModel::release(const std::string& name) const {
  const CanonicalTensor& t = at(name);
  fused_cache_.erase(t.source);
  t.source->release();
}

CanonicalModel map_architecture(const SourceModel& src, const std::string& arch) {
  const ArchitectureMap* map = pick_map(src, arch);
  CanonicalModel cm;
  cm.family = map->family;
  cm.variant = map->variant;
  cm.tokenizer_not_reproduced = map->tokenizer_not_reproduced;
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
    for (const auto& r : map->rules)
      if (with_index(r.canonical, spec.layer) == spec.name) {
        rule = &r;
        source_name = with_index(r.source, spec.layer);
        break;
      }
    if (!rule) fail(std::string("architecture map ") + map->family + "/" + map->variant + " has no rule for " + spec.name);
    auto it = src.tensors.find(source_name);
    if (it == src.tensors.end()) fail(src.path + ": missing tensor " + source_name + " (canonical " + spec.name + ")");
    const std::vector<int64_t> want = source_shape(cm.desc, *rule, spec);
    if (it->second.shape != want)
      fail(src.path + ": tensor " + source_name + " has shape " + shape_string(it->second.shape) +
           " but the configuration implies " + shape_string(want));
    used.insert(source_name);
    cm.tensors[spec.name] = CanonicalTensor{spec, &it->second, rule};
  }
  for (const auto& [name, t] : src.tensors)
    if (!used.count(name))
      fail(src.path + ": tensor " + name + " is not part of a " + map->family + " model with " +
           std::to_string(cm.desc.n_layers) + " layers (wrong configuration?)");
  return cm;
}

}  // namespace sf
