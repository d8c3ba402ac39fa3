// eval ppl ARTIFACT --text FILE: windowed perplexity with its standard error.
// eval kld ARTIFACT --ref ARTIFACT --text FILE: KL-divergence from a reference and top-1 agreement.
#include <algorithm>
#include <iostream>
#include <memory>

#include "cli/common.h"
#include "core/error.h"
#include "core/fs_util.h"
#include "validators/kl_divergence.h"
#include "validators/perplexity.h"
#include "validators/artifact_tokenizer.h"
#include "validators/windows.h"

namespace sf::cli {

namespace {
struct PplOpts {
  std::string dir, text;
  int64_t ctx = 0, chunks = -1;  // ctx 0: not given, see window_length
  size_t threads = 0;
  bool json_out = false, allow_long = false;
};

// --ctx as given; by default 256 positions, or fewer when a model's context is shorter. Each
// window is one sequence of that many positions, so it is checked against every model's context.
int64_t window_length(const PplOpts& o, const std::vector<std::pair<const ExecModel*, std::string>>& models) {
  constexpr int64_t kDefaultCtx = 256;
  int64_t ctx = o.ctx;
  if (ctx == 0) {
    ctx = kDefaultCtx;
    for (const auto& [m, dir] : models)
      if (m->desc().max_seq >= 2) ctx = std::min(ctx, m->desc().max_seq);
  }
  for (const auto& [m, dir] : models)
    check_context(m->desc(), dir, ctx, "--ctx " + std::to_string(ctx), o.allow_long);
  return ctx;
}

std::unique_ptr<Tokenizer> artifact_tokenizer(const ExecModel& model, const std::string& dir) {
  auto tok = open_artifact_tokenizer(model.artifact());
  if (!tok) fail_file(dir, "artifact has no tokenizer (convert with --tokenizer FILE)");
  return tok;
}

// What decides how a text is read: the tokenizer's kind and the content of its files.
json tokenizer_identity(const ExecModel& model) {
  const ArtifactTokenizer& t = model.artifact().tokenizer();
  return {{"kind", t.kind}, {"sha256", t.sha256}};
}

// The text must give at least one window; said about the text file, before any model runs.
void check_windows(const std::vector<int>& tokens, int64_t ctx, const PplOpts& o) {
  try {
    plan_windows(tokens.size(), ctx, o.chunks);
  } catch (const Error& e) {
    fail_file(o.text, e.message());
  }
}

int run_ppl(const PplOpts& o) {
  set_current_input(o.dir);
  ExecModel model(o.dir);
  const int64_t ctx = window_length(o, {{&model, o.dir}});
  const auto tok_ptr = artifact_tokenizer(model, o.dir);
  const Tokenizer& tok = *tok_ptr;
  const std::vector<int> tokens = tok.encode_file(o.text);
  ThreadPool pool(o.threads);
  check_windows(tokens, ctx, o);
  const PerplexityResult r = perplexity(model, tokens, ctx, tok.bos(), o.chunks, pool);
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
struct KldOpts : PplOpts {
  std::string ref;
};

int run_kld(const KldOpts& o) {
  set_current_input(o.dir);
  ExecModel model(o.dir), reference(o.ref);
  const int64_t ctx = window_length(o, {{&model, o.dir}, {&reference, o.ref}});
  const auto tok = artifact_tokenizer(reference, o.ref);
  // Both must read the text the same way: a KL-divergence between models of different tokenizers
  // compares unrelated distributions.
  if (!model.artifact().tokenizer().kind.empty() && tokenizer_identity(model) != tokenizer_identity(reference))
    fail_file(o.dir, "its tokenizer differs from the reference's (" + o.ref + "); the two models do not read text alike");
  const std::vector<int> tokens = tok->encode_file(o.text);
  ThreadPool pool(o.threads);
  check_windows(tokens, ctx, o);
  const KldResult r = kl_divergence(model, reference, tokens, ctx, tok->bos(), o.chunks, pool);
  if (o.json_out) {
    print_json({{"artifact", o.dir}, {"reference", o.ref}, {"text", o.text}, {"kld", r.kld_mean},
                {"kld_stderr", r.kld_stderr}, {"kld_max", r.kld_max}, {"top1_agreement", r.top1_agreement},
                {"ppl", r.ppl}, {"ref_ppl", r.ref_ppl}, {"tokens_scored", r.tokens_scored},
                {"windows", r.windows}, {"ctx", r.ctx}});
  } else {
    std::cout << "KL-divergence " << fmt("%.6f", r.kld_mean) << " +/- " << fmt("%.6f", r.kld_stderr) << " (max "
              << fmt("%.4f", r.kld_max) << "), top-1 agreement " << fmt("%.2f%%", 100 * r.top1_agreement)
              << ", PPL " << fmt("%.4f", r.ppl) << " vs reference " << fmt("%.4f", r.ref_ppl) << " ("
              << r.tokens_scored << " tokens scored)\n";
  }
  return 0;
}

template <typename Opts>
void add_window_options(CLI::App* c, Opts& o) {
  c->add_option("artifact", o.dir, "artifact directory")->required();
  c->add_option("--text", o.text, "UTF-8 text file")->required();
  c->add_option("--ctx", o.ctx, "window length in tokens (default 256, or the model's context length if shorter)")
      ->check(within(2, double(kMaxContext)));
  c->add_option("--chunks", o.chunks, "use only the first K windows")->check(within(1, double(kMaxChunks)));
  add_threads_option(c, o.threads);
  add_allow_long_context(c, o.allow_long);
  c->add_flag("--json", o.json_out, "print one JSON object");
}

}  // namespace

void add_eval(CLI::App& app, int& exit_code) {
  auto* e = app.add_subcommand("eval", "Evaluate an artifact");
  e->require_subcommand(1);
  auto o = std::make_shared<PplOpts>();
  auto* c = e->add_subcommand("ppl", "Perplexity over non-overlapping windows, second half of each scored");
  add_window_options(c, *o);
  c->callback([o, &exit_code] { exit_code = run_ppl(*o); });
  auto k = std::make_shared<KldOpts>();
  auto* kc = e->add_subcommand("kld", "KL-divergence from a reference artifact, and top-1 agreement, on the ppl windows");
  add_window_options(kc, *k);
  kc->add_option("--ref", k->ref, "reference artifact (usually the f32 conversion)")->required();
  kc->callback([k, &exit_code] { exit_code = run_kld(*k); });
}

}  // namespace sf::cli
