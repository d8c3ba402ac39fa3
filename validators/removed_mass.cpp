#include "validators/removed_mass.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "validators/perplexity.h"
#include "validators/windows.h"

namespace sf {

RemovedMass removed_mass(const ExecModel& untrimmed, const VocabMap& map, const std::vector<int>& tokens,
                         int64_t ctx, int bos, int64_t chunks, ThreadPool& pool) {
  const size_t vocab = size_t(untrimmed.desc().vocab_size);
  if (int64_t(vocab) != map.old_size())
    fail_file(untrimmed.artifact().dir(), "its vocabulary (" + std::to_string(vocab) +
                                              ") is not the one the trim started from (" +
                                              std::to_string(map.old_size()) + ")");
  std::vector<size_t> dropped;
  for (size_t id = 0; id < vocab; ++id)
    if (!map.keeps(int64_t(id))) dropped.push_back(id);
  const WindowPlan plan = plan_windows(tokens.size(), ctx, chunks);
  const size_t n = size_t(plan.positions());
  std::vector<double> mass(n), nll(n);
  std::vector<char> target_dropped(n);
  const ScoreFn score = [&](size_t slot, const std::vector<const float*>& logits, int target) {
    thread_local std::vector<double> lp;
    log_softmax(logits[0], vocab, lp);
    double m = 0;
    for (size_t id : dropped) m += std::exp(lp[id]);
    mass[slot] = m;
    nll[slot] = -lp[size_t(target)];
    target_dropped[slot] = !map.keeps(target);
  };
  run_windows({&untrimmed}, tokens, plan, bos, pool, score, "removed mass");
  RemovedMass r;
  r.tokens_scored = int64_t(n);
  r.mean = mean_stderr(mass).mean;  // summed in slot order: the same for any thread count
  r.max = *std::max_element(mass.begin(), mass.end());
  r.untrimmed_ppl = std::exp(mean_stderr(nll).mean);
  for (char d : target_dropped) r.dropped_targets += d;
  require_finite(r.mean, "the removed probability mass", untrimmed.artifact().dir());
  require_finite(r.untrimmed_ppl, "perplexity", untrimmed.artifact().dir());
  return r;
}

}  // namespace sf
