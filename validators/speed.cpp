#include "validators/speed.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/interrupt.h"
#include "core/progress.h"
#include "executor/session.h"

namespace sf {

namespace {
using Clock = std::chrono::steady_clock;
double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

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

// VmHWM, which reset_peak_rss moves down; getrusage's figure where /proc is not there.
int64_t peak_rss_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::atoll(line.c_str() + 6) * 1024;
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return int64_t(ru.ru_maxrss) * 1024;
}

bool reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return bool(out);
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
  // One session for every repetition, its scratch for the whole prompt allocated here: a session
  // per repetition made every prefill sample pay the allocation and zero-filling of it.
  Session s(model, prefill + decode, &pool);
  s.reserve(size_t(prefill));
  const std::vector<int32_t> prompt = bench_prompt(model.desc(), prefill);
  for (int64_t rep = 0; rep < reps; ++rep) {
    check_interrupt();
    s.reset();
    const auto t2 = clock::now();
    const float* logits = s.forward(prompt.data(), prompt.size(), prompt.size() - 1);  // one prefill call
    const auto t3 = clock::now();
    for (int64_t i = 0; i < decode; ++i) {
      int32_t best = 0;
      for (int64_t v = 1; v < vocab; ++v)
        if (logits[v] > logits[best]) best = int32_t(v);
      logits = s.forward(best);
    }
    const auto t4 = clock::now();
    // The bar is stepped outside the timed windows (it takes a lock and may draw).
    for (int64_t i = 0; i < prefill + decode; ++i) bar.step();
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

// ---- bench tables ----

std::string BenchTest::name() const { return (kind == BenchKind::Prefill ? "pp" : "tg") + std::to_string(tokens); }
int64_t BenchTest::prompt_tokens() const { return kind == BenchKind::Prefill ? tokens : kDecodePromptTokens; }
int64_t BenchTest::generated_tokens() const { return kind == BenchKind::Prefill ? 0 : tokens; }
int64_t BenchTest::positions() const { return prompt_tokens() + generated_tokens(); }

std::vector<BenchTest> bench_tests(const BenchPlan& plan) {
  std::vector<BenchTest> tests;
  for (int64_t r : plan.resident)
    for (int64_t t : plan.threads) {
      for (int64_t p : plan.prompts) tests.push_back({BenchKind::Prefill, p, 1, t, r});
      for (int64_t n : plan.generated)
        for (int64_t b : plan.batches) tests.push_back({BenchKind::Decode, n, b, t, r});
    }
  return tests;
}

namespace {

int32_t argmax(const float* logits, int64_t n) {
  int32_t best = 0;
  for (int64_t v = 1; v < n; ++v)
    if (logits[v] > logits[best]) best = int32_t(v);
  return best;
}

// One timed repetition of a test on a session sized for it; tokens per second.
class BenchRunner {
 public:
  BenchRunner(const ExecModel& model, const BenchTest& test, ThreadPool& pool, Progress& bar)
      : model_(model), test_(test), bar_(bar),
        session_(model, test.positions(), &pool, size_t(test.kind == BenchKind::Prefill ? 1 : test.batch)),
        prompt_(bench_prompt(model.desc(), test.prompt_tokens() * test.batch)) {
    for (size_t b = 0; b < session_.slots(); ++b) slots_.push_back(b);
    tokens_.resize(slots_.size());
    // Scratch for the longest call allocated now, not inside the first repetition's timer.
    session_.reserve(size_t(test.prompt_tokens()));
  }

  double rep() {
    session_.reset();
    return test_.kind == BenchKind::Prefill ? prefill() : decode();
  }

 private:
  double prefill() {
    const auto t0 = Clock::now();
    session_.forward(prompt_.data(), prompt_.size(), prompt_.size() - 1);  // one call, as run and eval do
    const auto t1 = Clock::now();
    for (size_t i = 0; i < prompt_.size(); ++i) bar_.step();  // after the timer: the bar locks and draws
    return double(prompt_.size()) / std::max(1e-9, seconds(t0, t1));
  }

  // Each sequence prefills its own slice of the prompt (untimed), then all decode together: each
  // step feeds every sequence its greedy next token.
  double decode() {
    const int64_t vocab = model_.desc().vocab_size;
    const size_t P = size_t(kDecodePromptTokens);
    for (size_t b = 0; b < slots_.size(); ++b)
      tokens_[b] = argmax(session_.prefill(b, &prompt_[b * P], P, P - 1), vocab);
    const auto t0 = Clock::now();
    for (int64_t step = 0; step < test_.tokens; ++step) {
      check_interrupt();
      const float* rows = session_.decode(tokens_.data(), slots_.data(), slots_.size());
      for (size_t b = 0; b < slots_.size(); ++b) tokens_[b] = argmax(rows + b * size_t(vocab), vocab);
    }
    const auto t1 = Clock::now();
    // The bar is stepped after the timer (it locks and may draw), a repetition at a time.
    for (size_t i = 0; i < size_t(test_.tokens) * slots_.size(); ++i) bar_.step();
    return double(test_.tokens) * double(slots_.size()) / std::max(1e-9, seconds(t0, t1));
  }

  const ExecModel& model_;
  const BenchTest& test_;
  Progress& bar_;
  Session session_;
  std::vector<int32_t> prompt_;
  std::vector<size_t> slots_;
  std::vector<int32_t> tokens_;
};

void summarize(BenchRow& r) {
  const std::vector<double>& v = r.samples;
  const double n = double(v.size());
  double sum = 0;
  for (double x : v) sum += x;
  r.mean = sum / n;
  double ss = 0;
  for (double x : v) ss += (x - r.mean) * (x - r.mean);
  r.sd = v.size() > 1 ? std::sqrt(ss / (n - 1)) : 0.0;
  const Throughput t = summarize(v);
  r.median = t.median, r.min = t.min, r.max = t.max;
}

}  // namespace

BenchReport run_bench(const std::string& dir, const BenchPlan& plan, const std::string& label) {
  if (plan.reps < 1) fail("bench needs at least one repetition");
  const std::vector<BenchTest> tests = bench_tests(plan);
  BenchReport report;
  reset_peak_rss();
  const auto t0 = Clock::now();
  auto model = std::make_unique<ExecModel>(dir, tests.front().resident);
  report.load_seconds = seconds(t0, Clock::now());
  int64_t model_resident = tests.front().resident;
  for (const TensorSpec& spec : all_tensors(model->desc())) {
    const TensorView& t = model->artifact().tensor(spec.name);
    report.weight_bytes += t.nbytes;
    uint64_t numel = 1;
    for (int64_t d : t.shape) numel *= uint64_t(d);
    report.params += numel;
  }
  size_t total = 0;
  for (const BenchTest& t : tests) total += size_t(plan.reps * t.tokens * t.batch);
  Progress bar(label, total);
  std::unique_ptr<ThreadPool> pool;  // one per thread count, the tests of one count being adjacent
  int64_t pool_threads = -1;
  for (const BenchTest& test : tests) {
    check_interrupt();
    if (test.resident != model_resident) {  // a residency's rows are adjacent: one model each
      pool.reset();
      model.reset();
      reset_peak_rss();
      model = std::make_unique<ExecModel>(dir, test.resident);
      model_resident = test.resident;
      pool_threads = -1;
    }
    if (test.threads != pool_threads) {
      pool.reset();
      pool = std::make_unique<ThreadPool>(size_t(test.threads));
      // Untimed warm-up of every new pool: the first also takes the mapped weights' page faults,
      // each starts its workers before a test's timer does.
      Session(*model, 1, pool.get()).forward(bench_prompt(model->desc(), 1)[0]);
      pool_threads = test.threads;
    }
    BenchRow row;
    row.test = test;
    row.threads = int64_t(pool->size());
    BenchRunner runner(*model, test, *pool, bar);
    for (int64_t rep = 0; rep < plan.reps; ++rep) {
      check_interrupt();
      row.samples.push_back(runner.rep());
    }
    summarize(row);
    row.peak_rss_bytes = peak_rss_bytes();
    report.rows.push_back(std::move(row));
  }
  // The highest of the residencies' peaks (each measured from its own model's opening).
  for (const BenchRow& row : report.rows) report.peak_rss_bytes = std::max(report.peak_rss_bytes, row.peak_rss_bytes);
  return report;
}

MachineInfo machine_info() {
  MachineInfo m;
  m.cores = int64_t(std::max(1u, std::thread::hardware_concurrency()));
  m.cpu = "unknown";
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  for (int i = 0; i < 4096 && std::getline(in, line); ++i) {
    if (line.rfind("model name", 0) != 0) continue;
    const size_t colon = line.find(':');
    if (colon == std::string::npos) break;
    const size_t start = line.find_first_not_of(" \t", colon + 1);
    if (start != std::string::npos) m.cpu = line.substr(start, 200);
    break;
  }
  return m;
}

}  // namespace sf
