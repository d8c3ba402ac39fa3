// compare SOURCE --schemes LIST --text FILE: the PPL / KLD / size / speed table in one command.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <sstream>

#include "cli/common.h"
#include "cli/compare_plot.h"
#include "core/error.h"
#include "formats/output_dir.h"
#include "pipeline/calib_data.h"
#include "pipeline/compare.h"

namespace sf::cli {

namespace {
struct CompareOpts {
  CompareOptions c;
  std::string out_md, plot, format = "table";
  bool json_out = false;
};

// "median (min–max)" of a speed measurement, or "-" when it was skipped (--bench-tokens 0).
std::string speed_cell(const Throughput& t, bool measured) {
  if (!measured) return "-";
  return fmt("%.1f", t.median) + " (" + fmt("%.1f", t.min) + "–" + fmt("%.1f", t.max) + ")";
}

std::vector<std::vector<std::string>> table_rows(const std::vector<CompareRow>& rows, bool measured) {
  std::vector<std::vector<std::string>> t;
  const double ref_ppl = rows[0].ppl;
  for (size_t i = 0; i < rows.size(); ++i) {
    const CompareRow& r = rows[i];
    t.push_back({r.scheme, fmt("%.2f", r.bits_per_weight), human_bytes(r.weight_bytes),
                 fmt("%.4f", r.ppl) + " ± " + fmt("%.4f", r.ppl_stderr),
                 i == 0 ? "ref" : fmt("%+.2f%%", 100 * (r.ppl / ref_ppl - 1)),
                 i == 0 ? "ref" : fmt("%.2e", r.kld) + " ± " + fmt("%.1e", r.kld_stderr),
                 i == 0 ? "ref" : fmt("%.2f%%", 100 * r.top1), speed_cell(r.prefill, measured),
                 speed_cell(r.decode, measured)});
  }
  return t;
}

const std::vector<std::string> kHeader = {"scheme", "bits/w", "size", "PPL ± stderr", "ΔPPL", "KLD ± stderr",
                                          "top-1", "prefill tok/s (min–max)", "decode tok/s (min–max)"};

std::string markdown(const std::vector<CompareRow>& rows, bool measured) {
  std::ostringstream md;
  md << "|";
  for (const auto& h : kHeader) md << " " << h << " |";
  md << "\n|";
  for (size_t i = 0; i < kHeader.size(); ++i) md << " --- |";
  md << "\n";
  for (const auto& r : table_rows(rows, measured)) {
    md << "|";
    for (const auto& c : r) md << " " << c << " |";
    md << "\n";
  }
  return md.str();
}

// RFC 4180: a field holding a comma, quote or line break is quoted, its quotes doubled.
std::string csv_field(const std::string& f) {
  if (f.find_first_of(",\"\r\n") == std::string::npos) return f;
  std::string q = "\"";
  for (char c : f) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

// Plain numbers, one column each, for spreadsheets and scripts (the table's cells combine them).
std::string csv(const std::vector<CompareRow>& rows) {
  const std::vector<std::string> header = {
      "scheme", "bits_per_weight", "weight_bytes", "ppl", "ppl_stderr", "delta_ppl_percent", "kld", "kld_stderr",
      "top1_agreement", "prefill_tokens_per_s", "prefill_min", "prefill_max", "decode_tokens_per_s", "decode_min",
      "decode_max", "tokens_scored"};
  std::ostringstream out;
  for (size_t i = 0; i < header.size(); ++i) out << (i ? "," : "") << header[i];
  out << "\n";
  for (const auto& r : rows) {
    const std::vector<std::string> cells = {
        csv_field(r.scheme), fmt("%.6g", r.bits_per_weight), std::to_string(r.weight_bytes), fmt("%.9g", r.ppl),
        fmt("%.9g", r.ppl_stderr), fmt("%.6g", 100 * (r.ppl / rows[0].ppl - 1)), fmt("%.9g", r.kld),
        fmt("%.9g", r.kld_stderr), fmt("%.9g", r.top1), fmt("%.6g", r.prefill.median), fmt("%.6g", r.prefill.min),
        fmt("%.6g", r.prefill.max), fmt("%.6g", r.decode.median), fmt("%.6g", r.decode.min),
        fmt("%.6g", r.decode.max), std::to_string(r.tokens_scored)};
    for (size_t i = 0; i < cells.size(); ++i) out << (i ? "," : "") << cells[i];
    out << "\n";
  }
  return out.str();
}

json throughput_json(const Throughput& t) { return {{"median", t.median}, {"min", t.min}, {"max", t.max}}; }

json report_json(const CompareOpts& o, const std::vector<CompareRow>& rows) {
  json a = json::array();
  for (const auto& r : rows)
    a.push_back({{"scheme", r.scheme}, {"bits_per_weight", r.bits_per_weight}, {"weight_bytes", r.weight_bytes},
                 {"ppl", r.ppl}, {"ppl_stderr", r.ppl_stderr}, {"kld", r.kld}, {"kld_stderr", r.kld_stderr},
                 {"top1_agreement", r.top1}, {"tokens_scored", r.tokens_scored},
                 {"prefill_tokens_per_s", r.prefill.median}, {"decode_tokens_per_s", r.decode.median},
                 {"prefill", throughput_json(r.prefill)}, {"decode", throughput_json(r.decode)}});
  return {{"source", o.c.source}, {"text", o.c.text}, {"ctx", o.c.ctx}, {"reference", o.c.schemes[0]},
          {"bench_tokens", o.c.bench_tokens}, {"bench_reps", o.c.bench_reps}, {"rows", a}};
}

// Checked again (something may have been put at the path while compare ran), then written to a
// temporary name of our own (created exclusively) and renamed over the path when complete.
void write_report(const std::string& path, const std::string& text, const std::vector<std::string>& inputs) {
  check_report_path(path, inputs);
  const std::string tmp = path + ".partial-" + std::to_string(::getpid());
  FILE* f = std::fopen(tmp.c_str(), "wx");
  if (!f) fail_file(path, "cannot write the report");
  const bool written = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  const bool closed = std::fclose(f) == 0;
  if (!written || !closed || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    fail_file(path, "cannot write the report");
  }
}

int run_compare(CompareOpts& o) {
  set_current_input(o.c.source);
  if (o.json_out) {
    if (o.format != "table" && o.format != "json") fail_usage("--json is -o json; it cannot go with -o " + o.format);
    o.format = "json";
  }
  o.c.reports = {o.out_md, o.plot};  // compare_schemes checks them with the inputs before converting anything
  const auto rows = compare_schemes(o.c);
  const bool measured = o.c.bench_tokens > 0;
  if (!o.out_md.empty()) write_report(o.out_md, markdown(rows, measured), o.c.report_inputs);
  if (!o.plot.empty()) {
    const std::string caption = o.c.source + ", " + o.c.text + ", windows of " + std::to_string(o.c.ctx) + " tokens";
    write_report(o.plot, compare_plot_svg(rows, caption), o.c.report_inputs);
  }
  if (o.format == "json") print_json(report_json(o, rows));
  else if (o.format == "md") std::cout << markdown(rows, measured);
  else if (o.format == "csv") std::cout << csv(rows);
  else print_table(kHeader, table_rows(rows, measured));
  return 0;
}
}  // namespace

void add_compare(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<CompareOpts>();
  auto* c = app.add_subcommand("compare", "Convert with several schemes and tabulate size, PPL, KLD and speed");
  c->add_option("source", o->c.source, "checkpoint file or directory")->required();
  c->add_option("--schemes", o->c.schemes,
                "comma-separated schemes; the first is the reference; SCHEME+METHOD (int4:g128+gptq, q4_0+awq) "
                "converts with calibration on --calib, SCHEME+METHOD+tune (q4_0+gptq+tune) adds scale tuning")
      ->delimiter(',')
      ->default_str("f32,f16,bf16,int8,int4:g32,int4:g128");
  c->add_option("--text", o->c.text, "UTF-8 evaluation text")->required();
  c->add_option("--ctx", o->c.ctx, "window length in tokens (default 256, or the model's context length when shorter)")->check(within(2, double(kMaxContext)));
  c->add_option("--chunks", o->c.chunks, "use only the first K windows")->check(within(1, double(kMaxChunks)));
  c->add_option("--tokenizer", o->c.tokenizer, "tokenizer when it is not beside the source (as for convert --tokenizer)");
  c->add_option("--trim-vocab", o->c.trim_vocab, "trim every conversion's vocabulary (as convert --trim-vocab); the text is mapped through it");
  c->add_option("--calib", o->c.calib, "calibration data for the SCHEME+METHOD schemes (as convert --calib)");
  c->add_option("--calib-tokens", o->c.calib_tokens, "calibration tokens (as convert --calib-tokens)")
      ->check(CLI::PositiveNumber);
  c->add_option("--calib-ctx", o->c.calib_ctx, "tokens per calibration sequence (as convert --calib-ctx)")
      ->check(CLI::Range(int64_t(2), kMaxCalibCtx));
  c->add_option("--calib-tune-steps", o->c.calib_tune_steps,
                "scale tuning steps for the SCHEME+METHOD+tune schemes (as convert --calib-tune-steps; default " +
                    std::to_string(kDefaultCompareTuneSteps) + ")")
      ->check(CLI::Range(int64_t(1), int64_t(100000)));
  c->add_option("--keep", o->c.keep_dir, "keep the artifacts in this directory (one per scheme)");
  c->add_option("--format", o->c.format, "what each scheme is converted to and run from: shards (the default) or "
                                         "another format the executor runs (as convert --format)");
  c->add_option("--bench-tokens", o->c.bench_tokens, "prompt and generated tokens for the speed column (0: skip; 2N must fit the context length)")
      ->default_val(32)->check(within(0, double(kMaxGenerate)));
  c->add_option("--bench-reps", o->c.bench_reps, "runs of the speed measurement; the table shows the median and range")
      ->default_val(5)->check(within(1, 1000));
  c->add_option("-o,--output-format", o->format, "what to print: table (the default), md, csv or json")
      ->check(CLI::IsMember({"table", "md", "csv", "json"}));
  c->add_option("--out", o->out_md, "also write the table as Markdown to this file (a new or regular file, not inside an input or artifact)");
  c->add_option("--plot", o->plot, "also draw perplexity against bits per weight as an SVG file (the same rules as --out)");
  add_threads_option(c, o->c.threads);
  add_allow_long_context(c, o->c.allow_long_context);
  c->add_flag("--json", o->json_out, "print one JSON object (-o json)");
  c->callback([o, &exit_code] {
    if (o->c.schemes.empty()) o->c.schemes = {"f32", "f16", "bf16", "int8", "int4:g32", "int4:g128"};
    exit_code = run_compare(*o);
  });
}

}  // namespace sf::cli
