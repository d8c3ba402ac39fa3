#pragma once
#include <map>

#include "pipeline/stage.h"

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
// Its types: the plan for FormatWriter::check_plan.
std::map<std::string, QType> planned_types(const QuantPlan& plan);
// params: {"spec": "range:0-31999" | "corpus:FILE[:MIN]" | "ids:FILE", "file_sha256": "..."}
// (pipeline/vocab_trim.h). Keeps rows of the embedding and the output projection and writes
// vocab_map.bin; file_sha256, when given, must be the sha256 of the spec's file.
std::unique_ptr<Stage> make_trim_vocab_stage(const json& params);

}  // namespace sf
