// convert SOURCE -o OUT: stream a checkpoint through the pipeline into an artifact.
#include <unistd.h>

#include <iostream>
#include <memory>

#include "cli/common.h"
#include "converters/architectures/architecture.h"
#include "core/error.h"
#include "pipeline/bit_budget_plan.h"
#include "pipeline/calib_data.h"
#include "pipeline/calibrate_stage.h"
#include "pipeline/convert.h"
#include "quantizers/scheme.h"

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

struct ConvertOpts {
  ConvertOptions c;
  std::string dtype, quant;
  bool json_out = false;
};

// Options the pipeline file replaces: beside --pipeline they would be silently ignored.
void refuse_beside_pipeline(const std::vector<const CLI::Option*>& options) {
  for (const CLI::Option* opt : options)
    if (opt->count() > 0)
      fail_usage(opt->get_name() + " has no effect with --pipeline: set it in the pipeline file (the quantize "
                 "stage's scheme, overrides, allow_non_finite; a trim_vocab stage's spec; a calib_* stage's params)");
}

int run_convert(ConvertOpts& o) {
  set_current_input(o.c.source);
  o.c.progress = !o.json_out && ::isatty(STDERR_FILENO);
  const ConvertReport r = convert(o.c);
  for (const auto& w : r.warnings) warn(w);
  for (const auto& [stage, rep] : r.stage_reports.items())
    if (rep.contains("warnings"))
      for (const auto& w : rep["warnings"]) warn(w.get<std::string>());
  const json& m = r.manifest;
  if (o.json_out) {
    json j = {{"out", o.c.out}, {"seconds", r.seconds}, {"summary", m["summary"]}, {"files", m["files"]},
              {"model", m["model"]}, {"pipeline", m["pipeline"]}};
    if (!r.stage_reports.empty()) j["stages"] = r.stage_reports;
    if (!r.bit_budget.is_null()) j["bit_budget"] = {{"report", r.bit_budget}, {"assignment", m["bit_budget"]}};
    print_json(j);
    return 0;
  }
  // The chosen schemes on stderr: stdout keeps convert's one summary line per stage.
  if (!r.bit_budget.is_null()) std::cerr << r.bit_budget["table"].get<std::string>();
  uint64_t bytes = 0;
  for (const auto& f : m["files"]) bytes += f["bytes"].get<uint64_t>();
  std::cout << "wrote " << o.c.out << ": " << m["files"].size() << " files, " << human_bytes(bytes) << ", "
            << fmt("%.2f", m["summary"]["bits_per_weight"].get<double>()) << " bits/weight, "
            << fmt("%.1f", r.seconds) << " s\n";
  for (const auto& [stage, rep] : r.stage_reports.items())
    if (rep.contains("peak_rss_bytes"))
      std::cout << stage << ": " << rep["calibrated_tensors"].get<size_t>() << " tensors calibrated on "
                << rep["sequences"].get<size_t>() << " sequences (" << rep["tokens_used"].get<size_t>()
                << " tokens), " << fmt("%.1f", rep["seconds"].get<double>()) << " s, peak memory "
                << human_bytes(rep["peak_rss_bytes"].get<uint64_t>()) << "\n";
  for (const auto& [stage, rep] : r.stage_reports.items())
    if (const json& t = rep.value("scale_tuning", json()); !t.is_null())
      std::cout << stage << ": scale tuning, " << t["steps"].get<int>() << " steps over " << t["groups"].get<size_t>()
                << " scale groups: KL to the unquantized model " << fmt("%.5f", t["kl_before"].get<double>()) << " -> "
                << fmt("%.5f", t["kl_after"].get<double>()) << (t["kept"].get<bool>() ? " (kept)" : " (not lower: not kept)")
                << "\n";
  if (const json& b = r.bit_budget; !b.is_null())
    std::cout << "bit budget: target " << fmt("%g", b["target_bpw"].get<double>()) << ", achieved "
              << fmt("%.4f", b["achieved_bpw"].get<double>()) << " bits/weight; sensitivity pass on "
              << b["sequences"].get<size_t>() << " sequences (" << b["tokens_used"].get<size_t>() << " tokens, "
              << b["measure"].get<std::string>() << "), " << fmt("%.1f", b["seconds"].get<double>())
              << " s, peak memory " << human_bytes(b["peak_rss_bytes"].get<uint64_t>()) << "\n";
  return 0;
}

bool float_type(QType t) { return t == QType::F32 || t == QType::F16 || t == QType::BF16; }

// "mse (per-group clipping ...), awq (...), gptq (...)"
std::string calib_method_help() {
  std::string s;
  for (const auto& m : calib_methods()) s += (s.empty() ? "" : "; ") + std::string(m.name) + ": " + m.description;
  return s;
}

}  // namespace

void add_convert(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<ConvertOpts>();
  auto* c = app.add_subcommand("convert", "Convert a checkpoint into a quantized per-block artifact");
  c->add_option("source", o->c.source, "checkpoint file, directory, or sharded index")->required();
  c->add_option("-o,--out", o->c.out, "output artifact directory (with --format gguf, hdf5 or zip: the file)")->required();
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
  auto* cal = c->add_option("--calib", o->c.calib,
                            "calibration data for --calib-method: a text FILE (read with the model's tokenizer) or "
                            "ids:FILE (token ids, as --trim-vocab ids:)");
  auto* cm = c->add_option("--calib-method", o->c.calib_method, "calibrated encoding: " + calib_method_help());
  auto* ct = c->add_option("--calib-tokens", o->c.calib_tokens,
                           "calibration tokens to use (default " + std::to_string(kDefaultCalibTokens) +
                               ", or all the file has)");
  auto* cc = c->add_option("--calib-ctx", o->c.calib_ctx,
                           "tokens per calibration sequence (default " + std::to_string(kDefaultCalibCtx) +
                               ", at most the model's stated context)");
  auto* ts = c->add_option("--calib-tune-steps", o->c.calib_tune_steps,
                           "after --calib-method, tune every scale group's scale end to end for N steps: the KL "
                           "divergence of the model's next-token distributions to the unquantized model's on --calib "
                           "(codes and size unchanged; kept only where it lowers that divergence)");
  auto* tb = c->add_option("--target-bpw", o->c.target_bpw,
                           "mixed precision: choose each tensor's scheme so the artifact takes at most X bits per "
                           "weight with the least loss, measured on --calib (--tensor-quant fixes tensors; not with "
                           "--quant/--dtype)");
  std::string measures;
  for (const auto& m : budget_measures())
    measures += (measures.empty() ? "" : "; ") + std::string(m.name) + ": " + m.description;
  auto* bm = c->add_option("--bpw-measure", o->c.bpw_measure,
                           "with --target-bpw, how each block linear's loss is measured: " + measures +
                               " (default block)");
  c->add_option("--format", o->c.format,
                "output format: shards (an artifact directory), gguf (one file llama.cpp loads), hdf5 (one HDF5 file "
                "h5py reads), onnx (a directory with model.onnx + model.onnx_data for onnxruntime) or zip (the shards "
                "artifact as one zip, run in place)")
      ->default_val("shards");
  c->add_option("--split", o->c.split,
                "with --format onnx: blocks = one graph per unit (embedding.onnx, block_NNN.onnx, head.onnx) instead "
                "of model.onnx");
  c->add_option("--arch", o->c.arch, arch_help())->default_val("auto");
  auto* pl = c->add_option("--pipeline", o->c.pipeline_file, "JSON pipeline file replacing the default stages");
  add_threads_option(c, o->c.threads);
  c->add_flag("--force", o->c.force, "replace OUT only if it is an existing artifact (with --format gguf / zip: an existing GGUF file / zip bundle)");
  c->add_flag("--json", o->json_out, "print a JSON report");
  c->callback([o, dt, q, tq, nf, pl, tv, cal, cm, ct, cc, ts, tb, bm, &exit_code] {
    if (pl->count() > 0) refuse_beside_pipeline({q, dt, tq, nf, tv, cal, cm, ct, cc, ts, tb, bm});
    if (ts->count() > 0 && cm->count() == 0) fail_usage("--calib-tune-steps needs --calib-method");
    if (ts->count() > 0 && !(o->c.calib_tune_steps >= 1 && o->c.calib_tune_steps <= 100000))
      fail_usage("--calib-tune-steps must be from 1 to 100000, not " + ts->as<std::string>());
    if (bm->count() > 0) {
      if (tb->count() == 0) fail_usage("--bpw-measure applies to --target-bpw only");
      if (!budget_measure_from_name(o->c.bpw_measure))
        fail_usage("--bpw-measure must be block or layer, not '" + o->c.bpw_measure + "'");
    }
    if (tb->count() > 0) {
      if (!(o->c.target_bpw > 0 && o->c.target_bpw <= 64))
        fail_usage("--target-bpw must be a number of bits per weight above 0 (and at most 64), not " +
                   tb->as<std::string>());
      if (cal->count() == 0)
        fail_usage("--target-bpw needs calibration data to measure each tensor's sensitivity: --calib FILE (text) "
                   "or --calib ids:FILE");
      // It chooses every free tensor's scheme: a base scheme would decide nothing.
      for (const CLI::Option* opt : {q, dt})
        if (opt->count() > 0)
          fail_usage(opt->get_name() + " cannot be combined with --target-bpw, which chooses each tensor's scheme "
                     "(fix a tensor's scheme with --tensor-quant NAME=SCHEME)");
      if (tv->count() > 0) fail_usage("--target-bpw cannot be combined with --trim-vocab");
      if (nf->count() > 0)
        fail_usage("--target-bpw cannot be combined with --allow-non-finite (the sensitivity pass runs the model)");
    }
    // Calibration data without a method (or the reverse) would do nothing: refused.
    if (cm->count() > 0 && cal->count() == 0)
      fail_usage("--calib-method needs calibration data: --calib FILE (text) or --calib ids:FILE");
    if (cm->count() == 0 && tb->count() == 0)
      for (const CLI::Option* opt : {cal, ct, cc})
        if (opt->count() > 0)
          fail_usage(opt->get_name() + " needs --calib-method (" + calib_method_names() + ") or --target-bpw");
    // Checked here rather than by CLI11 so the message is the one-line usage error of the others.
    if (ct->count() > 0 && o->c.calib_tokens <= 0)
      fail_usage("--calib-tokens must be a positive number of tokens, not " + ct->as<std::string>());
    if (cc->count() > 0 && !(o->c.calib_ctx >= 2 && o->c.calib_ctx <= kMaxCalibCtx))
      fail_usage("--calib-ctx must be from 2 to " + std::to_string(kMaxCalibCtx) + ", not " + cc->as<std::string>());
    // A float scheme leaves calibration nothing to encode unless --tensor-quant gives some tensor
    // an integer scheme.
    if (cm->count() > 0 && tb->count() == 0 && calib_method_from_name(o->c.calib_method)) {
      const CLI::Option* base = q->count() > 0 ? q : dt->count() > 0 ? dt : nullptr;
      bool integer = base && !float_type(parse_scheme(base->as<std::string>()).type);
      for (const std::string& ov : o->c.overrides)
        if (const size_t eq = ov.rfind('='); eq != std::string::npos)
          integer = integer || !float_type(parse_scheme(ov.substr(eq + 1)).type);
      if (!integer)
        fail_usage("--calib-method calibrates integer schemes only, and " +
                   (base ? base->get_name() + " " + base->as<std::string>() : std::string("the default scheme f32")) +
                   " is a float type (give --quant an integer scheme, or --tensor-quant NAME=SCHEME)");
    }
    // GGUF has no place for the map from a trimmed vocabulary's ids to the tokenizer's.
    if (o->c.format == "gguf" && tv->count() > 0)
      fail_usage("--trim-vocab cannot be written with --format gguf: GGUF has no vocabulary map (llama.cpp reads "
                 "ids as the tokenizer's)");
    // An option given is used as given: --quant "" is an error, not f32.
    o->c.scheme = q->count() > 0 ? o->quant : dt->count() > 0 ? o->dtype : "f32";
    exit_code = run_convert(*o);
  });
}

}  // namespace sf::cli
