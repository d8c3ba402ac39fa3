#pragma once
// The calibrated methods behind encode_calibrated (quantizers/calibration.h), one file each:
// mse_clip.cpp, gptq.cpp (awq.cpp holds awq_search_scales). Declared here for the dispatcher and
// the tests; every function is deterministic whatever the pool's size (work split by rows only).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "quantizers/calibration.h"
#include "quantizers/quant_grid.h"

namespace sf {

// Importance of each input channel: sum_sq / tokens, floored at 1e-6 of the mean so channels the
// calibration never saw still count a little; all ones when there were no tokens.
std::vector<double> channel_importance(const InputStats& stats, size_t cols);

// The clip ratios mse tries, 1 first, down to min_clip (clamped into (0, 1]) in clip_steps steps.
std::vector<float> clip_ratios(const CalibParams& params);

// mse for one group of n values: the parameters (among clip_ratios; int4_asym also cuts one end
// only) with the least sum_j imp_j (w_j - deq_j)^2; ties keep the earlier (larger) ratio, so the
// result is never worse than round-to-nearest's. *err (if given) gets the chosen error.
GroupParams mse_fit_group(const QuantGrid& grid, const float* w, const double* imp, size_t n,
                          const std::vector<float>& ratios, double* err = nullptr);

// Refits one row's group parameters (scales; int4_asym's mins too) for its fixed codes by least
// squares on the row's output error (t - q)ᵀ H (t - q): H a full, symmetric cols x cols matrix
// (row-major), or, when H is null, the diagonal `diag`. Values are rounded as the row stores them;
// the parameters change only when that lowers the error (returns whether they did). `inv` is left
// as it was.
bool refine_group_params(const QuantGrid& grid, const float* t, const double* H, const double* diag,
                         GroupParams* ps, const int* codes);
// refine_group_params with the full H for `rows` rows (row r: t + r·cols, ps + r·groups(),
// codes + r·cols), sharing the passes over H among them; each row's result is bit for bit the one
// refine_group_params gives it alone. Returns how many rows changed.
size_t refine_group_params_rows(const QuantGrid& grid, const float* t, size_t rows, const double* H,
                                GroupParams* ps, const int* codes);

// Whole tensors, rows x grid.row_bytes() bytes.
std::vector<uint8_t> encode_mse(const QuantGrid& grid, const float* w, size_t rows, const std::vector<double>& imp,
                                const CalibParams& params, ThreadPool& pool);
// GPTQ with H = stats.gram / tokens. Falls back to encode_mse (and appends a warning naming
// `tensor`) when the Hessian cannot be factored even after raising the dampening, or is missing.
std::vector<uint8_t> encode_gptq(const std::string& tensor, const QuantGrid& grid, const float* w, size_t rows,
                                 const InputStats& stats, const CalibParams& params, ThreadPool& pool,
                                 std::vector<std::string>& warnings);

}  // namespace sf
