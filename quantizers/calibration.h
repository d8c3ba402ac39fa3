#pragma once
// Calibrated encoding: choosing a quantized tensor's scales (and, for GPTQ, its codes) so that the
// layer's output on calibration inputs changes least, rather than the weights themselves. The
// pipeline's calibration stages (pipeline/calibrate_stage.cpp) run each block on the calibration
// tokens, gather InputStats for every group of linear layers that share an input (a block's q, k
// and v; gate and up), and call these functions. Whatever the method, the bytes are the type's row
// layout (docs/format.md): the executor and every writer read them as they read round-to-nearest.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/thread_pool.h"
#include "quantizers/scheme.h"

namespace sf {

// The methods, one row each in kCalibMethods (calibration.cpp): the name used by --calib-method,
// by compare's `SCHEME+METHOD`, and in the manifest.
enum class CalibMethod : uint8_t { Mse, Awq, Gptq };

struct CalibMethodInfo {
  CalibMethod method;
  const char* name;         // "mse", "awq", "gptq"
  const char* description;  // one line, for --help and docs
  bool needs_gram;          // gathers Σ x xᵀ per input (GPTQ's Hessian)
  bool needs_sample;        // keeps a sample of input rows (AWQ's scale search)
  bool reference;           // by default fits the unquantized model's outputs (reference_target),
                            // group by group within a block (true-sequential)
};
const std::vector<CalibMethodInfo>& calib_methods();
std::optional<CalibMethod> calib_method_from_name(std::string_view name);
const CalibMethodInfo& calib_method_info(CalibMethod m);

// Statistics of the activations entering a group of linear layers that share an input, gathered
// over the calibration tokens.
struct InputStats {
  size_t channels = 0;
  uint64_t tokens = 0;
  std::vector<double> sum_sq;   // per input channel: Σ x_j² (the importance of column j: sum_sq / tokens)
  std::vector<double> sum_abs;  // per input channel: Σ |x_j| (AWQ's activation magnitude)
  std::vector<double> gram;     // Σ x xᵀ, channels x channels, row-major; empty unless with_gram
  // Σ r xᵀ over pairs (r, x) where r is the row the unquantized model feeds this group at the same
  // position (the reference stream): cross[i * channels + j] = Σ r_i x_j. Empty unless with_cross.
  // With it, the methods fit the unquantized model's output W r rather than W x (reference_target).
  std::vector<double> cross;
  // Σ δ xᵀ (out_channels x channels, row-major) where δ is how far the quantized stream's residual,
  // which this group's output is added to, is from the reference stream's: the group's one linear
  // can then also make up for the drift it is added to. Empty unless gathered (add_residual).
  std::vector<double> resid_cross;
  size_t out_channels = 0;
  std::vector<float> sample;    // up to max_sample_rows input rows, row-major (AWQ's search)
  size_t sample_rows = 0;
  bool with_gram = false;
  bool with_cross = false;
  size_t max_sample_rows = 0;

  void reset(size_t channels, bool with_gram, size_t max_sample_rows, bool with_cross = false);
  // Adds `rows` rows of `channels` activations. The sums are the same bits whatever the pool's
  // size (each sum runs over the rows in order), so calibrated artifacts do not depend on -t.
  void add(const float* x, size_t rows, ThreadPool* pool);
  // add(x), and (with_cross) the cross sums of the paired reference rows ref (rows x channels).
  void add_pair(const float* x, const float* ref, size_t rows, ThreadPool* pool);
  // Adds Σ δ xᵀ for rows of drift δ (rows x out) and this group's inputs x (rows x channels);
  // the rows must also be given to add_pair (which counts them).
  void add_residual(const float* delta, const float* x, size_t rows, size_t out, ThreadPool* pool);
};

// Settings of the methods; every field is recorded in the manifest.
struct CalibParams {
  int clip_steps = 20;        // mse / awq: clip ratios tried, from 1 down to min_clip
  double min_clip = 0.5;
  int awq_grid = 20;          // awq: exponents alpha tried in [0, 1)
  double gptq_damp = 0.01;    // gptq: added to the Hessian's diagonal, times its mean
  bool gptq_act_order = false;
  size_t gptq_block = 128;    // gptq: columns per lazy batch update
  bool gptq_clip = true;      // gptq: fit each group's range with mse's clip search (weighted by diag H)
  bool gptq_refine = true;    // gptq: refit each row's group scales by least squares once codes are fixed
};

// The weights whose output on this group's (quantized-stream) inputs x best matches the reference
// output W r: T = W (C + λI)(H + λI)⁻¹ with H = Σ x xᵀ / n, C = Σ r xᵀ / n and λ = damp · mean(diag H),
// which is W when the streams agree and moves towards W C H⁻¹ (the least-squares fit) as data
// accumulates. With resid_cross (rows == out_channels), the residual's drift δ too: T gains
// (Σ δ xᵀ / n)(H + λI)⁻¹, fitting W r + δ. rows x cols, row-major. Returns W unchanged (and false) without cross statistics or
// when H + λI does not factor.
bool reference_target(const float* w, size_t rows, size_t cols, const InputStats& stats, double damp,
                      std::vector<float>& target, ThreadPool& pool);

// Encodes rows x cols weights (row-major f32) with `scheme` so as to minimise the output error on
// inputs with `stats` (stats.channels == cols). Returns rows x row_bytes bytes in the type's row
// layout. Float types (f32, f16, bf16) have nothing to choose and are encoded as round-to-nearest
// does. Problems that do not stop the encoding (a Hessian GPTQ had to fall back on) are appended
// to `warnings` as whole sentences naming `tensor`. Deterministic whatever the pool's size.
std::vector<uint8_t> encode_calibrated(CalibMethod method, const std::string& tensor, const float* w, size_t rows,
                                       size_t cols, const Scheme& scheme, const InputStats& stats,
                                       const CalibParams& params, ThreadPool& pool,
                                       std::vector<std::string>& warnings);

// One linear layer of an AWQ scaling group: its weights and the scheme they will be stored in.
struct AwqLinear {
  const float* w;  // rows x cols, row-major
  size_t rows;
  Scheme scheme;
};

// AWQ's search: per-input-channel scales s (cols of them, all > 0) for linears sharing the input
// that `stats` describes: each linear's columns are multiplied by s and its input divided by s
// (folded by the caller into the op before), choosing s = m^alpha / norm from the channels' mean
// magnitude m so as to minimise the quantized group's output error on stats.sample. All ones when
// scaling does not help.
std::vector<float> awq_search_scales(const std::vector<AwqLinear>& linears, size_t cols, const InputStats& stats,
                                     const CalibParams& params, ThreadPool& pool);

}  // namespace sf
