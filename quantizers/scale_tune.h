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

// One block as the tuner sees it: f32 norms and biases (and any linear left unencoded) in f32,
// and the encoded linears whose scales are tuned (null: absent, or its f32 values are in f32.w).
struct TuneBlock {
  BlockWeightsF32 f32;
  std::array<EncodedTensor*, kBlockLinears> encoded{};
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
  bool kept = false;                   // the tuned scales were written into the encodings
};

// Tunes the encodings of m.blocks in place (left unchanged when not kept). The sequences of a
// batch run on the pool, each with state of its own, and their gradients are summed in sequence
// order: the bytes do not depend on the thread count.
ScaleTuneResult tune_scales(ScaleTuneModel& m, const ScaleTuneParams& p, ThreadPool& pool);

}  // namespace sf
