#pragma once
// Architecture maps: for each model family and naming variant, a declarative table from source
// tensor names (with a {i} block placeholder) to canonical names, how each is cut out of its source
// (fused rows, transposed, RoPE layout), and a function reading the hyper-parameters. Each family
// is one file in this folder (docs/adding-a-model-family.md). map_architecture() turns a SourceModel into a
// CanonicalModel and checks every shape against the hyper-parameters.
#include <map>
#include <string>
#include <vector>

#include "converters/source_model.h"
#include "core/model_desc.h"

namespace sf {

// Which rows of a fused source tensor a canonical tensor takes. A fused source is read once per
// unit and sliced for each of its canonical tensors (CanonicalModel::load caches it until release).
//   QkvStacked     rows [all q heads | k heads | v heads] (ChatGLM2, GPT-2's c_attn once transposed)
//   QkvPerHead     rows [heads][q, k, v][head_dim]      (ChatGLM-6B's query_key_value)
//   QkvPerKvGroup  rows [kv heads][its q heads.., k, v][head_dim]  (InternLM2's wqkv)
//   GateUpStacked  rows [gate | up]                      (ChatGLM2's dense_h_to_4h)
enum class Fused { None, QkvStacked, QkvPerHead, QkvPerKvGroup, GateUpStacked };

// Reordering of q/k rows into the canonical RoPE layout (interleaved pairs 2i, 2i+1):
//   RotateHalf        pairs (i, i + rope_dims/2) within the first rope_dims of each head (Hugging Face)
//   RotateHalfHalves  pairs (i, i + head_dim/4) within each half of each head (ChatGLM-6B's 2-D RoPE)
// Any other tensor (v, biases of v) takes None. q and k are reordered alike, so scores are unchanged.
enum class RopeReorder { None, RotateHalf, RotateHalfHalves };

struct NameRule {
  const char* canonical;  // "blocks.{i}.attn.q.weight"
  const char* source;     // "model.layers.{i}.self_attn.q_proj.weight"
  RopeReorder reorder = RopeReorder::None;
  Fused fused = Fused::None;
  int part = 0;             // which part of the fused source: q/k/v = 0/1/2, gate/up = 0/1
  bool transposed = false;  // stored [in, out] (GPT-2 Conv1D): transposed before slicing
};

struct ArchitectureMap {
  const char* family;   // "llama"
  const char* variant;  // "hf" | "meta"
  std::vector<const char*> config_architectures;  // HF config "architectures" values it serves
  const char* detect;   // a source name ({i} = 0) present only in this variant
  std::vector<NameRule> rules;
  // Source names carrying nothing the forward uses (rotary caches, attention-mask buffers): dropped.
  std::vector<const char*> ignored;
  ModelDesc (*hyperparams)(const SourceModel&);
  // Source name of the output projection, which may be absent or share the embedding's storage.
  const char* output_source;
  // Whether shardforge's tokenizer kinds (tokenizers/tokenizer_kinds.h) reproduce the family's
  // tokenizer: nullptr when it is a plain SentencePiece model or GPT-2 BPE that they read as the
  // original does; otherwise why not, for messages. `convert` then takes no tokenizer for the
  // family (none beside the checkpoint, and --tokenizer is refused): prompts are given as ids.
  const char* tokenizer_not_reproduced;
};

const std::vector<ArchitectureMap>& architecture_maps();
// The family's tokenizer_not_reproduced (desc.family names it); nullptr for a family whose
// tokenizer shardforge reproduces, or one it does not know.
const char* tokenizer_not_reproduced(const std::string& family);

struct CanonicalTensor {
  TensorSpec spec;
  const LazyTensor* source = nullptr;
  const NameRule* rule = nullptr;
};

class CanonicalModel {
 public:
  ModelDesc desc;
  std::string family, variant;
  const char* tokenizer_not_reproduced = nullptr;  // the map's
  const SourceModel* source = nullptr;
  std::map<std::string, CanonicalTensor> tensors;
  // Said about the mapping without refusing it (e.g. an output projection the tied configuration
  // leaves unused); `convert` prints them as warnings.
  std::vector<std::string> warnings;

  const CanonicalTensor& at(const std::string& name) const;
  // The canonical tensor's values as row-major f32: the source (or its slice) in canonical layout.
  // A fused source stays cached until release() of any tensor taken from it.
  std::vector<float> load(const std::string& name) const;
  void release(const std::string& name) const;

 private:
  mutable std::map<const LazyTensor*, std::vector<float>> fused_cache_;
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

// A configuration key naming a feature the family's forward does not model (sliding-window
// attention, RoPE scaling, ...). Each family lists its own in a small table; the source is refused
// unless the key is absent, null, or the value that switches the feature off.
struct UnmodelledKey {
  const char* key;      // "sliding_window"
  const char* neutral;  // JSON text of the value meaning "off" ("false", "1"), or nullptr: only null
  const char* feature;  // "sliding-window attention", for the message
};
// Refuses (one line naming the file, the key, its value and the feature) the first key of `keys`
// that is set to anything but null or its neutral value.
void refuse_unmodelled(const SourceModel& src, const char* family, const std::vector<UnmodelledKey>& keys);
// "SOURCE: config.json: 'KEY' is VALUE, but shardforge's FAMILY forward has no WHAT" (Unsupported).
[[noreturn]] void refuse_config_value(const SourceModel& src, const char* family, const char* key,
                                      const std::string& what);

// width / heads for a family that derives head_dim from them, refused naming both keys unless the
// division is exact (both already checked positive by config_int).
int64_t exact_head_dim(const SourceModel& src, int64_t width, const char* width_key, int64_t heads,
                       const char* heads_key);

}  // namespace sf
