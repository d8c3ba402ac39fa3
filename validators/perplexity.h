#pragma once
// Windowed perplexity: cut the token stream into consecutive windows of ctx tokens, replace each
// window's first token with BOS, score positions ctx/2 .. ctx-1 (each predicts the next token of
// the text). A window is used only when ctx+1 tokens are available.
#include <cstdint>
#include <vector>

#include "core/thread_pool.h"
#include "executor/exec_model.h"

namespace sf {

struct PerplexityResult {
  double ppl = 0, ppl_stderr = 0, mean_nll = 0;
  int64_t tokens_scored = 0, windows = 0, ctx = 0;
};

// chunks < 0: all windows. Windows run in parallel, one per thread; sums are taken in window order
// so the result does not depend on the thread count.
PerplexityResult perplexity(const ExecModel& model, const std::vector<int>& tokens, int64_t ctx, int bos,
                            int64_t chunks, ThreadPool& pool);

}  // namespace sf
