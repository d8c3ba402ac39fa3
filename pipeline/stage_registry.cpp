#include <algorithm>

#include "core/error.h"
#include "pipeline/calibrate_stage.h"
#include "pipeline/stage.h"
#include "pipeline/stages.h"

namespace sf {

namespace {

// One calib_<method> stage per row of calib_methods(): a method added there is a stage here.
std::vector<StageEntry> with_calibration_stages(std::vector<StageEntry> table) {
  static std::vector<std::string> names, descriptions;  // the entries' strings, kept for the table's life
  const auto& methods = calib_methods();
  names.reserve(methods.size());
  descriptions.reserve(methods.size());
  for (const auto& m : methods) {
    names.push_back(calibrate_stage_name(m.method));
    descriptions.push_back(std::string("calibrated encoding of block linears (") + m.name + "): " + m.description);
    const CalibMethod method = m.method;
    table.push_back({names.back().c_str(), descriptions.back().c_str(), calibrate_stage_params(),
                     [method](const json& p) { return make_calibrate_stage(method, p); }});
  }
  return table;
}

}  // namespace

const std::vector<StageEntry>& stage_registry() {
  static const std::vector<StageEntry> table = with_calibration_stages({
      {"load", "read the unit's tensors from the source as f32 (transforms applied)", {}, make_load_stage},
      {"quantize", "encode each tensor with the scheme the policy picks",
       {"scheme", "overrides", "allow_non_finite"}, make_quantize_stage},
      {"write", "hand the encoded unit to the output format", {}, make_write_stage},
      {"trim_vocab", "keep only some token ids: rows of the embedding and output projection, vocab_map.bin",
       {"spec", "file_sha256"}, make_trim_vocab_stage},
  });
  return table;
}

namespace {

std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s.empty() ? "none" : s;
}

// Every key of `object` must be one of `allowed`: a misspelt key would otherwise be ignored.
void refuse_unknown_keys(const json& object, const std::vector<std::string>& allowed, const std::string& what) {
  for (const auto& [key, value] : object.items())
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end())
      fail_usage(what + ": unknown parameter '" + key + "' (takes: " + joined(allowed) + ")");
}

}  // namespace

std::unique_ptr<Stage> make_stage(const std::string& name, const json& params) {
  std::vector<std::string> known;
  for (const auto& e : stage_registry()) {
    if (name == e.name) {
      if (!params.is_object()) fail_usage("pipeline: stage '" + name + "': params must be an object");
      refuse_unknown_keys(params, e.params, "pipeline: stage '" + name + "'");
      return e.make(params);
    }
    known.push_back(e.name);
  }
  fail_usage("unknown pipeline stage '" + name + "' (known: " + joined(known) + ")");
}

std::vector<std::unique_ptr<Stage>> make_pipeline(const json& spec) {
  if (!spec.is_object() || !spec.contains("stages") || !spec["stages"].is_array())
    fail_usage("pipeline: expected {\"stages\": [...]}");
  for (const auto& [key, value] : spec.items())
    if (key != "stages") fail_usage("pipeline: unknown key '" + key + "' (only \"stages\")");
  std::vector<std::unique_ptr<Stage>> out;
  for (const auto& s : spec["stages"]) {
    if (!s.is_object() || !s.contains("name") || !s["name"].is_string())
      fail_usage("pipeline: every stage needs a name");
    for (const auto& [key, value] : s.items())
      if (key != "name" && key != "params")
        fail_usage("pipeline: stage '" + s["name"].get<std::string>() + "': unknown key '" + key +
                   "' (a stage has \"name\" and \"params\")");
    out.push_back(make_stage(s["name"].get<std::string>(), s.value("params", json::object())));
  }
  // Every unit must be read, encoded and written exactly once, in that order; a pipeline that
  // cannot do so is refused when it is read, not at the first unit.
  constexpr const char* kEssential[] = {"load", "quantize", "write"};
  size_t previous = 0;
  for (const char* name : kEssential) {
    std::vector<size_t> at;
    for (size_t i = 0; i < out.size(); ++i)
      if (out[i]->name() == name) at.push_back(i);
    if (at.size() != 1)
      fail_usage(std::string("pipeline: needs exactly one '") + name + "' stage, has " + std::to_string(at.size()));
    if (at[0] < previous) fail_usage("pipeline: stages must run in the order load, quantize, write");
    previous = at[0];
  }
  if (out.back()->name() != "write") fail_usage("pipeline: the last stage must be 'write'");
  // Optional stages that work on the loaded f32 values, before they are encoded, at most once.
  struct Placement {
    const char* name;
    const char* after;
    const char* before;
  };
  std::vector<Placement> placements = {{"trim_vocab", "load", "quantize"}};
  std::vector<std::string> calibration;  // the calibration stages of this pipeline
  for (const auto& m : calib_methods()) {
    placements.push_back({nullptr, "load", "quantize"});
    calibration.push_back(calibrate_stage_name(m.method));
  }
  for (size_t i = 0; i < calibration.size(); ++i) placements[i + 1].name = calibration[i].c_str();
  auto index_of = [&](const char* name) {
    for (size_t i = 0; i < out.size(); ++i)
      if (out[i]->name() == name) return i;
    return out.size();
  };
  for (const Placement& p : placements) {
    const size_t at = index_of(p.name);
    if (at == out.size()) continue;
    for (size_t i = at + 1; i < out.size(); ++i)
      if (out[i]->name() == p.name) fail_usage(std::string("pipeline: at most one '") + p.name + "' stage");
    if (at < index_of(p.after) || at > index_of(p.before))
      fail_usage(std::string("pipeline: '") + p.name + "' must come after '" + p.after + "' and before '" + p.before +
                 "'");
  }
  // One calibration at most, and not on a trimmed vocabulary: the calibration ids are the source's,
  // and the embedding it reads them from is already trimmed.
  size_t calibrations = 0;
  for (const auto& s : out)
    if (std::find(calibration.begin(), calibration.end(), s->name()) != calibration.end()) ++calibrations;
  if (calibrations > 1) fail_usage("pipeline: at most one calibration stage (" + joined(calibration) + ")");
  if (calibrations == 1 && index_of("trim_vocab") != out.size())
    fail_usage("pipeline: calibration and trim_vocab cannot be combined (calibrate, or trim; convert --trim-vocab "
               "with --calib-method is refused)");
  return out;
}

}  // namespace sf
