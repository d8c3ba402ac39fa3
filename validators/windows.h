#pragma once
// The evaluation windows every text metric shares: consecutive windows of ctx tokens, the first
// token of each replaced by BOS, positions ctx/2 .. ctx-1 scored (each predicts the next token of
// the text); a window is used only when ctx+1 tokens are available.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "executor/exec_model.h"

namespace sf {

struct WindowPlan {
  int64_t ctx = 0, windows = 0, first_scored = 0;
  int64_t scored_per_window() const { return ctx - first_scored; }
  int64_t positions() const { return windows * scored_per_window(); }
};

// chunks < 0: every window the text allows. Throws Error when not even one fits.
WindowPlan plan_windows(size_t n_tokens, int64_t ctx, int64_t chunks);

// Runs every model over every window (windows in parallel, one session per model per thread) and
// calls fn(slot, logits, target) for each scored position, where slot = window * scored_per_window
// + (pos - first_scored) is unique, so fn may write results by slot without locking. Shows windows
// done as a progress bar labelled `label` on a terminal; stops with an Error between windows when
// an InterruptGuard caught SIGINT / SIGTERM.
using ScoreFn = std::function<void(size_t slot, const std::vector<const float*>& logits, int target)>;
void run_windows(const std::vector<const ExecModel*>& models, const std::vector<int>& tokens, const WindowPlan& plan,
                 int bos, ThreadPool& pool, const ScoreFn& fn, const std::string& label = "eval");

// log-softmax of one logits row, in double.
void log_softmax(const float* logits, size_t n, std::vector<double>& out);

}  // namespace sf
