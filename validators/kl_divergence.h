#pragma once
// How far a (quantized) model's next-token distributions are from a reference model's, over the
// same windows perplexity uses: mean KL(reference || model) and top-1 agreement.
#include <cstdint>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "executor/exec_model.h"

namespace sf {

class ReferenceLogits;

struct KldResult {
  double kld_mean = 0, kld_stderr = 0, kld_max = 0;
  double top1_agreement = 0;            // fraction of positions where both argmaxes agree
  double ppl = 0, ppl_stderr = 0, ref_ppl = 0;  // of the model and the reference on the same positions
  int64_t tokens_scored = 0, windows = 0, ctx = 0;
};

// Runs both models over the windows. A non-finite result is an Error naming the artifact at fault.
KldResult kl_divergence(const ExecModel& model, const ExecModel& reference, const std::vector<int>& tokens,
                        int64_t ctx, int bos, int64_t chunks, ThreadPool& pool, const std::string& label = "kld");

// The same numbers, bit for bit, with the reference's logits read from a file written by its
// perplexity pass (compare): the reference model is not run again.
KldResult kl_divergence(const ExecModel& model, const ReferenceLogits& reference, const std::string& reference_name,
                        const std::vector<int>& tokens, int64_t ctx, int bos, int64_t chunks, ThreadPool& pool,
                        const std::string& label = "kld");

}  // namespace sf
