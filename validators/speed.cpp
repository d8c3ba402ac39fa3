#include "validators/speed.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "core/error.h"
#include "core/interrupt.h"
#include "core/progress.h"
#include "executor/session.h"

namespace sf {

namespace {
Throughput summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return {n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2, v.front(), v.back()};
}
}  // namespace

// Special ids are skipped by counting past them, so every other id stays equally likely.
std::vector<int32_t> bench_prompt(const ModelDesc& d, int64_t n) {
  std::vector<int64_t> special;
  for (int64_t id : {d.special.mask, d.special.gmask, d.special.bos})
    if (id >= 0 && id < d.vocab_size && std::find(special.begin(), special.end(), id) == special.end())
      special.push_back(id);
  std::sort(special.begin(), special.end());
  const int64_t choices = d.vocab_size - int64_t(special.size());
  if (choices <= 0) special.clear();  // nothing else to choose: any id
  uint32_t state = 12345;
  std::vector<int32_t> prompt(static_cast<size_t>(n));
  for (auto& id : prompt) {
    state = state * 1664525u + 1013904223u;
    // The r-th id that is not special: step past each special id at or below it, in order.
    int64_t r = int64_t(state % uint32_t(special.empty() ? d.vocab_size : choices));
    for (int64_t s : special)
      if (r >= s) ++r;
    id = int32_t(r);
  }
  return prompt;
}

int64_t peak_rss_bytes() {
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return int64_t(ru.ru_maxrss) * 1024;
}

SpeedResult measure_speed(const std::string& dir, int64_t prefill, int64_t decode, int64_t threads, int64_t reps,
                          const std::string& label) {
  using clock = std::chrono::steady_clock;
  auto secs = [](clock::time_point a, clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };
  if (prefill < 1 || decode < 0) fail("bench needs -p >= 1 and -n >= 0");
  if (reps < 1) fail("speed needs at least one repetition");
  SpeedResult r;
  const auto t0 = clock::now();
  ExecModel model(dir);
  r.load_seconds = secs(t0, clock::now());
  ThreadPool pool(static_cast<size_t>(threads));
  r.threads = int64_t(pool.size());
  const int64_t vocab = model.desc().vocab_size;
  Progress bar(label, size_t(reps * (prefill + decode)));
  std::vector<double> prefill_rates, decode_rates;
  for (int64_t rep = 0; rep < reps; ++rep) {
    check_interrupt();
    Session s(model, prefill + decode, &pool);
    const std::vector<int32_t> prompt = bench_prompt(model.desc(), prefill);
    const auto t2 = clock::now();
    const float* logits = s.forward(prompt.data(), prompt.size(), prompt.size() - 1);  // one prefill call
    for (int64_t i = 0; i < prefill; ++i) bar.step();
    const auto t3 = clock::now();
    for (int64_t i = 0; i < decode; ++i) {
      int32_t best = 0;
      for (int64_t v = 1; v < vocab; ++v)
        if (logits[v] > logits[best]) best = int32_t(v);
      logits = s.forward(best);
      bar.step();
    }
    const auto t4 = clock::now();
    prefill_rates.push_back(double(prefill) / std::max(1e-9, secs(t2, t3)));
    decode_rates.push_back(decode ? double(decode) / std::max(1e-9, secs(t3, t4)) : 0.0);
  }
  r.prefill_tokens = prefill;
  r.decode_tokens = decode;
  r.reps = reps;
  r.prefill = summarize(prefill_rates);
  r.decode = summarize(decode_rates);
  r.prefill_tokens_per_s = r.prefill.median;
  r.decode_tokens_per_s = r.decode.median;
  r.peak_rss_bytes = peak_rss_bytes();
  return r;
}

}  // namespace sf
