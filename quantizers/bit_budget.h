#pragma once
// Mixed precision to a bit budget (`--target-bpw X`): how much each tensor loses in each candidate
// scheme, measured on the calibration inputs, and the choice of one scheme per tensor that meets
// the budget with the least total loss. Pure functions: the pipeline measures every tensor in a
// sensitivity pass (before any writer exists), calls allocate_bit_budget, then converts with the
// assignment as per-tensor schemes. docs/quantization.md, "Mixed precision to a bit budget".
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/thread_pool.h"
#include "quantizers/calibration.h"
#include "quantizers/policy.h"
#include "quantizers/scheme.h"

namespace sf {

// ---- Sensitivity ----

// Expected squared output error per calibration token of a linear layer y = W x (rows x cols
// weights, row-major f32) when W is stored in `scheme` by round-to-nearest:
//   Σ_rows Δwᵀ (Σ x xᵀ) Δw / tokens      when stats has the Gram matrix,
//   Σ_rows Σ_j (Σ x_j² / tokens) Δw_j²   otherwise (its diagonal),
// with Δw = decoded - original. Rows holding a non-finite weight are skipped (they are kept only
// under --allow-non-finite and carry no usable error); a finite row that decodes to inf or NaN
// (a value the scheme cannot hold) makes the result +inf. Rows run in parallel on `pool` (serially
// when null); the per-row errors are summed in row order, so the result has the same bits
// whatever the pool's size. stats.channels must equal cols and stats.tokens be > 0.
double output_error(const float* w, size_t rows, size_t cols, const Scheme& scheme, const InputStats& stats,
                    ThreadPool* pool = nullptr);
// The same quadratic form of the weights themselves: the layer's output energy per token, the
// scale the errors are divided by to make tensors comparable (see measure_linear).
double output_energy(const float* w, size_t rows, size_t cols, const InputStats& stats, ThreadPool* pool = nullptr);

// A lookup table (token or position embedding: row r is the output for input r) has no input
// activations: its expected output error per token is Σ_r p_r |Δw_r|², p_r the share of
// calibration tokens that are r (row_share.size() == rows), or 1/rows each when row_share is empty.
double lookup_error(const float* w, size_t rows, size_t cols, const Scheme& scheme,
                    const std::vector<double>& row_share, ThreadPool* pool = nullptr);
double lookup_energy(const float* w, size_t rows, size_t cols, const std::vector<double>& row_share,
                     ThreadPool* pool = nullptr);

// Exact stored size of a rows x cols matrix in `scheme` (rows x the type's row_bytes, scales included).
uint64_t scheme_bytes(const Scheme& scheme, size_t rows, size_t cols);

// ---- Candidates ----

// The default ladder for --target-bpw, cheapest first: int4:g128, then int4:g32 or q4_0, then int8
// or q8_0, then f16 (each rung takes its first alternative the format stores). Block types are
// left out for rows of `cols` that are not whole blocks where the format demands whole blocks
// (the policy would store them as f16). GGUF: q4_0, q8_0, f16; shards: int4:g128, int4:g32, int8, f16.
std::vector<Scheme> default_bpw_ladder(const FormatRules& format, size_t cols);

struct BudgetOption {
  Scheme scheme;
  uint64_t bytes = 0;  // exact stored size
  double error = 0;    // comparable across tensors (finite, >= 0); minimised in total
};

struct BudgetTensor {
  std::string name;       // canonical name; ties are broken by it
  uint64_t weights = 0;   // elements, counted in the bits-per-weight denominator
  std::vector<BudgetOption> options;  // at least one; a fixed tensor has exactly one
};

// One tensor's options: each scheme of `ladder`, its exact bytes, and its output error divided by
// the layer's output energy (a noise-to-signal ratio: dimensionless, so layers of any scale are
// comparable). Schemes whose error is +inf (the scheme cannot hold the values) are dropped; when
// none is left, an error names the tensor. A layer with zero output energy on the calibration data
// loses nothing in any scheme (every error 0).
BudgetTensor measure_linear(const std::string& name, const float* w, size_t rows, size_t cols,
                            const std::vector<Scheme>& ladder, const InputStats& stats, ThreadPool* pool = nullptr);
BudgetTensor measure_lookup(const std::string& name, const float* w, size_t rows, size_t cols,
                            const std::vector<Scheme>& ladder, const std::vector<double>& row_share,
                            ThreadPool* pool = nullptr);
// A tensor stored as given whatever the budget (norm weights and biases: f32; a vector is 1 x n):
// it counts in the budget's bits and weights, with error 0.
BudgetTensor fixed_tensor(const std::string& name, const Scheme& scheme, size_t rows, size_t cols);
// One stored tensor with two uses (a tied embedding: lookup and output projection): first's name,
// weights and bytes, each scheme's errors added; a scheme missing from either use is dropped, and
// none left is an error naming the tensor.
BudgetTensor combine_uses(const BudgetTensor& first, const BudgetTensor& second);

// ---- Allocation ----

struct BudgetChoice {
  std::string name;
  Scheme scheme;
  uint64_t bytes = 0, weights = 0;
  double error = 0;
};

struct BudgetAssignment {
  double target_bpw = 0, achieved_bpw = 0;
  uint64_t weights = 0, bytes = 0;  // totals over every tensor given
  double total_error = 0;
  std::vector<BudgetChoice> tensors;  // sorted by name
};

// Chooses one option per tensor minimising the total error with 8 x total bytes <= target_bpw x
// total weights. The budget covers exactly the tensors given (the pipeline gives every tensor the
// artifact stores, so the target is the manifest's summary.bits_per_weight). Exact multiple-choice
// knapsack by dynamic programming over the bytes above the all-cheapest assignment, in at most
// 65536 steps (byte-exact when the spare bytes fit; else each option's extra bytes rounded up to a
// step, so the budget always holds), then a repair pass spends what the rounding left by the best
// error-per-byte upgrades. Ties: the tensor first by name gets the larger option.
// A target below the all-cheapest assignment is a usage error naming the smallest reachable
// bits per weight; a target at or above the all-largest assignment gives every tensor its largest.
BudgetAssignment allocate_bit_budget(std::vector<BudgetTensor> tensors, double target_bpw);

// For the manifest: {"target_bpw": X, "achieved_bpw": Y, "tensors": {name: scheme}}.
nlohmann::json assignment_json(const BudgetAssignment& a);
// For the terminal: one line per scheme (tensors, weights, share of the weights), then the totals;
// with per_tensor, one line per tensor before them.
std::string assignment_table(const BudgetAssignment& a, bool per_tensor = false);

}  // namespace sf
