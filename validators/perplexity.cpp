#include "validators/perplexity.h"

#include <cmath>
#include <string>

#include "core/error.h"
#include "executor/session.h"

namespace sf {

PerplexityResult perplexity(const ExecModel& model, const std::vector<int>& tokens, int64_t ctx, int bos,
                            int64_t chunks, ThreadPool& pool) {
  if (ctx < 2) fail("--ctx must be at least 2");
  int64_t windows = tokens.size() > 0 ? (int64_t(tokens.size()) - 1) / ctx : 0;
  if (chunks >= 0) windows = std::min(windows, chunks);
  if (windows <= 0)
    fail("text has " + std::to_string(tokens.size()) + " tokens: too few for one window of " + std::to_string(ctx) +
         " (+1)");
  const int64_t first = ctx / 2, per = ctx - first;
  std::vector<double> nll(size_t(windows * per));
  pool.parallel_for(size_t(windows), [&](size_t b, size_t e) {
    Session s(model, ctx, nullptr);
    std::vector<double> lp(static_cast<size_t>(model.desc().vocab_size));
    for (size_t w = b; w < e; ++w) {
      s.reset();
      const size_t base = w * size_t(ctx);
      for (int64_t p = 0; p < ctx; ++p) {
        const int tok = p == 0 ? bos : tokens[base + size_t(p)];
        const float* logits = s.forward(tok, p >= first);
        if (p < first) continue;
        const int target = tokens[base + size_t(p) + 1];
        double mx = logits[0];
        for (size_t i = 0; i < lp.size(); ++i) mx = std::max(mx, double(logits[i]));
        double sum = 0;
        for (size_t i = 0; i < lp.size(); ++i) sum += std::exp(double(logits[i]) - mx);
        nll[w * size_t(per) + size_t(p - first)] = -(double(logits[target]) - mx - std::log(sum));
      }
    }
  });
  PerplexityResult r;
  r.windows = windows;
  r.ctx = ctx;
  r.tokens_scored = int64_t(nll.size());
  double sum = 0;
  for (double v : nll) sum += v;
  r.mean_nll = sum / double(nll.size());
  double var = 0;
  for (double v : nll) var += (v - r.mean_nll) * (v - r.mean_nll);
  const double n = double(nll.size());
  const double se = n > 1 ? std::sqrt(var / (n - 1) / n) : 0.0;
  r.ppl = std::exp(r.mean_nll);
  r.ppl_stderr = r.ppl * se;  // delta method: d exp(m) = exp(m) dm
  return r;
}

}  // namespace sf
