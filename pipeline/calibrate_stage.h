#pragma once
// The calibration stages, one per method of calib_methods() (quantizers/calibration.h), registered
// as calib_<method> (pipeline/stage_registry.cpp). params: {"calib": "FILE" | "ids:FILE",
// "file_sha256", "tokens", "ctx", and CalibParams' fields: "clip_steps", "min_clip", "awq_grid",
// "gptq_damp", "gptq_act_order", "gptq_block"}. Runs after load and before quantize, encoding
// the block linears (and an untied output projection) the quantize stage's plan gives an integer
// type; quantize encodes the rest.
#include <memory>
#include <string>
#include <vector>

#include "pipeline/stage.h"
#include "quantizers/calibration.h"

namespace sf {

std::unique_ptr<Stage> make_calibrate_stage(CalibMethod method, const json& params);
const std::vector<std::string>& calibrate_stage_params();
// "calib_mse", ...: the stage name of a method.
std::string calibrate_stage_name(CalibMethod method);
// "mse, awq, gptq": for messages.
std::string calib_method_names();

}  // namespace sf
