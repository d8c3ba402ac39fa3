#include "quantizers/calibration.h"

#include <string>

#include "core/error.h"
#include "quantizers/calib_methods.h"

namespace sf {

namespace {

const std::vector<CalibMethodInfo> kCalibMethods = {
    {CalibMethod::Mse, "mse", "per-group clipping range minimising the error weighted by the inputs' second moments",
     false, false, false},
    {CalibMethod::Awq, "awq", "activation-aware per-channel scaling folded into the op before, then mse clipping",
     false, true, false},
    {CalibMethod::Gptq, "gptq", "Hessian-based error compensation column by column (Cholesky, lazy batches)", true,
     false, true},
};

}  // namespace

const std::vector<CalibMethodInfo>& calib_methods() { return kCalibMethods; }

std::optional<CalibMethod> calib_method_from_name(std::string_view name) {
  for (const auto& m : kCalibMethods)
    if (name == m.name) return m.method;
  return std::nullopt;
}

const CalibMethodInfo& calib_method_info(CalibMethod m) {
  for (const auto& i : kCalibMethods)
    if (i.method == m) return i;
  fail("unknown calibration method");
}

std::vector<uint8_t> encode_calibrated(CalibMethod method, const std::string& tensor, const float* w, size_t rows,
                                       size_t cols, const Scheme& scheme, const InputStats& stats,
                                       const CalibParams& params, ThreadPool& pool,
                                       std::vector<std::string>& warnings) {
  if (!QuantGrid::supports(scheme.type) || cols == 0) {  // float types: nothing to choose
    const auto& tr = qtype_traits(scheme.type);
    const size_t rb = tr.row_bytes(cols, scheme.group);
    std::vector<uint8_t> out(rows * rb, 0);
    for (size_t r = 0; r < rows; ++r) tr.quantize_row(w + r * cols, cols, scheme.group, &out[r * rb]);
    return out;
  }
  if (stats.tokens > 0 && stats.channels != cols)  // a caller's mix-up, not something to guess around
    fail(tensor + ": calibration statistics have " + std::to_string(stats.channels) + " input channels, the rows " +
         std::to_string(cols) + " columns");
  const QuantGrid grid(scheme, cols);
  switch (method) {
    case CalibMethod::Gptq: return encode_gptq(tensor, grid, w, rows, stats, params, pool, warnings);
    // AWQ's scales are already folded into w and stats (the caller scaled both), so what is left
    // is mse clipping with the scaled inputs' importance.
    case CalibMethod::Awq:
    case CalibMethod::Mse: {
      std::vector<float> target;  // with the reference stream's statistics: fit the reference output
      const bool ref = reference_target(w, rows, cols, stats, params.gptq_damp, target, pool);
      return encode_mse(grid, ref ? target.data() : w, rows, channel_importance(stats, cols), params, pool);
    }
  }
  fail("unknown calibration method");
}

}  // namespace sf
