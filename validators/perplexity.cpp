#include "validators/perplexity.h"

#include <cmath>

#include "core/error.h"
#include "validators/reference_logits.h"
#include "validators/windows.h"

namespace sf {

PerplexityResult perplexity(const ExecModel& model, const std::vector<int>& tokens, int64_t ctx, int bos,
                            int64_t chunks, ThreadPool& pool, const ReferenceLogits* record, const std::string& label) {
  const WindowPlan plan = plan_windows(tokens.size(), ctx, chunks);
  std::vector<double> nll(size_t(plan.positions()));
  const size_t vocab = size_t(model.desc().vocab_size);
  if (record && (record->positions() != nll.size() || record->vocab() != vocab))
    fail("reference logits file does not match the evaluation windows");
  run_windows({&model}, tokens, plan, bos, pool, [&](size_t slot, const std::vector<const float*>& logits, int target) {
    thread_local std::vector<double> lp;
    log_softmax(logits[0], vocab, lp);
    nll[slot] = -lp[size_t(target)];
    if (record) record->write(slot, logits[0]);
  }, label);
  PerplexityResult r;
  r.windows = plan.windows;
  r.ctx = ctx;
  r.tokens_scored = int64_t(nll.size());
  const MeanStderr ms = mean_stderr(nll);
  r.mean_nll = ms.mean;
  r.ppl = std::exp(ms.mean);
  r.ppl_stderr = r.ppl * ms.stderr_;  // delta method: d exp(m) = exp(m) dm
  require_finite(r.ppl, "perplexity", model.artifact().dir());
  return r;
}

void require_finite(double value, const char* what, const std::string& artifact_dir) {
  if (!std::isfinite(value))
    fail_file(artifact_dir, std::string(what) + " is " + (std::isnan(value) ? "nan" : "infinite") +
                                ": the model gives non-finite log-probabilities (NaN or infinite weights?)");
}

MeanStderr mean_stderr(const std::vector<double>& v) {
  MeanStderr r;
  if (v.empty()) return r;
  double sum = 0;
  for (double x : v) sum += x;  // in slot order: the same sum for any thread count
  r.mean = sum / double(v.size());
  double var = 0;
  for (double x : v) var += (x - r.mean) * (x - r.mean);
  const double n = double(v.size());
  r.stderr_ = n > 1 ? std::sqrt(var / (n - 1) / n) : 0.0;
  return r;
}

}  // namespace sf
