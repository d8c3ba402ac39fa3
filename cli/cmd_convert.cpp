// convert SOURCE -o OUT: stream a checkpoint through the pipeline into an artifact.
#include <unistd.h>

#include <iostream>
#include <memory>

#include "cli/common.h"
#include "converters/architectures/architecture.h"
#include "core/error.h"
#include "pipeline/convert.h"

namespace sf::cli {

namespace {

// "auto, llama, llama/hf, llama/meta, gpt2, ...": every family and variant the maps define.
std::string arch_help() {
  std::string s = "architecture: auto", last;
  for (const auto& m : architecture_maps()) {
    if (m.family != last) s += std::string(", ") + m.family;
    s += std::string(", ") + m.family + "/" + m.variant;
    last = m.family;
  }
  return s;
}

struct Opts {
  ConvertOptions c;
  std::string dtype, quant;
  bool json_out = false;
};

// Options the pipeline file replaces: beside --pipeline they would be silently ignored.
void refuse_beside_pipeline(const std::vector<const CLI::Option*>& options) {
  for (const CLI::Option* opt : options)
    if (opt->count() > 0)
      fail_usage(opt->get_name() + " has no effect with --pipeline: set it in the pipeline file (the quantize "
                 "stage's scheme, overrides, allow_non_finite; a trim_vocab stage's spec)");
}

int run(Opts& o) {
  set_current_input(o.c.source);
  o.c.progress = !o.json_out && ::isatty(STDERR_FILENO);
  const ConvertReport r = convert(o.c);
  for (const auto& w : r.warnings) warn(w);
  const json& m = r.manifest;
  if (o.json_out) {
    print_json({{"out", o.c.out}, {"seconds", r.seconds}, {"summary", m["summary"]}, {"files", m["files"]},
                {"model", m["model"]}, {"pipeline", m["pipeline"]}});
    return 0;
  }
  uint64_t bytes = 0;
  for (const auto& f : m["files"]) bytes += f["bytes"].get<uint64_t>();
  std::cout << "wrote " << o.c.out << ": " << m["files"].size() << " files, " << human_bytes(bytes) << ", "
            << fmt("%.2f", m["summary"]["bits_per_weight"].get<double>()) << " bits/weight, "
            << fmt("%.1f", r.seconds) << " s\n";
  return 0;
}

}  // namespace

void add_convert(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("convert", "Convert a checkpoint into a quantized per-block artifact");
  c->add_option("source", o->c.source, "checkpoint file, directory, or sharded index")->required();
  c->add_option("-o,--out", o->c.out, "output artifact directory (with --format gguf: the .gguf file)")->required();
  auto* dt = c->add_option("--dtype", o->dtype, "float type for all matrices: f32, f16, bf16")
                 ->check(CLI::IsMember({"f32", "f16", "bf16"}));
  auto* q = c->add_option("--quant", o->quant, "scheme: f32, f16, bf16, int8, int4[:g32|:g64|:g128][:sym|:asym], q8_0, q4_0")
                ->excludes(dt);
  auto* tq = c->add_option("--tensor-quant", o->c.overrides,
                           "per-tensor override PATTERN=SCHEME (glob over canonical names; must match one)");
  auto* nf = c->add_flag("--allow-non-finite", o->c.allow_non_finite,
                         "keep NaN/Inf weights instead of refusing them (recorded in the manifest)");
  c->add_option("--tokenizer", o->c.tokenizer, "tokenizer when it is not beside the checkpoint: a SentencePiece .model, a GPT-2 *vocab.json (*merges.txt beside it) or their directory");
  auto* tv = c->add_option("--trim-vocab", o->c.trim_vocab,
                           "keep only these token ids: range:A-B[,C-D...] (A- to the end), corpus:FILE[:MIN], ids:FILE");
  c->add_option("--format", o->c.format, "output format: shards (an artifact directory) or gguf (one file llama.cpp loads)")
      ->default_val("shards");
  c->add_option("--arch", o->c.arch, arch_help())->default_val("auto");
  auto* pl = c->add_option("--pipeline", o->c.pipeline_file, "JSON pipeline file replacing the default stages");
  add_threads_option(c, o->c.threads);
  c->add_flag("--force", o->c.force, "replace OUT only if it is an existing artifact (with --format gguf: an existing GGUF file)");
  c->add_flag("--json", o->json_out, "print a JSON report");
  c->callback([o, dt, q, tq, nf, pl, tv, &exit_code] {
    if (pl->count() > 0) refuse_beside_pipeline({q, dt, tq, nf, tv});
    // GGUF has no place for the map from a trimmed vocabulary's ids to the tokenizer's.
    if (o->c.format == "gguf" && tv->count() > 0)
      fail_usage("--trim-vocab cannot be written with --format gguf: GGUF has no vocabulary map (llama.cpp reads "
                 "ids as the tokenizer's)");
    // An option given is used as given: --quant "" is an error, not f32.
    o->c.scheme = q->count() > 0 ? o->quant : dt->count() > 0 ? o->dtype : "f32";
    exit_code = run(*o);
  });
}

}  // namespace sf::cli
