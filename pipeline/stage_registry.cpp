#include "core/error.h"
#include "pipeline/stage.h"
#include "pipeline/stages.h"

namespace sf {

const std::vector<StageEntry>& stage_registry() {
  static const std::vector<StageEntry> table = {
      {"load", "read the unit's tensors from the source as f32 (transforms applied)", make_load_stage},
      {"quantize", "encode each tensor with the scheme the policy picks", make_quantize_stage},
      {"write", "hand the encoded unit to the output format", make_write_stage},
  };
  return table;
}

std::unique_ptr<Stage> make_stage(const std::string& name, const json& params) {
  std::string known;
  for (const auto& e : stage_registry()) {
    if (name == e.name) return e.make(params);
    known += std::string(known.empty() ? "" : ", ") + e.name;
  }
  fail("unknown pipeline stage '" + name + "' (known: " + known + ")");
}

std::vector<std::unique_ptr<Stage>> make_pipeline(const json& spec) {
  if (!spec.is_object() || !spec.contains("stages") || !spec["stages"].is_array())
    fail("pipeline: expected {\"stages\": [...]}");
  std::vector<std::unique_ptr<Stage>> out;
  for (const auto& s : spec["stages"]) {
    if (!s.is_object() || !s.contains("name") || !s["name"].is_string()) fail("pipeline: every stage needs a name");
    out.push_back(make_stage(s["name"].get<std::string>(), s.value("params", json::object())));
  }
  if (out.empty() || out.back()->name() != "write") fail("pipeline: the last stage must be 'write'");
  return out;
}

}  // namespace sf
