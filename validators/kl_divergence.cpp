#include "validators/kl_divergence.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "validators/perplexity.h"
#include "validators/reference_logits.h"
#include "validators/windows.h"

namespace sf {

namespace {

// Per-slot scores of one model against the reference; the sums are taken in slot order.
struct KldScores {
  std::vector<double> kld, nll, ref_nll;
  std::vector<char> agree;
  size_t vocab;
  KldScores(size_t n, size_t vocab) : kld(n), nll(n), ref_nll(n), agree(n), vocab(vocab) {}

  void score(size_t slot, const float* model_logits, const float* ref_logits, int target) {
    thread_local std::vector<double> lq, lp;
    log_softmax(model_logits, vocab, lq);
    log_softmax(ref_logits, vocab, lp);
    double kl = 0;
    for (size_t i = 0; i < vocab; ++i) kl += std::exp(lp[i]) * (lp[i] - lq[i]);
    kld[slot] = std::isnan(kl) || kl > 0 ? kl : 0.0;  // rounding can go below 0; NaN must stay NaN
    nll[slot] = -lq[size_t(target)];
    ref_nll[slot] = -lp[size_t(target)];
    agree[slot] = std::max_element(lq.begin(), lq.end()) - lq.begin() ==
                  std::max_element(lp.begin(), lp.end()) - lp.begin();
  }

  KldResult finish(const WindowPlan& plan, const std::string& model_dir, const std::string& ref_name) const {
    KldResult r;
    const size_t n = kld.size();
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
    r.ctx = plan.ctx;
    require_finite(r.ref_ppl, "the reference's perplexity", ref_name);
    require_finite(r.ppl, "perplexity", model_dir);
    require_finite(r.kld_mean, "KL-divergence", model_dir);
    return r;
  }
};

void require_same_vocab(const ExecModel& m, int64_t reference, const std::string& reference_name) {
  const int64_t model = m.desc().vocab_size;
  if (model != reference)
    fail_file(m.artifact().dir(), "its vocabulary (" + std::to_string(model) + ") differs from the reference's (" +
                                      reference_name + ", " + std::to_string(reference) + ")");
}

}  // namespace

KldResult kl_divergence(const ExecModel& model, const ExecModel& reference, const std::vector<int>& tokens,
                        int64_t ctx, int bos, int64_t chunks, ThreadPool& pool, const std::string& label) {
  require_same_vocab(model, reference.desc().vocab_size, reference.artifact().dir());
  const WindowPlan plan = plan_windows(tokens.size(), ctx, chunks);
  KldScores s(size_t(plan.positions()), size_t(model.desc().vocab_size));
  run_windows({&model, &reference}, tokens, plan, bos, pool,
              [&](size_t slot, const std::vector<const float*>& logits, int target) {
                s.score(slot, logits[0], logits[1], target);
              }, label);
  return s.finish(plan, model.artifact().dir(), reference.artifact().dir());
}

KldResult kl_divergence(const ExecModel& model, const ReferenceLogits& reference, const std::string& reference_name,
                        const std::vector<int>& tokens, int64_t ctx, int bos, int64_t chunks, ThreadPool& pool,
                        const std::string& label) {
  require_same_vocab(model, int64_t(reference.vocab()), reference_name);
  const WindowPlan plan = plan_windows(tokens.size(), ctx, chunks);
  if (size_t(plan.positions()) != reference.positions())
    fail("the reference logits cover " + std::to_string(reference.positions()) + " positions, the windows " +
         std::to_string(plan.positions()));
  KldScores s(size_t(plan.positions()), reference.vocab());
  run_windows({&model}, tokens, plan, bos, pool,
              [&](size_t slot, const std::vector<const float*>& logits, int target) {
                thread_local std::vector<float> ref;
                ref.resize(reference.vocab());
                reference.read(slot, ref.data());
                s.score(slot, logits[0], ref.data(), target);
              }, label);
  return s.finish(plan, model.artifact().dir(), reference_name);
}

}  // namespace sf

