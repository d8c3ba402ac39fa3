#pragma once
// `convert`: source -> architecture map -> units streamed through the stages -> artifact.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sf {

using json = nlohmann::json;

struct ConvertOptions {
  std::string source;
  std::string out;
  std::string scheme = "f32";            // base scheme for the quantize stage
  std::vector<std::string> overrides;    // PATTERN=SCHEME
  std::string tokenizer;                 // overrides the one found beside the source
  std::string format = "shards";
  std::string split;                     // --split blocks (--format onnx): one graph per unit
  std::string arch = "auto";
  std::string pipeline_file;             // JSON pipeline replacing the default stages
  std::string trim_vocab;                // --trim-vocab SPEC: a trim_vocab stage after load (pipeline/vocab_trim.h)
  // --calib SPEC (FILE or ids:FILE) with --calib-method NAME: a calib_NAME stage between load and
  // quantize (pipeline/calibrate_stage.h); tokens / ctx 0 take the stage's defaults.
  std::string calib, calib_method;
  int64_t calib_tokens = 0, calib_ctx = 0;
  int64_t calib_tune_steps = 0;  // > 0: the calibration stage's tune_steps (quantizers/scale_tune.h)
  // --target-bpw X (> 0; needs calib): each tensor the policy leaves free gets the scheme a
  // sensitivity pass on the calibration data chooses (pipeline/bit_budget_plan.h), so the artifact
  // takes at most X bits per weight. calib_tokens / calib_ctx apply to the pass too.
  double target_bpw = 0;
  std::string bpw_measure;               // --bpw-measure NAME (budget_measures()); empty: the default, block
  size_t threads = 0;                    // 0 = all cores
  bool force = false;
  bool progress = true;
  bool allow_non_finite = false;         // keep NaN/Inf weights (refused by default)
  // sha256 of source files the caller already hashed, by the path the reader lists them under
  // (ConvertReport::source_sha256 of an earlier conversion of the same source: compare hashes its
  // source once for all its schemes). A source file not listed here is hashed by convert.
  std::map<std::string, std::string> source_sha256;
};

struct ConvertReport {
  json manifest;
  double seconds = 0;
  // What is worth saying about the source without refusing it (the CLI prints each as a warning
  // line once the artifact is written; a failed run says only its error).
  std::vector<std::string> warnings;
  std::map<std::string, std::string> source_sha256;  // of every source file, by path, as in the manifest
  // What the stages said of their run (Stage::report: calibration time and peak memory), by
  // stage name; not in the manifest.
  json stage_reports = json::object();
  // --target-bpw: the sensitivity pass's report (seconds, peak memory, achieved bpw, the table of
  // schemes); null without.
  json bit_budget;
};

ConvertReport convert(const ConvertOptions& opt);

}  // namespace sf
