#pragma once
#include <map>

#include "pipeline/stage.h"
#include "quantizers/policy.h"

namespace sf {

std::unique_ptr<Stage> make_load_stage(const json& params);
// params: {"scheme": "int4:g32:sym", "overrides": ["PATTERN=SCHEME", ...], "allow_non_finite": false}.
// Refuses NaN/Inf input unless allow_non_finite, and finite values the chosen type cannot hold.
std::unique_ptr<Stage> make_quantize_stage(const json& params);
std::unique_ptr<Stage> make_write_stage(const json& params);
// The scheme the quantize stage of `stages` will give each tensor of `desc` as `writer` stores it
// (empty without a quantize stage), computed once: calibration stages encode from it.
QuantPlan quant_plan(const std::vector<std::unique_ptr<Stage>>& stages, const ModelDesc& desc,
                     const FormatWriter& writer);
// What the output format stores, for the quantization policy.
FormatRules rules_of(const FormatWriter& writer);
// --target-bpw: the tensors whose scheme the quantize stage's policy fixes (norms and biases, and
// those a --tensor-quant override names), with that scheme as `rules` store it. The bit budget
// chooses the others' schemes.
std::map<std::string, Scheme> policy_fixed_schemes(const std::vector<std::unique_ptr<Stage>>& stages,
                                                   const ModelDesc& desc, const FormatRules& rules);
// Gives each named tensor its scheme: exact-name overrides appended to the quantize stage's own, so
// they win, and its params (the manifest's pipeline) record them: the one place schemes come from.
void assign_schemes(const std::vector<std::unique_ptr<Stage>>& stages, const std::map<std::string, Scheme>& schemes);
// Its types: the plan for FormatWriter::check_plan.
std::map<std::string, QType> planned_types(const QuantPlan& plan);
// params: {"spec": "range:0-31999" | "corpus:FILE[:MIN]" | "ids:FILE", "file_sha256": "..."}
// (pipeline/vocab_trim.h). Keeps rows of the embedding and the output projection and writes
// vocab_map.bin; file_sha256, when given, must be the sha256 of the spec's file.
std::unique_ptr<Stage> make_trim_vocab_stage(const json& params);

}  // namespace sf
