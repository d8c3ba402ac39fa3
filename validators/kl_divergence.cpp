#include "validators/kl_divergence.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "validators/perplexity.h"
#include "validators/windows.h"

namespace sf {

KldResult kl_divergence(const ExecModel& model, const ExecModel& reference, const std::vector<int>& tokens,
                        int64_t ctx, int bos, int64_t chunks, ThreadPool& pool) {
  if (model.desc().vocab_size != reference.desc().vocab_size)
    fail("the model and the reference have different vocabularies (" + std::to_string(model.desc().vocab_size) +
         " vs " + std::to_string(reference.desc().vocab_size) + ")");
  const WindowPlan plan = plan_windows(tokens.size(), ctx, chunks);
  const size_t n = size_t(plan.positions()), vocab = size_t(model.desc().vocab_size);
  std::vector<double> kld(n), nll(n), ref_nll(n);
  std::vector<char> agree(n);
  run_windows({&model, &reference}, tokens, plan, bos, pool,
              [&](size_t slot, const std::vector<const float*>& logits, int target) {
                thread_local std::vector<double> lq, lp;
                log_softmax(logits[0], vocab, lq);
                log_softmax(logits[1], vocab, lp);
                double kl = 0;
                for (size_t i = 0; i < vocab; ++i) kl += std::exp(lp[i]) * (lp[i] - lq[i]);
                kld[slot] = std::max(0.0, kl);
                nll[slot] = -lq[size_t(target)];
                ref_nll[slot] = -lp[size_t(target)];
                agree[slot] = std::max_element(lq.begin(), lq.end()) - lq.begin() ==
                              std::max_element(lp.begin(), lp.end()) - lp.begin();
              });
  KldResult r;
  const MeanStderr k = mean_stderr(kld);
  r.kld_mean = k.mean;
  r.kld_stderr = k.stderr_;
  r.kld_max = *std::max_element(kld.begin(), kld.end());
  size_t same = 0;
  for (char a : agree) same += size_t(a);
  r.top1_agreement = double(same) / double(n);
  const MeanStderr m = mean_stderr(nll);
  r.ppl = std::exp(m.mean);
  r.ppl_stderr = r.ppl * m.stderr_;
  r.ref_ppl = std::exp(mean_stderr(ref_nll).mean);
  r.tokens_scored = int64_t(n);
  r.windows = plan.windows;
  r.ctx = ctx;
  return r;
}

}  // namespace sf
