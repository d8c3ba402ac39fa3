// bench ARTIFACT: llama-bench-style tables of prefill (pp) and decode (tg) tokens/s over lists of
// prompt lengths, generated lengths, thread counts and sequences decoding together; load time and
// peak RSS.
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <iostream>
#include <memory>

#include "cli/common.h"
#include "core/error.h"
#include "executor/matmul_simd.h"
#include "executor/session.h"
#include "formats/artifact.h"
#include "formats/artifact_readers.h"
#include "shardforge_version.h"
#include "validators/speed.h"

namespace sf::cli {

namespace {

constexpr int64_t kMaxBatch = 4096;
constexpr int64_t kMaxReps = 1000;

struct BenchOpts {
  std::string dir;
  std::vector<std::string> prompts{"128"}, generated{"64"}, threads{"0"}, batches{"1"}, resident;
  int64_t reps = 3;
  std::string output = "md";
  bool json_out = false, allow_long = false;
};

// Digits only, after an optional '-': strtoll alone would also take " 4" and "+4". A negative item
// where negatives are not allowed (-p, -n, --batch) passes here to be refused as out of range,
// which says what the option takes.
bool is_whole_number(const std::string& item) {
  const size_t first = !item.empty() && item[0] == '-' ? 1 : 0;
  if (first == item.size()) return false;
  return std::all_of(item.begin() + std::ptrdiff_t(first), item.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// "64,512" (or the option given several times) -> {64, 512}. Strict: an empty item, a value that
// is not a whole number (digits after an optional '-'), outside [lo, hi], or equal
// to one before it (it would only repeat a row) is a usage error naming the option.
std::vector<int64_t> parse_list(const std::string& option, const std::vector<std::string>& values, int64_t lo,
                                int64_t hi) {
  std::vector<int64_t> out;
  for_each_list_item(values, [&](const std::string& item, const std::string& v) {
    if (item.empty()) fail_usage(option + " '" + printable(v) + "': an empty item in the list");
    char* end = nullptr;
    errno = 0;
    const long long n = is_whole_number(item) ? std::strtoll(item.c_str(), &end, 10) : 0;
    if (end != item.c_str() + item.size() || errno)
      fail_usage(option + " '" + printable(item) + "': not a whole number (a list looks like 32 or 32,128)");
    if (n < lo || n > hi)
      fail_usage(option + " " + item + " is out of range: must be " + std::to_string(lo) + " to " +
                 std::to_string(hi));
    if (std::find(out.begin(), out.end(), n) != out.end())
      fail_usage(option + " " + std::to_string(n) + " given twice: each value makes its own rows once");
    out.push_back(n);
  });
  return out;
}

// Thread counts go through the common rule: 0 = all cores, negative refused, too many clamped
// with a warning. Negative counts are refused here; resolve_threads() later, once nothing else
// can fail, so a refused run prints only its error line.
std::vector<int64_t> parse_threads(const std::vector<std::string>& values) {
  std::vector<int64_t> out = parse_list("-t/--threads", values, INT64_MIN, INT64_MAX);
  for (int64_t t : out)
    if (t < 0) resolve_threads(t);
  return out;
}

// B sequences each hold a KV cache of their positions and a row of logits: refused up front when
// that and the weights would not fit in memory, naming --batch rather than failing after minutes.
void check_batch_memory(const Artifact& a, const std::vector<int64_t>& batches, int64_t positions) {
  const uint64_t memory = physical_memory_bytes(), weights = a.file_bytes();
  for (int64_t b : batches) {
    const uint64_t kv = kv_cache_bytes(a.desc(), positions, size_t(b));
    const uint64_t logits = uint64_t(b) * uint64_t(a.desc().vocab_size) * sizeof(float);  // b <= kMaxBatch
    uint64_t total = 0;
    const bool overflows = __builtin_add_overflow(kv, logits, &total) || __builtin_add_overflow(total, weights, &total);
    if (overflows || total > memory)
      fail_usage("--batch " + std::to_string(b) + ": " + std::to_string(b) + " sequences of " +
                 std::to_string(positions) + " positions need " + human_bytes(kv) + " of KV cache and " +
                 human_bytes(logits) + " of logits beside " + human_bytes(weights) +
                 " of weights, more than this machine's " + human_bytes(memory) + " of memory");
  }
}

std::string model_name(const std::string& dir) {
  std::string d = dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  const size_t slash = d.find_last_of('/');
  return slash == std::string::npos ? d : d.substr(slash + 1);
}

// "151.03 M": params as llama-bench prints them.
std::string count(uint64_t n) {
  const char* units[] = {"", " K", " M", " B", " T"};
  double v = double(n);
  int u = 0;
  while (v >= 1000 && u < 4) {
    v /= 1000;
    ++u;
  }
  return fmt(u ? "%.2f" : "%.0f", v) + units[u];
}

std::string md_cell(const std::string& s) {
  std::string out;
  for (char c : printable(s)) out += c == '|' ? std::string("\\|") : std::string(1, c);
  return out;
}

// RFC 4180 quoting when needed; control characters were escaped by printable() already.
std::string csv_cell(const std::string& raw) {
  const std::string s = printable(raw);
  if (s.find_first_of(",\"") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

// With --resident-blocks, each row also says how many blocks were kept and the peak RSS so far.
std::string resident_name(int64_t n) { return n == 0 ? std::string("all") : std::to_string(n); }

void print_md(const std::string& name, const BenchReport& r, bool residency) {
  std::cout << "| model | size | params | threads | batch |" << (residency ? " resident | peak RSS |" : "")
            << " test | t/s |\n"
            << "| --- | ---: | ---: | ---: | ---: |" << (residency ? " ---: | ---: |" : "") << " --- | ---: |\n";
  for (const BenchRow& row : r.rows) {
    std::cout << "| " << md_cell(name) << " | " << human_bytes(r.weight_bytes) << " | " << count(r.params) << " | "
              << row.threads << " | " << row.test.batch << " | ";
    if (residency)
      std::cout << resident_name(row.test.resident) << " | " << human_bytes(uint64_t(row.peak_rss_bytes)) << " | ";
    std::cout << row.test.name() << " | " << fmt("%.2f", row.mean) << " ± " << fmt("%.2f", row.sd) << " |\n";
  }
  std::cout << "\nload " << fmt("%.3f", r.load_seconds) << " s, peak RSS "
            << human_bytes(uint64_t(r.peak_rss_bytes)) << ", kernels for "
            << kernels::simd::target_name(kernels::simd::active_target()) << "\n";
}

void print_csv(const std::string& name, const BenchReport& r, int64_t reps) {
  std::cout << "model,size,params,threads,batch,resident,peak_rss,test,n_prompt,n_gen,reps,ts_mean,ts_sd,ts_median\n";
  for (const BenchRow& row : r.rows)
    std::cout << csv_cell(name) << "," << r.weight_bytes << "," << r.params << "," << row.threads << ","
              << row.test.batch << "," << row.test.resident << "," << row.peak_rss_bytes << "," << row.test.name()
              << "," << row.test.prompt_tokens() << "," << row.test.generated_tokens() << "," << reps << ","
              << fmt("%.3f", row.mean) << "," << fmt("%.3f", row.sd) << "," << fmt("%.3f", row.median) << "\n";
}

void print_bench_json(const BenchOpts& o, const std::string& name, const BenchReport& r) {
  const MachineInfo m = machine_info();
  json rows = json::array();
  for (const BenchRow& row : r.rows)
    rows.push_back({{"test", row.test.name()},
                    {"n_prompt", row.test.prompt_tokens()},
                    {"n_gen", row.test.generated_tokens()},
                    {"batch", row.test.batch},
                    {"threads", row.threads},
                    {"resident_blocks", row.test.resident},
                    {"peak_rss_bytes", row.peak_rss_bytes},
                    {"tokens_per_s",
                     {{"mean", row.mean}, {"sd", row.sd}, {"median", row.median}, {"min", row.min}, {"max", row.max}}},
                    {"samples", row.samples}});
  print_json({{"model", name},
              {"artifact", o.dir},
              {"size", r.weight_bytes},
              {"params", r.params},
              {"reps", o.reps},
              {"decode_prompt_tokens", kDecodePromptTokens},
              {"load_seconds", r.load_seconds},
              {"peak_rss_bytes", r.peak_rss_bytes},
              {"machine", {{"cpu", m.cpu}, {"cores", m.cores}, {"simd", kernels::simd::target_name(kernels::simd::active_target())}}},
              {"version", SHARDFORGE_VERSION},
              {"rows", rows}});
}

int run_bench(BenchOpts o) {
  // Every option is checked before the artifact is opened: a typo is a usage error, whatever the
  // artifact.
  if (o.json_out) {
    if (o.output != "json" && o.output != "md") fail_usage("--json and -o " + o.output + " contradict each other");
    o.output = "json";
  }
  BenchPlan plan;
  plan.prompts = parse_list("-p", o.prompts, 1, kMaxGenerate);
  plan.generated = parse_list("-n", o.generated, 1, kMaxGenerate);
  plan.batches = parse_list("--batch", o.batches, 1, kMaxBatch);
  plan.threads = parse_threads(o.threads);
  if (!o.resident.empty()) plan.resident = parse_list("--resident-blocks", o.resident, 0, 1000000000);
  plan.reps = o.reps;
  set_current_input(o.dir);
  {
    // Opened once for its description (and its checks) before run_bench times its own open.
    // Checks that can fail come before those that can only warn (-t, --allow-long-context).
    const Artifact a = open_model(o.dir);
    const int64_t longest_gen = *std::max_element(plan.generated.begin(), plan.generated.end());
    check_batch_memory(a, plan.batches, kDecodePromptTokens + longest_gen);
    for (int64_t p : plan.prompts) check_context(a.desc(), o.dir, p, "-p " + std::to_string(p), o.allow_long);
    // The prompt's part of the message built once, then appended to (GCC 12's -Warray-bounds
    // misreads the inlined rvalue-string concatenation here as an overrun when the CLI's units are
    // compiled as one).
    const std::string decode_prompt = std::to_string(kDecodePromptTokens) + " prompt tokens";
    for (int64_t n : plan.generated)
      check_context(a.desc(), o.dir, kDecodePromptTokens + n, decode_prompt + " + -n " + std::to_string(n),
                    o.allow_long);
  }
  for (int64_t& t : plan.threads) t = int64_t(resolve_threads(t));
  const BenchReport r = run_bench(o.dir, plan);
  const std::string name = model_name(o.dir);
  if (o.output == "json")
    print_bench_json(o, name, r);
  else if (o.output == "csv")
    print_csv(name, r, o.reps);
  else
    print_md(name, r, !o.resident.empty());
  return 0;
}

}  // namespace

void add_bench(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<BenchOpts>();
  auto* c = app.add_subcommand("bench", "Tables of prefill and decode tokens/s (like llama-bench), load time, peak memory");
  c->add_option("artifact", o->dir, "artifact (a directory or a file)")->required();
  // Each occurrence takes one value (a comma list), so `-p 64 ARTIFACT` leaves ARTIFACT alone.
  c->add_option("-p", o->prompts, "prompt lengths, e.g. 64,512 (pp rows; default 128)")->allow_extra_args(false);
  c->add_option("-n", o->generated, "generated tokens per sequence, e.g. 32 (tg rows; default 64)")
      ->allow_extra_args(false);
  c->add_option("-t,--threads", o->threads,
                "worker thread counts, e.g. 1,2 (0 = all cores, the default; at most " + std::to_string(max_threads()) +
                    " here)")
      ->allow_extra_args(false);
  c->add_option("--batch", o->batches, "sequences decoding together, e.g. 1,8 (default 1)")->allow_extra_args(false);
  c->add_option("--resident-blocks", o->resident,
                "blocks kept in memory, the others streamed from the files each pass, e.g. 1,4,0 (0 = all, the "
                "default); adds each setting's peak RSS to the table")
      ->allow_extra_args(false);
  c->add_option("-r,--repetitions", o->reps, "repetitions of each test")
      ->default_val(3)
      ->check(within(1, double(kMaxReps)));
  c->add_option("-o,--output", o->output, "md (default), csv or json")->check(CLI::IsMember({"md", "csv", "json"}));
  add_allow_long_context(c, o->allow_long);
  c->add_flag("--json", o->json_out, "the same as -o json");
  c->callback([o, &exit_code] { exit_code = run_bench(*o); });
}

}  // namespace sf::cli
