#pragma once
// Windowed perplexity over the windows of validators/windows.h.
#include <cstdint>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "executor/exec_model.h"

namespace sf {

class ReferenceLogits;

struct PerplexityResult {
  double ppl = 0, ppl_stderr = 0, mean_nll = 0;
  int64_t tokens_scored = 0, windows = 0, ctx = 0;
};

struct MeanStderr {
  double mean = 0, stderr_ = 0;
};
MeanStderr mean_stderr(const std::vector<double>& v);

// chunks < 0: all windows. Windows run in parallel, one per thread; sums are taken in window order
// so the result does not depend on the thread count. A non-finite result (NaN or infinite weights)
// is an Error naming the artifact. `record`, when given, receives the logits of every scored
// position (compare's reference pass); `label` names the progress bar.
PerplexityResult perplexity(const ExecModel& model, const std::vector<int>& tokens, int64_t ctx, int bos,
                            int64_t chunks, ThreadPool& pool, const ReferenceLogits* record = nullptr,
                            const std::string& label = "ppl");

// Throws Error naming `artifact_dir` when `value` (the metric `what`) is NaN or infinite.
void require_finite(double value, const char* what, const std::string& artifact_dir);

}  // namespace sf
