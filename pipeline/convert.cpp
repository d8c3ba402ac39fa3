#include "pipeline/convert.h"

#include <atomic>
#include <chrono>
#include <exception>
#include <filesystem>
#include <system_error>
#include <thread>

#include "converters/reader_registry.h"
#include "core/error.h"
#include "core/fs_util.h"
#include "core/interrupt.h"
#include "core/json_util.h"
#include "core/progress.h"
#include "core/sha256.h"
#include "formats/gguf/gguf_arch.h"
#include "formats/manifest.h"
#include "pipeline/bit_budget_plan.h"
#include "pipeline/calibrate_stage.h"
#include "pipeline/stage.h"
#include "pipeline/stages.h"
#include "tokenizers/tokenizer_kinds.h"

namespace sf {

namespace fs = std::filesystem;

namespace {

json default_pipeline(const ConvertOptions& opt) {
  json quantize = {{"scheme", opt.scheme}, {"overrides", opt.overrides}};
  if (opt.allow_non_finite) quantize["allow_non_finite"] = true;  // recorded only when it changes anything
  json stages = json::array({{{"name", "load"}}});
  if (!opt.trim_vocab.empty()) stages.push_back({{"name", "trim_vocab"}, {"params", {{"spec", opt.trim_vocab}}}});
  if (!opt.calib_method.empty()) {
    const auto method = calib_method_from_name(opt.calib_method);
    if (!method) fail_usage("unknown calibration method '" + opt.calib_method + "' (known: " + calib_method_names() + ")");
    json calib = {{"calib", opt.calib}};
    if (opt.calib_tokens > 0) calib["tokens"] = opt.calib_tokens;
    if (opt.calib_ctx > 0) calib["ctx"] = opt.calib_ctx;
    if (opt.calib_tune_steps > 0) calib["tune_steps"] = opt.calib_tune_steps;
    stages.push_back({{"name", calibrate_stage_name(*method)}, {"params", calib}});
  }
  stages.push_back({{"name", "quantize"}, {"params", quantize}});
  stages.push_back({{"name", "write"}});
  return {{"stages", stages}};
}

// The stages, checked against the model before anything is written. Problems in a pipeline file
// are reported against the file, keeping their kind (a bad parameter is a usage error).
std::vector<std::unique_ptr<Stage>> build_pipeline(const ConvertOptions& opt, CanonicalModel& model,
                                                   const PlanContext& plan) {
  const json spec = opt.pipeline_file.empty() ? default_pipeline(opt) : read_json_file(opt.pipeline_file);
  try {
    auto stages = make_pipeline(spec);
    for (auto& s : stages) s->plan(model, plan);
    model.desc.validate();
    for (auto& s : stages) s->prepare(model);
    return stages;
  } catch (const Error& e) {
    if (opt.pipeline_file.empty()) throw;
    fail_file(opt.pipeline_file, e.message(), e.kind());
  }
}

// The manifest's "tokenizer": its kind and files under their artifact names (docs/format.md).
json tokenizer_entry(const TokenizerSource& src) {
  if (!src.kind) return nullptr;
  json files = json::array();
  for (size_t i = 0; i < src.files.size(); ++i)
    files.push_back({{"name", src.kind->artifact_names[i]}, {"sha256", sha256_file(src.files[i])}});
  return {{"kind", src.kind->name}, {"files", files}};
}

// Hashes the source files the caller has not hashed yet. With more than one thread it runs on a
// thread of its own while the units are converted (hashing a checkpoint from the page cache costs
// about as much as quantizing it), otherwise before them. The digests are taken when the manifest
// is written; a failed conversion stops the hashing and waits for it.
class SourceHasher {
 public:
  SourceHasher(const std::vector<std::string>& files, const std::map<std::string, std::string>& known,
               bool background) {
    for (const auto& f : files) {
      const auto it = known.find(f);
      if (it != known.end()) digests_[f] = it->second;
      else todo_.push_back(f);
    }
    if (todo_.empty()) return;
    if (background) {
      try {
        thread_ = std::thread([this] {
          try {
            hash_all();
          } catch (...) {
            error_ = std::current_exception();
          }
        });
        return;
      } catch (const std::system_error&) {
        // No thread to be had: hash here, as with one thread.
      }
    }
    hash_all();
  }
  ~SourceHasher() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  SourceHasher(const SourceHasher&) = delete;
  SourceHasher& operator=(const SourceHasher&) = delete;

  // Waits for the hashing; rethrows its error (an unreadable or truncated file).
  const std::map<std::string, std::string>& digests() {
    if (thread_.joinable()) thread_.join();
    if (error_) std::rethrow_exception(error_);
    return digests_;
  }

 private:
  void hash_all() {
    for (const auto& f : todo_) {
      std::string h = sha256_file(f, &stop_);
      if (stop_) return;
      digests_[f] = std::move(h);
    }
  }
  std::vector<std::string> todo_;
  std::map<std::string, std::string> digests_;  // written by the hashing thread until it is joined
  std::atomic<bool> stop_{false};
  std::exception_ptr error_;
  std::thread thread_;
};

}  // namespace

ConvertReport convert(const ConvertOptions& opt) {
  const auto start = std::chrono::steady_clock::now();
  auto src = open_source(opt.source);
  CanonicalModel model = map_architecture(*src, opt.arch);

  std::string tokenizer = opt.tokenizer.empty() ? src->tokenizer_path : opt.tokenizer;
  std::string tokenizer_warning = opt.tokenizer.empty() ? src->tokenizer_warning : "";
  if (const char* why = model.tokenizer_not_reproduced) {
    // Reading text through a tokenizer file that is only part of the family's would give other ids
    // than the original, silently: the artifact carries none and prompts are given as ids.
    if (!opt.tokenizer.empty())
      fail_file(opt.tokenizer, "--tokenizer is not supported for " + model.family + " models: " + why +
                                   ", which shardforge does not implement; give prompts as token ids (run --ids)",
                ErrorKind::Unsupported);
    tokenizer_warning = opt.source + ": the artifact will have no tokenizer" +
                        (tokenizer.empty() ? std::string() : " (" + tokenizer + " beside it is not taken)") + ": " +
                        why + ", which shardforge does not implement; give prompts as token ids (run --ids)";
    tokenizer.clear();
  }
  TokenizerSource tok_src{nullptr, {}};
  std::unique_ptr<Tokenizer> tok;
  if (!tokenizer.empty()) {
    tok_src = locate_tokenizer(tokenizer);
    tok = tok_src.kind->open(tok_src.files);  // fail before writing anything if it is not a tokenizer
    // Against the source's vocabulary: the tokenizer's ids are the source's (a trim maps them).
    if (tok->vocab_size() > model.desc.vocab_size)
      fail_file(tokenizer, "tokenizer has " + std::to_string(tok->vocab_size()) + " pieces but the model only " +
                               std::to_string(model.desc.vocab_size) + " embeddings");
  }
  std::vector<std::string> inputs = src->files;  // OUT may not be or contain anything the conversion reads
  inputs.insert(inputs.end(), {opt.source, tokenizer, opt.pipeline_file});
  inputs.insert(inputs.end(), tok_src.files.begin(), tok_src.files.end());
  const std::vector<std::unique_ptr<Stage>> stages =
      build_pipeline(opt, model, PlanContext{opt.source, tok.get(), inputs});

  if (opt.target_bpw > 0) inputs.push_back(parse_calib_spec(opt.calib).file);

  const InterruptGuard interrupt;
  ThreadPool pool(opt.threads);
  SourceHasher hasher(src->files, opt.source_sha256, pool.size() > 1);
  auto writer = make_format_writer(opt.format, {opt.out, opt.force, inputs, opt.split}, model.desc);
  // --target-bpw: the schemes the sensitivity pass chooses become the quantize stage's (exact-name
  // overrides), before its plan is taken. The writer has written nothing yet; it gives the rules.
  BitBudgetResult budget;
  if (opt.target_bpw > 0) {
    if (!opt.pipeline_file.empty()) fail_usage("--target-bpw cannot be combined with --pipeline");
    BitBudgetRequest req{opt.target_bpw, parse_calib_spec(opt.calib), opt.calib_tokens, opt.calib_ctx, {}};
    if (!opt.bpw_measure.empty()) {
      const auto m = budget_measure_from_name(opt.bpw_measure);
      if (!m) fail_usage("--bpw-measure must be block or layer, not '" + opt.bpw_measure + "'");
      req.measure = *m;
    }
    // GGUF stores some of a block's tensors as one (llama.cpp's fused attn_qkv, ChatGLM's ffn_up):
    // they must share a scheme. (The writer accepted the model, so the family has an entry.)
    if (std::string(writer->format_name()) == "gguf")
      for (int64_t b = 0; b < model.desc.n_layers; ++b)
        for (const auto& f : gguf::arch_for_family(model.family).fused) {
          std::vector<std::string> group;
          for (const char* part : f.parts) group.push_back(block_prefix(b) + part);
          req.same_scheme.push_back(std::move(group));
        }
    const FormatRules rules = rules_of(*writer);
    budget = plan_bit_budget(req, model, tok.get(), rules, policy_fixed_schemes(stages, model.desc, rules), opt.source,
                             pool);
    assign_schemes(stages, budget.chosen);
    interrupt.check();
  }

  json manifest = manifest_header();
  manifest["model"] = model.desc.to_json();
  json stage_list = json::array();
  for (const auto& s : stages) stage_list.push_back({{"name", s->name()}, {"params", s->params()}});
  manifest["pipeline"] = {{"stages", stage_list}};
  manifest["tokenizer"] = tokenizer_entry(tok_src);
  if (opt.target_bpw > 0) manifest["bit_budget"] = budget.manifest;
  // A plan the format cannot store (GGUF: a fused group of mixed types) is refused before the
  // first unit is converted, not when the unit holding it comes.
  const QuantPlan plan = quant_plan(stages, model.desc, *writer);
  writer->check_plan(planned_types(plan));
  for (auto& s : stages) s->use_plan(plan);
  StageContext ctx{opt.source, model, *writer, pool};
  const auto order = unit_order(model.desc);
  {
    std::unique_ptr<Progress> bar;
    if (opt.progress) bar = std::make_unique<Progress>("convert", order.size());
    // Unit through stages [first, end); a stage that takes it stops it there until its release.
    auto run_from = [&](size_t first, Unit& unit) {
      for (size_t i = first; i < stages.size(); ++i) {
        stages[i]->process(unit, ctx);
        if (stages[i]->take(unit)) return;
      }
      if (bar) bar->step(unit.name());
    };
    for (const auto& [kind, index] : order) {
      interrupt.check();
      Unit unit = Unit::make(model.desc, kind, index);
      run_from(0, unit);
    }
    for (size_t i = 0; i < stages.size(); ++i)
      while (std::optional<Unit> unit = stages[i]->release(ctx)) {
        interrupt.check();
        run_from(i + 1, *unit);
      }
  }
  for (size_t i = 0; i < tok_src.files.size(); ++i) writer->add_file(tok_src.kind->artifact_names[i], tok_src.files[i]);
  for (auto& s : stages) s->finish(*writer, manifest);
  const auto& digests = hasher.digests();
  json files = json::array();
  for (const auto& f : src->files)
    files.push_back({{"name", fs::path(f).filename().string()}, {"sha256", digests.at(f)}});
  manifest["source"] = {{"format", src->format}, {"architecture", model.family + "/" + model.variant},
                        {"files", files}};
  interrupt.check();
  ConvertReport r;
  for (const auto& s : stages)
    if (json rep = s->report(); !rep.is_null()) r.stage_reports[s->name()] = std::move(rep);
  if (opt.target_bpw > 0) r.bit_budget = budget.report;
  r.source_sha256 = digests;
  r.manifest = writer->finish(std::move(manifest));
  r.warnings = src->warnings;
  r.warnings.insert(r.warnings.end(), model.warnings.begin(), model.warnings.end());
  if (!tokenizer_warning.empty()) r.warnings.push_back(tokenizer_warning);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

}  // namespace sf
