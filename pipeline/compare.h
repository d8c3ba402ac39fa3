#pragma once
// `compare`: convert one source with several schemes and measure each against the first one -
// size, bits per weight, perplexity, KL-divergence, top-1 agreement, prefill and decode speed.
#include <cstdint>
#include <string>
#include <vector>

#include "validators/speed.h"

namespace sf {

inline constexpr int64_t kDefaultCompareTuneSteps = 100;

struct CompareOptions {
  std::string source, text, tokenizer, keep_dir;  // keep_dir empty: artifacts go to a temporary directory
  std::string format = "shards";                  // --format: what each scheme is converted to (a runnable one)
  // --out, --plot: each checked (check_report_path) against the inputs and each other before
  // converting; the caller writes them, checking again against report_inputs.
  std::vector<std::string> reports;
  std::vector<std::string> report_inputs;  // set by compare_schemes: what no report may be or lie in
  // The first is the reference. SCHEME+METHOD (int4:g128+gptq, q4_0+awq) is a calibrated
  // conversion (convert --calib-method METHOD) on `calib`, SCHEME+METHOD+tune one followed by scale
  // tuning (convert --calib-tune-steps calib_tune_steps); the row keeps the label as given.
  std::vector<std::string> schemes;
  std::string calib;                              // --calib FILE | ids:FILE for the +METHOD schemes
  int64_t calib_tokens = 0, calib_ctx = 0;        // 0: convert's defaults
  int64_t calib_tune_steps = kDefaultCompareTuneSteps;
  std::string trim_vocab;                         // --trim-vocab SPEC for every conversion; the text is mapped
  int64_t ctx = 0, chunks = -1, bench_tokens = 32, bench_reps = 5;
  size_t threads = 0;
  bool allow_long_context = false;  // --ctx and 2 x bench_tokens may exceed the model's context length (max_seq)
};

struct CompareRow {
  std::string scheme;
  uint64_t weight_bytes = 0;  // artifact files other than the manifest and the tokenizer
  double bits_per_weight = 0, ppl = 0, ppl_stderr = 0, kld = 0, kld_stderr = 0, top1 = 1;
  Throughput prefill, decode;  // tokens/s over bench_reps runs
  int64_t tokens_scored = 0;
};

// Checks every input (text, tokenizer, at least one window, --ctx and --bench-tokens against the
// context length) and output (the report path, --keep targets) first, then
// converts, evaluates and deletes one scheme at a time (unless kept): the reference first, its
// logits stored once in a temporary file, every other scheme compared against that file. SIGINT /
// SIGTERM stop it between windows, with every temporary file removed.
// opt.ctx 0 means kDefaultCompareCtx, or the model's context length when that is shorter; it is
// set to the window length used.
std::vector<CompareRow> compare_schemes(CompareOptions& opt);

// "int4:g128+gptq" -> scheme "int4:g128", method "gptq" (empty without '+'). Usage errors for a bad
// scheme or an unknown method.
struct CompareScheme {
  std::string scheme, method;
  bool tune = false;              // "+tune" after the method
  std::string canonical() const;  // the scheme's canonical spelling, "+method[+tune]" when calibrated
};
CompareScheme parse_compare_scheme(const std::string& label);
inline constexpr int64_t kDefaultCompareCtx = 256;

}  // namespace sf
