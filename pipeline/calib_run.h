#pragma once
// What running the source's blocks on calibration sequences needs, shared by the calibration stages
// (pipeline/calibrate_stage.cpp) and the bit budget's sensitivity pass (pipeline/bit_budget_plan.cpp):
// views the executor reads a unit's tensors through, the tap gathering each linear group's input
// statistics, and a row as the executor will read it once encoded.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/thread_pool.h"
#include "executor/block.h"
#include "pipeline/unit.h"
#include "quantizers/calibration.h"
#include "quantizers/scheme.h"

namespace sf {

// Input rows AWQ's scale search sees per group (spread over the calibration rows).
inline constexpr size_t kAwqSampleRows = 512;

// A view of a tensor's f32 values (the caller owns them).
TensorView f32_view(const UnitTensor& t);
// A view of a tensor's encoded bytes.
TensorView encoded_view(const UnitTensor& t);

// Keeps the rows entering the wanted linear groups during one run (the reference stream's run
// over a chunk of sequences), for StatsTap to pair with the quantized stream's rows.
class RowCapture : public BlockTap {
 public:
  explicit RowCapture(const bool (&wanted)[kLinearInputs]);
  void input(LinearInput where, const float* x, size_t rows, size_t cols) override;
  void residual_base(LinearInput where, const float* x, size_t rows, size_t cols) override;
  void clear();
  const std::vector<float>& rows(LinearInput g) const { return rows_[size_t(g)]; }
  const std::vector<float>& bases(LinearInput g) const { return bases_[size_t(g)]; }

 private:
  bool wanted_[kLinearInputs];
  std::vector<float> rows_[kLinearInputs], bases_[kLinearInputs];
};

// Gathers InputStats for each linear group of a block run. AWQ's sample rows are spread over every
// sequence (every stride-th row of the run) rather than the first rows of the first sequence: they
// are gathered in a second InputStats fed only those rows, and moved into the group's stats.
class StatsTap : public BlockTap {
 public:
  // Gram matrix and sample rows as method m needs them, for the wanted groups only; with_cross:
  // cross statistics with the rows of a RowCapture given to pair_with before each run; with_drift
  // (and with_cross): the residual drift statistics of the groups whose output joins the residual.
  StatsTap(const ModelDesc& d, const CalibMethodInfo& m, size_t total_rows, ThreadPool& pool,
           const bool (&wanted)[kLinearInputs], bool with_cross, bool with_drift);
  // With or without the Gram matrix, no sample rows, every group.
  StatsTap(const ModelDesc& d, bool with_gram, ThreadPool& pool);
  // The next run's rows are paired, call by call, with what `ref` captured of the same sequences.
  void pair_with(const RowCapture* ref);
  void input(LinearInput where, const float* x, size_t rows, size_t cols) override;
  void residual_base(LinearInput where, const float* x, size_t rows, size_t cols) override;
  // After the run: the sample rows into the statistics.
  void finish();
  InputStats stats[kLinearInputs];

 private:
  ThreadPool& pool_;
  size_t stride_;
  bool wanted_[kLinearInputs];
  InputStats sampler_[kLinearInputs];
  size_t seen_[kLinearInputs] = {};
  const RowCapture* ref_ = nullptr;
  size_t ref_used_[kLinearInputs] = {}, base_used_[kLinearInputs] = {};
  bool drift_ = false;
  std::vector<float> last_in_[kLinearInputs], delta_;  // the call's input rows; drift scratch
};

// Row r of t's f32 values as the executor will read it: encoded with `scheme` and decoded (as is
// when scheme is null or f32). `bytes` is scratch.
void decoded_row(const UnitTensor& t, const Scheme* scheme, size_t r, std::vector<float>& row,
                 std::vector<uint8_t>& bytes);

}  // namespace sf
