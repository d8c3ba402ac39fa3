// compare SOURCE --schemes LIST --text FILE: the PPL / KLD / size / speed table in one command.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <sstream>

#include "cli/common.h"
#include "core/error.h"
#include "formats/output_dir.h"
#include "pipeline/compare.h"

namespace sf::cli {

namespace {
struct Opts {
  CompareOptions c;
  std::string out_md;
  bool json_out = false;
};

std::vector<std::vector<std::string>> table_rows(const std::vector<CompareRow>& rows) {
  std::vector<std::vector<std::string>> t;
  const double ref_ppl = rows[0].ppl;
  for (size_t i = 0; i < rows.size(); ++i) {
    const CompareRow& r = rows[i];
    t.push_back({r.scheme, fmt("%.2f", r.bits_per_weight), human_bytes(r.weight_bytes),
                 fmt("%.4f", r.ppl) + " ± " + fmt("%.4f", r.ppl_stderr),
                 i == 0 ? "ref" : fmt("%+.2f%%", 100 * (r.ppl / ref_ppl - 1)),
                 i == 0 ? "ref" : fmt("%.2e", r.kld) + " ± " + fmt("%.1e", r.kld_stderr),
                 i == 0 ? "ref" : fmt("%.2f%%", 100 * r.top1),
                 fmt("%.1f", r.decode.median) + " (" + fmt("%.1f", r.decode.min) + "–" + fmt("%.1f", r.decode.max) + ")"});
  }
  return t;
}

const std::vector<std::string> kHeader = {"scheme", "bits/w", "size", "PPL ± stderr", "ΔPPL", "KLD ± stderr",
                                          "top-1", "decode tok/s (min–max)"};

json throughput_json(const Throughput& t) { return {{"median", t.median}, {"min", t.min}, {"max", t.max}}; }

int run(Opts& o) {
  set_current_input(o.c.source);
  o.c.report = o.out_md;  // compare_schemes checks it with the inputs before converting anything
  const auto rows = compare_schemes(o.c);
  if (!o.out_md.empty()) {
    std::ostringstream md;
    md << "| " ;
    for (size_t i = 0; i < kHeader.size(); ++i) md << (i ? " | " : "") << kHeader[i];
    md << " |\n|";
    for (size_t i = 0; i < kHeader.size(); ++i) md << " --- |";
    md << "\n";
    for (const auto& r : table_rows(rows)) {
      md << "|";
      for (const auto& c : r) md << " " << c << " |";
      md << "\n";
    }
    // Checked again: something may have been put at the path while compare ran. Then a temporary
    // name of our own (created exclusively), renamed over the report when complete.
    check_report_path(o.out_md, {o.c.source, o.c.text, o.c.tokenizer, o.c.keep_dir});
    const std::string tmp = o.out_md + ".partial-" + std::to_string(::getpid());
    FILE* f = std::fopen(tmp.c_str(), "wx");
    if (!f) fail_file(o.out_md, "cannot write the report");
    const std::string text = md.str();
    const bool written = std::fwrite(text.data(), 1, text.size(), f) == text.size();
    const bool closed = std::fclose(f) == 0;
    if (!written || !closed || std::rename(tmp.c_str(), o.out_md.c_str()) != 0) {
      std::remove(tmp.c_str());
      fail_file(o.out_md, "cannot write the report");
    }
  }
  if (o.json_out) {
    json a = json::array();
    for (const auto& r : rows)
      a.push_back({{"scheme", r.scheme}, {"bits_per_weight", r.bits_per_weight}, {"weight_bytes", r.weight_bytes},
                   {"ppl", r.ppl}, {"ppl_stderr", r.ppl_stderr}, {"kld", r.kld}, {"kld_stderr", r.kld_stderr},
                   {"top1_agreement", r.top1}, {"tokens_scored", r.tokens_scored},
                   {"prefill_tokens_per_s", r.prefill.median}, {"decode_tokens_per_s", r.decode.median},
                   {"prefill", throughput_json(r.prefill)}, {"decode", throughput_json(r.decode)}});
    print_json({{"source", o.c.source}, {"text", o.c.text}, {"ctx", o.c.ctx}, {"reference", o.c.schemes[0]},
                {"bench_tokens", o.c.bench_tokens}, {"bench_reps", o.c.bench_reps}, {"rows", a}});
    return 0;
  }
  print_table(kHeader, table_rows(rows));
  return 0;
}
}  // namespace

void add_compare(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("compare", "Convert with several schemes and tabulate size, PPL, KLD and speed");
  c->add_option("source", o->c.source, "checkpoint file or directory")->required();
  c->add_option("--schemes", o->c.schemes, "comma-separated schemes; the first is the reference")
      ->delimiter(',')
      ->default_str("f32,f16,bf16,int8,int4:g32,int4:g128");
  c->add_option("--text", o->c.text, "UTF-8 evaluation text")->required();
  c->add_option("--ctx", o->c.ctx, "window length in tokens (default 256, or the model's context length when shorter)")->check(within(2, double(kMaxContext)));
  c->add_option("--chunks", o->c.chunks, "use only the first K windows")->check(within(1, double(kMaxChunks)));
  c->add_option("--tokenizer", o->c.tokenizer, "tokenizer when it is not beside the source (as for convert --tokenizer)");
  c->add_option("--trim-vocab", o->c.trim_vocab, "trim every conversion's vocabulary (as convert --trim-vocab); the text is mapped through it");
  c->add_option("--keep", o->c.keep_dir, "keep the artifacts in this directory (one per scheme)");
  c->add_option("--bench-tokens", o->c.bench_tokens, "prompt and generated tokens for the speed column (0: skip; 2N must fit the context length)")
      ->default_val(32)->check(within(0, double(kMaxGenerate)));
  c->add_option("--bench-reps", o->c.bench_reps, "runs of the speed measurement; the table shows the median and range")
      ->default_val(5)->check(within(1, 1000));
  c->add_option("--out", o->out_md, "also write the table as Markdown to this file (a new or regular file, not inside an input or artifact)");
  add_threads_option(c, o->c.threads);
  add_allow_long_context(c, o->c.allow_long_context);
  c->add_flag("--json", o->json_out, "print one JSON object");
  c->callback([o, &exit_code] {
    if (o->c.schemes.empty()) o->c.schemes = {"f32", "f16", "bf16", "int8", "int4:g32", "int4:g128"};
    exit_code = run(*o);
  });
}

}  // namespace sf::cli
