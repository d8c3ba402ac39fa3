// bench ARTIFACT: prefill and decode tokens/s, load time, peak RSS.
#include <iostream>
#include <memory>

#include "cli/common.h"
#include "core/error.h"
#include "formats/artifact.h"
#include "formats/gguf/gguf_model.h"
#include "validators/speed.h"

namespace sf::cli {

namespace {
struct Opts {
  std::string dir;
  int64_t prefill = 128, decode = 64;
  size_t threads = 0;
  bool json_out = false, allow_long = false;
};

int run(const Opts& o) {
  set_current_input(o.dir);
  // Opened once for its description (and its checks) before measure_speed times its own open.
  check_context(open_model(o.dir).desc(), o.dir, o.prefill + o.decode,
                "-p " + std::to_string(o.prefill) + " + -n " + std::to_string(o.decode), o.allow_long);
  const SpeedResult r = measure_speed(o.dir, o.prefill, o.decode, int64_t(o.threads));
  if (o.json_out) {
    print_json({{"artifact", o.dir}, {"threads", r.threads}, {"load_seconds", r.load_seconds},
                {"prefill_tokens", r.prefill_tokens}, {"prefill_tokens_per_s", r.prefill_tokens_per_s},
                {"decode_tokens", r.decode_tokens}, {"decode_tokens_per_s", r.decode_tokens_per_s},
                {"peak_rss_bytes", r.peak_rss_bytes}});
    return 0;
  }
  print_table({"load", "prefill tok/s", "decode tok/s", "peak RSS", "threads"},
              {{fmt("%.3f s", r.load_seconds), fmt("%.1f", r.prefill_tokens_per_s), fmt("%.1f", r.decode_tokens_per_s),
                human_bytes(uint64_t(r.peak_rss_bytes)), std::to_string(r.threads)}});
  return 0;
}
}  // namespace

void add_bench(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("bench", "Measure load time, prefill and decode speed, and peak memory");
  c->add_option("artifact", o->dir, "artifact directory")->required();
  c->add_option("-p", o->prefill, "prompt tokens")->default_val(128)->check(within(1, double(kMaxGenerate)));
  c->add_option("-n", o->decode, "generated tokens")->default_val(64)->check(within(0, double(kMaxGenerate)));
  add_threads_option(c, o->threads);
  add_allow_long_context(c, o->allow_long);
  c->add_flag("--json", o->json_out, "print one JSON object");
  c->callback([o, &exit_code] { exit_code = run(*o); });
}

}  // namespace sf::cli
