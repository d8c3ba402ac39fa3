#pragma once
// Architecture maps: for each model family and naming variant, a declarative table from source
// tensor names (with a {i} block placeholder) to canonical names, the transform each needs, and a
// function reading the hyper-parameters. map_architecture() turns a SourceModel into a
// CanonicalModel and checks every shape against the hyper-parameters.
#include <map>
#include <string>
#include <vector>

#include "converters/source_model.h"
#include "core/model_desc.h"

namespace sf {

// How a source tensor becomes the canonical one. Canonical RoPE rotates interleaved pairs
// (2i, 2i+1); Hugging Face checkpoints rotate (i, i + head_dim/2), so their q/k rows are reordered.
enum class Transform { None, RopeHalfToInterleavedQ, RopeHalfToInterleavedK };

struct NameRule {
  const char* canonical;  // "blocks.{i}.attn.q.weight"
  const char* source;     // "model.layers.{i}.self_attn.q_proj.weight"
  Transform transform = Transform::None;
};

struct ArchitectureMap {
  const char* family;   // "llama"
  const char* variant;  // "hf" | "meta"
  std::vector<const char*> config_architectures;  // HF config "architectures" values it serves
  const char* detect;   // a source name ({i} = 0) present only in this variant
  std::vector<NameRule> rules;
  std::vector<const char*> ignored;  // source names carrying no weights (rotary caches)
  ModelDesc (*hyperparams)(const SourceModel&);
  // Source name of the output projection, which may be absent or share the embedding's storage.
  const char* output_source;
};

const std::vector<ArchitectureMap>& architecture_maps();

struct CanonicalTensor {
  std::string name;
  const LazyTensor* source = nullptr;
  Transform transform = Transform::None;
  std::vector<int64_t> shape;
  bool is_norm = false;
};

class CanonicalModel {
 public:
  ModelDesc desc;
  std::string family, variant;
  const SourceModel* source = nullptr;
  std::map<std::string, CanonicalTensor> tensors;
  // Said about the mapping without refusing it (e.g. an output projection the tied configuration
  // leaves unused); `convert` prints them as warnings.
  std::vector<std::string> warnings;

  const CanonicalTensor& at(const std::string& name) const;
  // The canonical tensor's values as row-major f32, transform applied.
  std::vector<float> load(const std::string& name) const;
  void release(const std::string& name) const;
};

// arch: "auto" or "family" or "family/variant".
CanonicalModel map_architecture(const SourceModel& src, const std::string& arch = "auto");

// Shared by families: json lookups that report which key was wrong. With a ModelDesc field name,
// the value is checked against that field's bounds (ModelDesc::int_problem / real_problem) and a
// value out of bounds is refused naming the source's key and the bound.
int64_t config_int(const SourceModel& src, const char* key, int64_t fallback = -1, const char* field = nullptr);
double config_num(const SourceModel& src, const char* key, double fallback, const char* field = nullptr);
std::string config_string(const SourceModel& src, const char* key, const std::string& fallback);
bool config_bool(const SourceModel& src, const char* key, bool fallback);
// "config.json", "params.json", "the checkpoint's model_args": where src.config came from.
std::string config_origin(const SourceModel& src);

}  // namespace sf
