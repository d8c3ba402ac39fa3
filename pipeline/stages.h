#pragma once
#include "pipeline/stage.h"

namespace sf {

std::unique_ptr<Stage> make_load_stage(const json& params);
// params: {"scheme": "int4:g32:sym", "overrides": ["PATTERN=SCHEME", ...], "allow_non_finite": false}.
// Refuses NaN/Inf input unless allow_non_finite, and finite values the chosen type cannot hold.
std::unique_ptr<Stage> make_quantize_stage(const json& params);
std::unique_ptr<Stage> make_write_stage(const json& params);

}  // namespace sf
