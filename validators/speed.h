#pragma once
// Speed of the executor on an artifact: load time, prefill and decode throughput, peak RSS.
// measure_speed times one prefill + decode run (compare's timing); run_bench times llama-bench's
// tests — pp (prefill of one prompt), tg (decode, one or several sequences together) — over lists
// of sizes and thread counts.
#include <cstdint>
#include <string>
#include <vector>

#include "core/model_desc.h"

namespace sf {

// A throughput measured `reps` times: one run is noise (a busy neighbour halves it), so report the
// median and the range.
struct Throughput {
  double median = 0, min = 0, max = 0;
};

struct SpeedResult {
  double load_seconds = 0;
  int64_t prefill_tokens = 0, decode_tokens = 0, reps = 0;
  double prefill_tokens_per_s = 0, decode_tokens_per_s = 0;  // medians over the repetitions
  Throughput prefill, decode;
  int64_t peak_rss_bytes = 0;
  int64_t threads = 0;
};

// Loads the artifact once, then runs prefill + decode tokens `reps` times on one session, reset
// between runs, its scratch for the prompt allocated before any timer starts. Shows the tokens
// done as a progress bar labelled `label` on a terminal, stepped outside the timed windows.
SpeedResult measure_speed(const std::string& artifact_dir, int64_t prefill, int64_t decode, int64_t threads,
                          int64_t reps = 1, const std::string& label = "bench");
int64_t peak_rss_bytes();
// Starts a new peak: the process's high-water resident set is set to what it holds now (Linux
// /proc/self/clear_refs). False where the system cannot; then peak_rss_bytes stays the process's.
bool reset_peak_rss();
// The prompt bench times: a fixed pseudo-random sequence of n ids that avoids the model's special
// ids. For a causal model any ids do the same work, but a prefix-bidirectional one (ChatGLM-6B)
// reads <sop> as the end of a bidirectional prefix and [gMASK] / [MASK] as the position it
// generates from: a special id drawn at random would change the mask and positions, and
// differently for each vocabulary size, so two artifacts of one model (a trimmed one renumbers
// them) would not be timed on the same work. Without them the whole prompt is causal.
std::vector<int32_t> bench_prompt(const ModelDesc& desc, int64_t n);

// ---- bench tables ----
// Every decoding sequence first prefills this many tokens (untimed), its own slice of
// bench_prompt, so sequences of a batch differ and tg rows do not depend on -p.
inline constexpr int64_t kDecodePromptTokens = 16;

enum class BenchKind { Prefill, Decode };

// One row of the table: pp<tokens> is the prefill of one prompt of `tokens`; tg<tokens> is
// `batch` sequences each generating `tokens` greedily, decoded together (one row per sequence
// per step), timed as batch x tokens / seconds.
struct BenchTest {
  BenchKind kind = BenchKind::Prefill;
  int64_t tokens = 0;
  int64_t batch = 1;
  int64_t threads = 0;  // as asked: 0 = all cores
  int64_t resident = 0;  // --resident-blocks: blocks kept in memory, 0 = all
  std::string name() const;                   // "pp64", "tg32"
  int64_t positions() const;                  // KV positions each sequence needs
  int64_t prompt_tokens() const;              // pp: tokens; tg: kDecodePromptTokens
  int64_t generated_tokens() const;           // pp: 0; tg: tokens
};

struct BenchPlan {
  std::vector<int64_t> prompts, generated, threads, batches;
  std::vector<int64_t> resident{0};
  int64_t reps = 1;
};

// The tests in table order: for each residency, for each thread count, a pp row per prompt
// length, then a tg row per generated length and batch size.
// |resident| x |threads| x (|prompts| + |generated| x |batches|) rows.
std::vector<BenchTest> bench_tests(const BenchPlan& plan);

struct BenchRow {
  BenchTest test;
  int64_t threads = 0;          // the pool's size (0 resolved to the cores)
  std::vector<double> samples;  // tokens/s of each repetition
  // The process's peak resident memory since the model was opened with this row's residency, up
  // to the end of this row (the process's whole peak where it cannot be reset).
  int64_t peak_rss_bytes = 0;
  double mean = 0, sd = 0, median = 0, min = 0, max = 0;  // sd: sample standard deviation (0 for one)
};

struct BenchReport {
  uint64_t weight_bytes = 0;  // every tensor as stored
  uint64_t params = 0;        // elements of every tensor (a tied head counted once)
  double load_seconds = 0;
  int64_t peak_rss_bytes = 0;
  std::vector<BenchRow> rows;
};

// Loads the artifact once per residency (its peak RSS measured from there), passes one token
// through every block on each thread count's new pool
// (so the first test does not pay the mapped weights' page faults nor a pool's start), then runs
// each test `reps` times on one session per test, its scratch allocated before the first timer.
// A progress bar labelled `label` counts the tokens on a terminal, stepped outside the timers.
BenchReport run_bench(const std::string& artifact_dir, const BenchPlan& plan, const std::string& label = "bench");

// The machine a table was measured on.
struct MachineInfo {
  std::string cpu;  // /proc/cpuinfo's model name, "unknown" when it has none
  int64_t cores = 0;
};
MachineInfo machine_info();

}  // namespace sf
