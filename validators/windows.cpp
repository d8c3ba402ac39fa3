#include "validators/windows.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>

#include "core/error.h"
#include "core/interrupt.h"
#include "core/progress.h"
#include "executor/session.h"

namespace sf {

WindowPlan plan_windows(size_t n_tokens, int64_t ctx, int64_t chunks) {
  if (ctx < 2) fail("--ctx must be at least 2");
  WindowPlan p;
  p.ctx = ctx;
  p.first_scored = ctx / 2;
  p.windows = n_tokens > 0 ? (int64_t(n_tokens) - 1) / ctx : 0;
  if (chunks >= 0) p.windows = std::min(p.windows, chunks);
  if (p.windows <= 0)
    fail("text has " + std::to_string(n_tokens) + " tokens: too few for one window of " + std::to_string(ctx) +
         " (+1)");
  return p;
}

void run_windows(const std::vector<const ExecModel*>& models, const std::vector<int>& tokens, const WindowPlan& plan,
                 int bos, ThreadPool& pool, const ScoreFn& fn, const std::string& label) {
  const int64_t ctx = plan.ctx, first = plan.first_scored, per = plan.scored_per_window();
  // Every id fed or scored must index the models' vocabularies (a tokenizer larger than the model
  // would otherwise read past the logits); checked once, before any window runs.
  const size_t used = size_t(plan.windows) * size_t(ctx) + 1;
  if (tokens.size() < used) fail("evaluation windows need " + std::to_string(used) + " tokens, the text has " +
                                 std::to_string(tokens.size()));
  for (const ExecModel* m : models) {
    const int64_t vocab = m->desc().vocab_size;
    auto outside = [&](int id) { return id < 0 || id >= vocab; };
    const auto bad = std::find_if(tokens.begin(), tokens.begin() + long(used), outside);
    if (outside(bos) || bad != tokens.begin() + long(used))
      fail_file(m->artifact().dir(), "token id " + std::to_string(outside(bos) ? bos : *bad) +
                                         " is outside the model's vocabulary of " + std::to_string(vocab) +
                                         " (the tokenizer does not belong to this model)");
  }
  Progress bar(label, size_t(plan.windows));
  // Windows [b, e) on this thread, each model's session given `session_pool` for its products.
  auto run_range = [&](size_t b, size_t e, ThreadPool* session_pool) {
    std::vector<std::unique_ptr<Session>> sessions;
    for (const ExecModel* m : models) sessions.push_back(std::make_unique<Session>(*m, ctx, session_pool));
    std::vector<const float*> rows(models.size()), logits(models.size());
    std::vector<int32_t> window(static_cast<size_t>(ctx));
    for (size_t w = b; w < e; ++w) {
      check_interrupt();
      const size_t base = w * size_t(ctx);
      window[0] = bos;
      for (int64_t p = 1; p < ctx; ++p) window[size_t(p)] = tokens[base + size_t(p)];
      // The whole window in one call per model (prefill), logits kept from first_scored on.
      for (size_t m = 0; m < sessions.size(); ++m) {
        sessions[m]->reset();
        rows[m] = sessions[m]->forward(window.data(), size_t(ctx), size_t(first));
      }
      for (int64_t p = first; p < ctx; ++p) {
        for (size_t m = 0; m < sessions.size(); ++m)
          logits[m] = rows[m] + size_t(p - first) * size_t(models[m]->desc().vocab_size);
        fn(w * size_t(per) + size_t(p - first), logits, tokens[base + size_t(p) + 1]);
      }
      bar.step();
    }
  };
  // Windows run side by side, one per thread. A model that streams its blocks (--resident-blocks)
  // would then have as many blocks in memory as threads: its windows run one after another, every
  // thread on the same block's products. The kernels' results do not depend on how work is split,
  // so the scores are the same bits either way.
  const bool streamed = std::any_of(models.begin(), models.end(), [](const ExecModel* m) { return m->stream(); });
  if (streamed) run_range(0, size_t(plan.windows), &pool);
  else pool.parallel_for(size_t(plan.windows), [&](size_t b, size_t e) { run_range(b, e, nullptr); });
}

void log_softmax(const float* logits, size_t n, std::vector<double>& out) {
  out.resize(n);
  double mx = logits[0];
  for (size_t i = 1; i < n; ++i) mx = std::max(mx, double(logits[i]));
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += std::exp(double(logits[i]) - mx);
  const double lse = mx + std::log(sum);
  for (size_t i = 0; i < n; ++i) out[i] = double(logits[i]) - lse;
}

}  // namespace sf
