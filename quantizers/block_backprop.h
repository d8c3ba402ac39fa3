#pragma once
// The model's loss seen from a block's weights: a transformer block's forward pass in f32 that
// keeps what its backward pass needs, that backward pass, and the head's KL divergence to a
// reference distribution with its gradient. End-to-end scale tuning (quantizers/scale_tune.h) runs
// them to learn how each group's scale moves the model's output, which no per-layer or per-block
// objective sees. Plain f32 (the executor's 8-bit activation rounding is not modelled); dense
// products through Eigen; one thread, so results do not depend on a thread count.
#include <array>
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "core/model_desc.h"

namespace sf {

// The block linears in the order of their canonical tensors; gate is absent when the FFN is not
// gated.
enum class BlockLinear : uint8_t { Q, K, V, O, Gate, Up, Down };
constexpr size_t kBlockLinears = 7;
const char* block_linear_name(BlockLinear l);  // "attn.q", ..., "ffn.down"

// A block's weights as f32 row-major values; a null bias (or gate, when not gated) is absent.
struct BlockWeightsF32 {
  const float *attn_norm = nullptr, *attn_norm_b = nullptr, *ffn_norm = nullptr, *ffn_norm_b = nullptr;
  std::array<const float*, kBlockLinears> w{}, b{};
};

// A block's f32 weights by their canonical names after "blocks.N." ("attn.q.weight"); lookup
// gives null for a tensor the model does not have.
BlockWeightsF32 block_weights_f32(const std::function<const float*(const std::string&)>& lookup);

// dL/dW of the linears whose entry is non-empty (rows x cols floats, added to).
struct BlockLinearGrads {
  std::array<std::vector<float>, kBlockLinears> dw;
};

// Why the backward pass does not cover a model (null when it does): it implements pre-norm blocks
// with RoPE or learned positions under a causal mask, the settings of every family but ChatGLM-6B.
const char* backprop_unsupported(const ModelDesc& d);

class BlockBackprop {
 public:
  // Sequences of ctx tokens (positions 0 .. ctx-1 each).
  BlockBackprop(const ModelDesc& d, size_t ctx);
  // x: n_seq * ctx rows of d_model, through the block in place. Keeps the activations of the call.
  void forward(const BlockWeightsF32& w, float* x, size_t n_seq);
  // After forward with the same weights: dx holds dL/d(output) and becomes dL/d(input); dL/dW is
  // added to the non-empty entries of g.
  void backward(const BlockWeightsF32& w, float* dx, BlockLinearGrads& g);

 private:
  const ModelDesc& d_;
  size_t ctx_, n_ = 0;
  std::vector<double> freqs_;
  // Saved by forward, [rows x width]: input, normed input, its inverse rms (and mean), q and k
  // after RoPE, v, attention output, residual after attention, FFN norm, gate, up, activation.
  std::vector<float> x0_, xn1_, inv1_, mean1_, q_, k_, v_, att_, x1_, xn2_, inv2_, mean2_, gate_, up_, act_;
};

// The head's loss against a reference: mean over the n rows of KL(ref_t || softmax(logits_t)),
// logits = norm(x) W^T (W: vocab x d_model, the untied output or the tied embedding). ref_logp:
// n x vocab log-probabilities. Returns the loss; dx (n x d_model) receives dL/dx.
double head_kl_backward(const ModelDesc& d, const float* norm_w, const float* norm_b, const float* out_w,
                        const float* x, const float* ref_logp, size_t n, float* dx);
// The head's log-probabilities of x (n x vocab), for the reference.
void head_log_probs(const ModelDesc& d, const float* norm_w, const float* norm_b, const float* out_w, const float* x,
                    size_t n, float* logp);

}  // namespace sf
