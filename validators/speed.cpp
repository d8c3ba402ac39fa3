#include "validators/speed.h"

#include <sys/resource.h>

#include <chrono>

#include "core/error.h"
#include "executor/session.h"

namespace sf {

int64_t peak_rss_bytes() {
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return int64_t(ru.ru_maxrss) * 1024;
}

SpeedResult measure_speed(const std::string& dir, int64_t prefill, int64_t decode, int64_t threads) {
  using clock = std::chrono::steady_clock;
  auto secs = [](clock::time_point a, clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };
  if (prefill < 1 || decode < 0) fail("bench needs -p >= 1 and -n >= 0");
  SpeedResult r;
  const auto t0 = clock::now();
  ExecModel model(dir);
  const auto t1 = clock::now();
  r.load_seconds = secs(t0, t1);
  ThreadPool pool(static_cast<size_t>(threads));
  r.threads = int64_t(pool.size());
  Session s(model, prefill + decode, &pool);
  const int64_t vocab = model.desc().vocab_size;
  // A fixed pseudo-random prompt: the content does not change the work done.
  uint32_t state = 12345;
  const auto t2 = clock::now();
  const float* logits = nullptr;
  for (int64_t i = 0; i < prefill; ++i) {
    state = state * 1664525u + 1013904223u;
    logits = s.forward(int32_t(state % uint32_t(vocab)), i + 1 == prefill);
  }
  const auto t3 = clock::now();
  for (int64_t i = 0; i < decode; ++i) {
    int32_t best = 0;
    for (int64_t v = 1; v < vocab; ++v)
      if (logits[v] > logits[best]) best = int32_t(v);
    logits = s.forward(best);
  }
  const auto t4 = clock::now();
  r.prefill_tokens = prefill;
  r.decode_tokens = decode;
  r.prefill_tokens_per_s = double(prefill) / std::max(1e-9, secs(t2, t3));
  r.decode_tokens_per_s = decode ? double(decode) / std::max(1e-9, secs(t3, t4)) : 0.0;
  r.peak_rss_bytes = peak_rss_bytes();
  return r;
}

}  // namespace sf
