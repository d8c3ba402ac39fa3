// eval ppl ARTIFACT --text FILE: windowed perplexity with its standard error.
// eval kld ARTIFACT --ref ARTIFACT --text FILE: KL-divergence from a reference and top-1 agreement.
#include <algorithm>
#include <iostream>
#include <memory>

#include "cli/artifact_text.h"
#include "cli/common.h"
#include "core/error.h"
#include "core/fs_util.h"
#include "validators/kl_divergence.h"
#include "validators/perplexity.h"
#include "validators/model_tokenizer.h"
#include "validators/removed_mass.h"
#include "validators/windows.h"

namespace sf::cli {

namespace {
struct PplOpts {
  std::string dir, text;
  std::string untrimmed;  // eval ppl --untrimmed: the artifact a trimmed one was cut from
  int64_t ctx = 0, chunks = -1;  // ctx 0: not given, see window_length
  size_t threads = 0;
  int64_t resident = 0;  // --resident-blocks, for every model the command opens
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

// What decides how a text is read: the tokenizer's kind and the content of its files.
json tokenizer_identity(const ExecModel& model) {
  const ArtifactTokenizer& t = model.artifact().tokenizer();
  return {{"kind", t.kind}, {"sha256", t.sha256}};
}

// Which ids the model's rows are: the sha256 of its vocab_map.bin, null when untrimmed.
json vocab_map_identity(const ExecModel& model) {
  const json& e = model.artifact().manifest().value("vocab_map", json());
  return e.is_object() ? e.value("sha256", json()) : json();
}

// Both read text alike: the same tokenizer and, when `same_map`, the same vocabulary map (or none).
// A KL-divergence between models that read or number tokens differently compares unrelated
// distributions.
void require_same_reading(const ExecModel& model, const std::string& dir, const ExecModel& other,
                          const std::string& other_name, bool same_map) {
  const bool has = !model.artifact().tokenizer().kind.empty(), other_has = !other.artifact().tokenizer().kind.empty();
  if (has != other_has)
    fail_file(has ? other_name : dir, "has no tokenizer but " + (has ? dir : other_name) +
                                          " has one; the two models must read text alike");
  if (tokenizer_identity(model) != tokenizer_identity(other))
    fail_file(dir, "its tokenizer differs from " + other_name + "'s; the two models do not read text alike");
  if (same_map && vocab_map_identity(model) != vocab_map_identity(other))
    fail_file(dir, "its vocabulary trim (vocab_map.bin) differs from " + other_name +
                       "'s; the two models number tokens differently");
}

// eval ppl --untrimmed: UNTRIMMED must be a conversion of the same checkpoint without a trim, with
// the vocabulary the trimmed artifact's map starts from.
void check_untrimmed(const ExecModel& trimmed, const PplOpts& o, const ExecModel& untrimmed) {
  const VocabMap* map = trimmed.artifact().vocab_map();
  if (!map) fail_usage("--untrimmed: " + o.dir + " is not trimmed (it has no vocab_map.bin)");
  if (untrimmed.artifact().vocab_map())
    fail_file(o.untrimmed, "is itself trimmed; --untrimmed takes the untrimmed conversion");
  if (untrimmed.desc().vocab_size != map->old_size())
    fail_file(o.untrimmed, "has " + std::to_string(untrimmed.desc().vocab_size) + " ids; " + o.dir +
                               " was trimmed from " + std::to_string(map->old_size()));
  const json& a = trimmed.artifact().manifest()["source"];
  const json& b = untrimmed.artifact().manifest()["source"];
  if (!a.is_object() || !b.is_object() || a.value("files", json()) != b.value("files", json()))
    fail_file(o.untrimmed, "was converted from other source files than " + o.dir);
  require_same_reading(trimmed, o.dir, untrimmed, o.untrimmed, false);
}

// eval reads text, so the artifact needs a tokenizer it can be read through.
std::unique_ptr<ModelTokenizer> require_text_tokenizer(const Artifact& artifact) {
  auto tok = open_text_tokenizer(artifact);
  if (!tok)
    fail_no_tokenizer(artifact, "eval reads text through one (run --ids IDS --logits FILE gives the logits of token ids)");
  return tok;
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
  ExecModel model(o.dir, o.resident);
  std::unique_ptr<ExecModel> untrimmed;
  if (!o.untrimmed.empty()) {
    untrimmed = std::make_unique<ExecModel>(o.untrimmed, o.resident);
    check_untrimmed(model, o, *untrimmed);
  }
  std::vector<std::pair<const ExecModel*, std::string>> models = {{&model, o.dir}};
  if (untrimmed) models.emplace_back(untrimmed.get(), o.untrimmed);
  const int64_t ctx = window_length(o, models);
  const auto tok = require_text_tokenizer(model.artifact());
  const std::vector<int> text_ids = tok->tokenizer().encode_file(o.text);  // the tokenizer's ids
  const std::vector<int> tokens = tok->to_model(text_ids, o.text);
  ThreadPool pool(o.threads);
  check_windows(tokens, ctx, o);
  const PerplexityResult r = perplexity(model, tokens, ctx, tok->bos(), o.chunks, pool);
  RemovedMass removed;
  if (untrimmed)
    removed = removed_mass(*untrimmed, *tok->map(), text_ids, ctx, tok->tokenizer().bos(), o.chunks, pool);
  const VocabMap* map = tok->map();
  if (o.json_out) {
    json j = {{"artifact", o.dir}, {"text", o.text}, {"ppl", r.ppl}, {"ppl_stderr", r.ppl_stderr},
              {"mean_nll", r.mean_nll}, {"tokens_scored", r.tokens_scored}, {"windows", r.windows},
              {"ctx", r.ctx}, {"text_tokens", tokens.size()}};
    if (map) j["vocab_trim"] = {{"old_vocab_size", map->old_size()}, {"kept", map->kept()}};
    if (untrimmed)
      j["vocab_trim"].update({{"untrimmed", o.untrimmed}, {"removed_mass_mean", removed.mean},
                              {"removed_mass_max", removed.max}, {"untrimmed_ppl", removed.untrimmed_ppl},
                              {"dropped_targets", removed.dropped_targets}});
    print_json(j);
  } else {
    std::cout << "perplexity " << fmt("%.4f", r.ppl) << " +/- " << fmt("%.4f", r.ppl_stderr) << " (" << r.windows
              << " windows of " << r.ctx << ", " << r.tokens_scored << " tokens scored)\n";
    if (untrimmed)
      std::cout << "trimmed vocabulary (" << map->kept() << " of " << map->old_size() << " ids): the untrimmed model "
                << "gave the dropped ids " << fmt("%.6f", removed.mean) << " of its probability on average (max "
                << fmt("%.6f", removed.max) << "); its perplexity on these positions "
                << fmt("%.4f", removed.untrimmed_ppl) << ", " << removed.dropped_targets << " targets dropped\n";
    else if (map)
      std::cout << "trimmed vocabulary (" << map->kept() << " of " << map->old_size() << " ids); --untrimmed DIR "
                << "reports the probability mass the trim removed\n";
  }
  if (!tok->unk_warning().empty()) warn(tok->unk_warning());
  return 0;
}
struct KldOpts : PplOpts {
  std::string ref;
};

int run_kld(const KldOpts& o) {
  set_current_input(o.dir);
  ExecModel model(o.dir, o.resident), reference(o.ref, o.resident);
  const int64_t ctx = window_length(o, {{&model, o.dir}, {&reference, o.ref}});
  const auto tok = require_text_tokenizer(reference.artifact());
  require_same_reading(model, o.dir, reference, "the reference " + o.ref, true);
  const std::vector<int> tokens = tok->to_model(tok->tokenizer().encode_file(o.text), o.text);
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
  if (!tok->unk_warning().empty()) warn(tok->unk_warning());
  return 0;
}

template <typename Opts>
void add_window_options(CLI::App* c, Opts& o) {
  c->add_option("artifact", o.dir, "artifact (a directory or a file)")->required();
  c->add_option("--text", o.text, "UTF-8 text file")->required();
  c->add_option("--ctx", o.ctx, "window length in tokens (default 256, or the model's context length if shorter)")
      ->check(within(2, double(kMaxContext)));
  c->add_option("--chunks", o.chunks, "use only the first K windows")->check(within(1, double(kMaxChunks)));
  add_threads_option(c, o.threads);
  add_allow_long_context(c, o.allow_long);
  add_resident_blocks(c, o.resident);
  c->add_flag("--json", o.json_out, "print one JSON object");
}

}  // namespace

void add_eval(CLI::App& app, int& exit_code) {
  auto* e = app.add_subcommand("eval", "Evaluate an artifact");
  e->require_subcommand(1);
  auto o = std::make_shared<PplOpts>();
  auto* c = e->add_subcommand("ppl", "Perplexity over non-overlapping windows, second half of each scored");
  add_window_options(c, *o);
  c->add_option("--untrimmed", o->untrimmed,
                "with a trimmed ARTIFACT: its untrimmed conversion, to report the probability mass the trim removed");
  c->callback([o, &exit_code] { exit_code = run_ppl(*o); });
  auto k = std::make_shared<KldOpts>();
  auto* kc = e->add_subcommand("kld", "KL-divergence from a reference artifact, and top-1 agreement, on the ppl windows");
  add_window_options(kc, *k);
  kc->add_option("--ref", k->ref, "reference artifact (usually the f32 conversion)")->required();
  kc->callback([k, &exit_code] { exit_code = run_kld(*k); });
}

}  // namespace sf::cli
