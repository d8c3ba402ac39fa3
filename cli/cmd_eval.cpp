// eval ppl ARTIFACT --text FILE: windowed perplexity with its standard error.
#include <iostream>
#include <memory>

#include "cli/common.h"
#include "core/error.h"
#include "core/fs_util.h"
#include "validators/perplexity.h"
#include "validators/tokenizer.h"

namespace sf::cli {

namespace {
struct PplOpts {
  std::string dir, text;
  int64_t ctx = 256, chunks = -1;
  size_t threads = 0;
  bool json_out = false;
};

int run_ppl(const PplOpts& o) {
  ExecModel model(o.dir);
  const std::string tpath = model.artifact().tokenizer_path();
  if (tpath.empty()) fail_file(o.dir, "artifact has no tokenizer (convert with --tokenizer FILE)");
  Tokenizer tok(tpath);
  const std::vector<int> tokens = tok.encode(read_text_file(o.text));
  ThreadPool pool(o.threads);
  const PerplexityResult r = perplexity(model, tokens, o.ctx, tok.bos(), o.chunks, pool);
  if (o.json_out) {
    print_json({{"artifact", o.dir}, {"text", o.text}, {"ppl", r.ppl}, {"ppl_stderr", r.ppl_stderr},
                {"mean_nll", r.mean_nll}, {"tokens_scored", r.tokens_scored}, {"windows", r.windows},
                {"ctx", r.ctx}, {"text_tokens", tokens.size()}});
  } else {
    std::cout << "perplexity " << fmt("%.4f", r.ppl) << " +/- " << fmt("%.4f", r.ppl_stderr) << " (" << r.windows
              << " windows of " << r.ctx << ", " << r.tokens_scored << " tokens scored)\n";
  }
  return 0;
}
}  // namespace

void add_eval(CLI::App& app, int& exit_code) {
  auto* e = app.add_subcommand("eval", "Evaluate an artifact");
  e->require_subcommand(1);
  auto o = std::make_shared<PplOpts>();
  auto* c = e->add_subcommand("ppl", "Perplexity over non-overlapping windows, second half of each scored");
  c->add_option("artifact", o->dir, "artifact directory")->required();
  c->add_option("--text", o->text, "UTF-8 text file")->required();
  c->add_option("--ctx", o->ctx, "window length in tokens")->default_val(256)->check(CLI::Range(int64_t(2), int64_t(1) << 20));
  c->add_option("--chunks", o->chunks, "use only the first K windows")->check(CLI::PositiveNumber);
  c->add_option("-t,--threads", o->threads, "worker threads (0 = all cores)")->default_val(0);
  c->add_flag("--json", o->json_out, "print one JSON object");
  c->callback([o, &exit_code] { exit_code = run_ppl(*o); });
}

}  // namespace sf::cli
