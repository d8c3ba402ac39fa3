#pragma once
// End-to-end scale tuning: after calibration has encoded the block linears, every scale group's
// values are multiplied by a learned factor exp(theta) (through the group's stored scales: codes,
// layout and bits per weight unchanged) so that the quantized model's next-token distributions on
// the calibration sequences come closer to the unquantized model's: mean KL divergence, Adam on
// theta over mini-batches of whole sequences in a fixed order, gradients from the backward pass of
// quantizers/block_backprop.h. Per-layer and per-block objectives cannot see how a group's error
// reaches the loss; this one does. The tuned scales are kept only when the KL divergence on all
// the calibration sequences, with the scales as stored, is lower than before.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/model_desc.h"
#include "core/thread_pool.h"
#include "formats/encoded.h"
#include "quantizers/block_backprop.h"

namespace sf {

struct ScaleTuneParams {
  int steps = 200;         // Adam steps, one mini-batch each
  double lr = 1e-3;        // Adam's step size on theta
  size_t batch = 8;        // sequences per step
  double max_factor = 2;   // each factor stays within [1 / max_factor, max_factor]
};

// An encoded linear as calibration left it: its layout, and its rows wherever they live (a mapped
// temporary file while the stage holds the model).
struct EncodedLinear {
  std::string name;
  QType type = QType::F32;
  size_t group = 0, rows = 0, cols = 0;
  const uint8_t* bytes = nullptr;  // rows x row_bytes
};

// One block as the tuner sees it: f32 norms and biases (and any linear left unencoded) in f32,
// and the encoded linears whose scales are tuned (empty bytes: absent, or its values are in f32.w).
struct TuneBlock {
  BlockWeightsF32 f32;
  std::array<EncodedLinear, kBlockLinears> encoded{};
};

struct ScaleTuneModel {
  const ModelDesc& desc;
  size_t ctx = 0, n_seq = 0;
  const float* x0 = nullptr;         // the first block's input on each sequence: n_seq x ctx x d_model
  const float* ref_final = nullptr;  // the unquantized model's last block output, same shape
  const float *head_norm = nullptr, *head_norm_b = nullptr, *out_w = nullptr;  // f32 head (vocab x d_model)
  std::vector<TuneBlock> blocks;
};

struct ScaleTuneResult {
  double kl_before = 0, kl_after = 0;  // mean KL on all the calibration sequences
  size_t groups = 0;                   // scale groups tuned
  bool kept = false;                   // kl_after (with the scales as stored) is below kl_before
  // When kept: [block][linear] each scale group's factor, row-major (rows x groups per row).
  std::vector<std::array<std::vector<float>, kBlockLinears>> factors;
};

// Tunes the scales of m.blocks' encodings (read only). The sequences of a batch run on the pool,
// each with state of its own, and their gradients are summed in sequence order: the factors do
// not depend on the thread count.
ScaleTuneResult tune_scales(const ScaleTuneModel& m, const ScaleTuneParams& p, ThreadPool& pool);
// Writes factors (from ScaleTuneResult) into an encoding's stored scales.
void apply_scale_factors(QType type, size_t group, size_t rows, size_t cols, const std::vector<float>& factors,
                         uint8_t* bytes);

}  // namespace sf
