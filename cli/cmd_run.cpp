// run ARTIFACT -p PROMPT: generate text with the reference executor.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <random>

#include <cstdio>

#include "cli/artifact_text.h"
#include "cli/common.h"
#include "core/error.h"
#include "executor/session.h"
#include "formats/output_dir.h"
#include "validators/model_tokenizer.h"

namespace sf::cli {

namespace {
// Past this the distribution is uniform to within float precision: a larger value is a typo.
constexpr double kMaxTemp = 100.0;

struct RunOpts {
  std::string dir, prompt, logits_file;
  std::vector<std::string> ids_text;  // --ids as given: "1,2,3" (or several values)
  std::vector<int> ids;
  int64_t n = 64;
  double temp = 0.0;
  uint64_t seed = 0;
  size_t threads = 0;
  int64_t resident = 0;
  bool ignore_eos = false, json_out = false, allow_long = false;
};

int32_t pick(const float* logits, int64_t vocab, double temp, std::mt19937_64& rng) {
  int32_t best = 0;
  for (int64_t v = 1; v < vocab; ++v)
    if (logits[v] > logits[best]) best = int32_t(v);
  if (temp <= 0) return best;
  std::vector<double> p(static_cast<size_t>(vocab));
  double sum = 0;
  for (int64_t v = 0; v < vocab; ++v) sum += (p[size_t(v)] = std::exp((double(logits[v]) - logits[best]) / temp));
  double r = std::uniform_real_distribution<double>(0.0, sum)(rng);
  for (int64_t v = 0; v < vocab; ++v)
    if ((r -= p[size_t(v)]) <= 0) return int32_t(v);
  return int32_t(vocab - 1);
}

// Raw little-endian f32 rows, one per position whose logits were computed.
class LogitsDump {
 public:
  LogitsDump(const std::string& path, int64_t vocab) : path_(path), vocab_(vocab) {
    if (!path.empty()) f_ = open_report_file(path);  // after check_report_path, never through a link or FIFO
  }
  ~LogitsDump() { if (f_) std::fclose(f_); }
  void add(const float* logits) {
    if (f_ && std::fwrite(logits, sizeof(float), size_t(vocab_), f_) != size_t(vocab_)) fail_file(path_, "write failed (disk full?)", ErrorKind::IO);
  }
 private:
  std::string path_;
  FILE* f_ = nullptr;
  int64_t vocab_;
};

// "1,2,3" -> {1, 2, 3}. Strict: an empty list or element ("", "1,,2") is a usage error rather
// than a shorter prompt.
std::vector<int> parse_ids(const std::vector<std::string>& values) {
  std::vector<int> ids;
  for_each_list_item(values, [&](const std::string& item, const std::string& v) {
    char* end = nullptr;
    errno = 0;
    const long long id = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || end != item.c_str() + item.size() || errno || id < INT32_MIN || id > INT32_MAX)
      fail_usage("--ids '" + v + "': expected comma-separated token ids such as 1,2,3");
    ids.push_back(int(id));
  });
  return ids;
}

// --ids are used as given, so each must name a row of the embedding.
void check_ids(const std::vector<int>& ids, int64_t vocab) {
  for (int id : ids)
    if (id < 0 || id >= vocab)
      fail_usage("--ids: token id " + std::to_string(id) + " is outside the vocabulary (0 to " +
                 std::to_string(vocab - 1) + ")");
}

int run_generation(const RunOpts& o) {
  set_current_input(o.dir);
  // Before loading: the artifact's files are mapped, so writing over one would crash the run (SIGBUS).
  check_report_path(o.logits_file, {o.dir});
  ExecModel model(o.dir, o.resident);
  const int64_t vocab = model.desc().vocab_size;
  // Text goes through the artifact's vocabulary map (a trimmed artifact numbers its rows anew).
  const std::unique_ptr<ModelTokenizer> tok = open_text_tokenizer(model.artifact());
  std::vector<int> prompt;
  if (!o.ids.empty()) {
    check_ids(o.ids, vocab);
    prompt = o.ids;  // exactly as given (model ids): no BOS added
  } else {
    if (!tok) fail_no_tokenizer(model.artifact(), "pass the prompt as token ids with --ids");
    if (tok->tokenizer().prompt_starts_with_bos()) prompt = {tok->bos()};
    for (int id : tok->to_model(tok->tokenizer().encode(o.prompt), "prompt")) prompt.push_back(id);
    // Generation needs a position to start from: an empty prompt is the start-of-text token alone.
    if (prompt.empty()) prompt = {tok->bos()};
  }
  // The last generated token is never run, so the sequence takes prompt + n - 1 positions.
  const int64_t positions = int64_t(prompt.size()) + std::max<int64_t>(o.n - 1, 0);
  check_context(model.desc(), o.dir, positions,
                "prompt of " + std::to_string(prompt.size()) + " tokens + -n " + std::to_string(o.n), o.allow_long);
  const bool dump_all = !o.logits_file.empty();
  LogitsDump dump(o.logits_file, vocab);
  ThreadPool pool(o.threads);
  Session s(model, positions, &pool);
  // The whole prompt in one call (prefill); its logits rows kept only when they are dumped.
  const std::vector<int32_t> prompt32(prompt.begin(), prompt.end());
  const float* logits = s.forward(prompt32.data(), prompt32.size(), dump_all ? 0 : prompt32.size() - 1);
  if (dump_all)
    for (size_t i = 0; i < prompt32.size(); ++i) dump.add(logits + i * size_t(vocab));
  logits += (prompt32.size() - 1) * (dump_all ? size_t(vocab) : 0);
  std::mt19937_64 rng(o.seed);
  std::vector<int> out;
  // The last token with a piece, which the next piece's text follows: ids without one show as
  // nothing, so the text reads as if they were not there (SentencePiece keeps the space before a
  // word only after another piece).
  int prev = -1;
  if (tok)
    for (auto it = prompt.rbegin(); it != prompt.rend() && prev < 0; ++it)
      if (tok->has_piece(*it)) prev = *it;
  const bool stream = !o.json_out && tok;
  const int eos = tok ? tok->eos() : -1;  // -1: a trim dropped it
  if (stream) std::cout << o.prompt << std::flush;
  for (int64_t i = 0; i < o.n; ++i) {
    const int32_t next = pick(logits, vocab, o.temp, rng);
    if (next == eos && !o.ignore_eos) break;
    out.push_back(next);
    if (stream) std::cout << tok->piece_text(prev, next) << std::flush;
    if (tok && tok->has_piece(next)) prev = next;
    if (i + 1 < o.n) {
      logits = s.forward(next);
      if (dump_all) dump.add(logits);
    }
  }
  if (o.json_out || !tok) {
    json j = {{"prompt_ids", prompt}, {"ids", out}};
    if (tok) j["text"] = tok->decode(out);
    if (tok && tok->map()) {  // the same tokens as the tokenizer numbers them
      j["prompt_tokenizer_ids"] = tok->tokenizer_ids(prompt);
      j["tokenizer_ids"] = tok->tokenizer_ids(out);
    }
    print_json(j);
  } else {
    std::cout << "\n";
  }
  if (tok && !tok->unk_warning().empty()) warn(tok->unk_warning());
  if (tok && !tok->undecodable_warning().empty()) warn(tok->undecodable_warning());
  return 0;
}
}  // namespace

void add_run(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<RunOpts>();
  auto* c = app.add_subcommand("run", "Generate text from a prompt with the reference executor");
  c->add_option("artifact", o->dir, "artifact (a directory or a file)")->required();
  auto* p = c->add_option("-p,--prompt", o->prompt, "prompt text (BOS is prepended for SentencePiece tokenizers)");
  auto* ids = c->add_option("--ids", o->ids_text, "prompt as the model's token ids 1,2,3 (a trimmed artifact's own ids), used as given (no BOS added)")->excludes(p);
  p->excludes(ids);
  c->add_option("--logits", o->logits_file, "write every computed position's logits as raw f32 rows to FILE (a new or regular file, not inside an artifact)");
  c->add_option("-n", o->n, "tokens to generate")->default_val(64)->check(within(0, double(kMaxGenerate)));
  c->add_option("--temp", o->temp, "sampling temperature; 0 = greedy")->default_val(0.0)->check(within(0, kMaxTemp));
  c->add_option("--seed", o->seed, "random seed for sampling")->default_val(0);
  add_threads_option(c, o->threads);
  add_allow_long_context(c, o->allow_long);
  add_resident_blocks(c, o->resident);
  c->add_flag("--ignore-eos", o->ignore_eos, "keep generating past the end-of-sequence token");
  c->add_flag("--json", o->json_out, "print prompt ids, generated ids and text as JSON");
  c->callback([o, p, ids, &exit_code] {
    if (p->count() == 0 && ids->count() == 0) throw CLI::RequiredError("--prompt or --ids");
    if (ids->count() > 0) o->ids = parse_ids(o->ids_text);
    exit_code = run_generation(*o);
  });
}

}  // namespace sf::cli
