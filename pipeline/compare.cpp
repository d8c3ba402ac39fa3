#include "pipeline/compare.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <set>

#include "converters/architectures/architecture.h"
#include "converters/reader_registry.h"
#include "core/error.h"
#include "core/fs_util.h"
#include "core/interrupt.h"
#include "core/messages.h"
#include "executor/exec_model.h"
#include "formats/format_registry.h"
#include "formats/output_dir.h"
#include "pipeline/convert.h"
#include "quantizers/scheme.h"
#include "pipeline/calib_data.h"
#include "pipeline/calibrate_stage.h"
#include "tokenizers/tokenizer_kinds.h"
#include "pipeline/vocab_trim.h"
#include "validators/model_tokenizer.h"
#include "validators/kl_divergence.h"
#include "validators/perplexity.h"
#include "validators/reference_logits.h"
#include "validators/windows.h"

namespace sf {

namespace fs = std::filesystem;

namespace {

// A temporary directory in $TMPDIR, removed with everything in it on scope exit (it is ours alone).
struct ScratchDir {
  std::string path;
  ScratchDir() {
    std::string tmpl = (fs::temp_directory_path() / "shardforge-compare.XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) fail_file(tmpl, "cannot create a temporary directory");
    path = tmpl;
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
};

// One scheme's artifact: deleted once measured unless it is to be kept (a directory only when it
// holds nothing but artifact files; a file only when it is a regular file).
struct SchemeArtifact {
  std::string path;
  bool keep, is_file;
  ~SchemeArtifact() {
    if (keep) return;
    struct stat st {};
    if (!is_file) remove_flat_dir(path, is_artifact_file_name);
    else if (::lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) ::unlink(path.c_str());
  }
};

// The artifact's name under the scratch or --keep directory: the scheme with ':' and '+' as '_',
// and a single-file format's extension.
std::string artifact_name(std::string scheme, const FormatEntry& format) {
  for (char& c : scheme)
    if (c == ':' || c == '+') c = '_';
  return scheme + (format.file_extension ? format.file_extension : "");
}

// --format: one the executor runs, storing every scheme asked for; checked before converting.
const FormatEntry& compare_format(const CompareOptions& opt) {
  const FormatEntry& f = format_entry(opt.format);
  if (!f.runnable)
    fail_usage("--format " + opt.format + ": compare runs every conversion, and shardforge does not run " + opt.format +
               " output (its graphs are for an ONNX runtime)");
  if (f.storable) {
    const std::vector<QType> types = f.storable();
    for (const auto& label : opt.schemes) {
      const QType t = parse_scheme(parse_compare_scheme(label).scheme).type;
      if (std::find(types.begin(), types.end(), t) == types.end())
        fail_usage("--schemes: " + label + ": --format " + opt.format + " cannot store " + qtype_traits(t).name);
    }
  }
  return f;
}

struct Inputs {
  std::string tokenizer;
  std::vector<int> tokens;
  int bos = 0;
  WindowPlan plan;
  std::shared_ptr<const VocabMap> map;  // --trim-vocab: what every conversion must keep
  std::string unk_warning;
};

// What compare reads or writes, none of which the report may be or lie inside: the source, its
// checkpoint files and the directory holding them (config.json, params.json and the tokenizer are
// read from there), the text, the tokenizer, the --keep directory.
std::vector<std::string> report_inputs(const CompareOptions& opt, const SourceModel& src, const std::string& tokenizer) {
  std::vector<std::string> inputs = {opt.source, opt.text, tokenizer, opt.keep_dir};
  for (const auto& f : locate_tokenizer(tokenizer).files) inputs.push_back(f);  // merges.txt beside vocab.json
  if (!opt.trim_vocab.empty()) inputs.push_back(parse_trim_spec(opt.trim_vocab).file);
  if (!opt.calib.empty()) inputs.push_back(parse_calib_spec(opt.calib).file);
  for (const auto& f : src.files) {
    inputs.push_back(f);
    inputs.push_back(fs::path(f).parent_path().empty() ? "." : fs::path(f).parent_path().string());
  }
  return inputs;
}

// The context-length rule (docs/cli.md) for compare's windows and timing runs: more positions than
// the model's max_seq is a usage error unless allow_long_context, which goes on with a warning.
void check_positions(const CompareOptions& opt, const ModelDesc& desc, int64_t positions, const std::string& what) {
  if (desc.max_seq <= 0 || positions <= desc.max_seq) return;
  const std::string problem = opt.source + ": " + what + " needs " + std::to_string(positions) +
                              " positions, more than the model's context length of " + std::to_string(desc.max_seq);
  if (!opt.allow_long_context) fail_usage(problem + " (--allow-long-context runs past it)");
  std::cerr << "shardforge: warning: " << problem << "; results past it are not meaningful\n";
}

// Everything that could fail after an hour of converting, checked before converting anything.
Inputs check_inputs(CompareOptions& opt) {
  Inputs in;
  const std::string text = read_file(opt.text, kMaxTextBytes);  // the bound eval applies too
  const auto src = open_source(opt.source);
  const CanonicalModel mapped = map_architecture(*src);
  const ModelDesc& desc = mapped.desc;
  // compare reads --text through a tokenizer, which convert does not take for such a family.
  if (const char* why = mapped.tokenizer_not_reproduced)
    fail_file(opt.source, "compare needs a tokenizer, and shardforge has none for " + mapped.family + " models: " +
                              why + ", which shardforge does not implement (convert each scheme and give prompts as "
                                    "token ids with run --ids)",
              ErrorKind::Unsupported);
  const TrimSpec trim = opt.trim_vocab.empty() ? TrimSpec{} : parse_trim_spec(opt.trim_vocab);  // usage errors first
  if (opt.ctx == 0) opt.ctx = desc.max_seq >= 2 ? std::min<int64_t>(kDefaultCompareCtx, desc.max_seq) : kDefaultCompareCtx;
  check_positions(opt, desc, opt.ctx, "--ctx " + std::to_string(opt.ctx));
  // Each timing run prefills bench_tokens and then generates as many.
  check_positions(opt, desc, 2 * opt.bench_tokens,
                  "--bench-tokens " + std::to_string(opt.bench_tokens) + " (prompt and generated tokens)");
  in.tokenizer = opt.tokenizer.empty() ? src->tokenizer_path : opt.tokenizer;
  if (in.tokenizer.empty()) fail_file(opt.source, "no tokenizer beside the source; pass --tokenizer FILE");
  opt.report_inputs = report_inputs(opt, *src, in.tokenizer);
  const auto same_file = [](const std::string& a, const std::string& b) {
    std::error_code ea, eb;
    const fs::path pa = fs::weakly_canonical(a, ea), pb = fs::weakly_canonical(b, eb);
    return ea || eb ? a == b : pa == pb;
  };
  for (size_t i = 0; i < opt.reports.size(); ++i) {
    if (opt.reports[i].empty()) continue;
    for (size_t j = 0; j < i; ++j)
      if (!opt.reports[j].empty() && same_file(opt.reports[i], opt.reports[j]))
        fail_usage(opt.reports[i] + ": named for two outputs (--out and --plot need different files)");
    check_report_path(opt.reports[i], opt.report_inputs);
  }
  // The trim every conversion will make (the trim_vocab stage computes the same from the same
  // spec), so that a text holding a dropped token is refused before converting anything.
  auto opened = open_tokenizer(in.tokenizer);
  if (!opt.trim_vocab.empty())
    in.map = std::make_shared<const VocabMap>(
        VocabMap::from_keep(trim_keep_set(trim, read_trim_file(trim), desc, opened.get())));
  ModelTokenizer tok(std::move(opened), in.map.get(), opt.source);
  in.tokens = tok.to_model(tok.tokenizer().encode(text), opt.text);
  in.bos = tok.bos();
  in.unk_warning = tok.unk_warning();
  try {
    in.plan = plan_windows(in.tokens.size(), opt.ctx, opt.chunks);
  } catch (const Error& e) {
    fail_file(opt.text, e.message());
  }
  return in;
}

void check_keep_targets(const CompareOptions& opt, const FormatEntry& format) {
  if (opt.keep_dir.empty()) return;
  for (const auto& scheme : opt.schemes) {
    const std::string target = opt.keep_dir + "/" + artifact_name(scheme, format);
    struct stat st {};
    if (::lstat(target.c_str(), &st) == 0)
      fail_file(target, "already exists; compare --keep never replaces anything (remove it or choose another "
                        "--keep directory)");
  }
  std::error_code ec;
  fs::create_directories(opt.keep_dir, ec);
  if (ec) fail_file(opt.keep_dir, "cannot create directory: " + ec.message());
}

}  // namespace

std::string CompareScheme::canonical() const {
  return parse_scheme(scheme).name() + (method.empty() ? "" : "+" + method) + (tune ? "+tune" : "");
}

CompareScheme parse_compare_scheme(const std::string& label) {
  CompareScheme cs;
  const size_t plus = label.find('+');
  cs.scheme = label.substr(0, plus);
  parse_scheme(cs.scheme);
  if (plus == std::string::npos) return cs;
  cs.method = label.substr(plus + 1);
  if (const size_t t = cs.method.find('+'); t != std::string::npos) {
    if (cs.method.substr(t) != "+tune")
      fail_usage("--schemes: " + label + ": after SCHEME+METHOD only +tune may follow, not '" + cs.method.substr(t) + "'");
    cs.method.resize(t);
    cs.tune = true;
  }
  if (!calib_method_from_name(cs.method))
    fail_usage("--schemes: " + label + ": unknown calibration method '" + cs.method + "' (known: " +
               calib_method_names() + ")");
  return cs;
}

std::vector<CompareRow> compare_schemes(CompareOptions& opt) {
  if (opt.schemes.empty()) fail("compare needs at least one scheme");
  std::set<std::string> seen;  // canonical spellings: int4:g32 and int4:g32:sym are one scheme
  bool calibrated = false;
  for (const auto& s : opt.schemes) {
    const CompareScheme cs = parse_compare_scheme(s);  // a typo is refused before converting anything
    if (!seen.insert(cs.canonical()).second)
      fail_usage("--schemes: " + s + " is the same scheme as an earlier one (" + cs.canonical() + ")");
    if (!cs.method.empty()) {
      if (opt.calib.empty())
        fail_usage("--schemes: " + s + " is calibrated (+" + cs.method + ") and needs calibration data: --calib FILE");
      if (!opt.trim_vocab.empty())
        fail_usage("--schemes: " + s + ": calibration cannot be combined with --trim-vocab");
      calibrated = true;
    }
  }
  if (!calibrated && (!opt.calib.empty() || opt.calib_tokens > 0 || opt.calib_ctx > 0))
    fail_usage("--calib, --calib-tokens and --calib-ctx are for calibrated schemes (SCHEME+METHOD, e.g. int4:g128+" +
               std::string(calib_methods().front().name) + "), and --schemes has none");
  const FormatEntry& format = compare_format(opt);
  const InterruptGuard interrupt;  // for the whole run: converting, evaluating, timing
  const Inputs in = check_inputs(opt);
  check_keep_targets(opt, format);
  const ScratchDir scratch;
  const std::string root = opt.keep_dir.empty() ? scratch.path : opt.keep_dir;

  ThreadPool pool(opt.threads);
  std::unique_ptr<ReferenceLogits> reference;
  std::string reference_dir;
  std::vector<CompareRow> rows;
  // The source is hashed by the first conversion; the others record the same digests.
  std::map<std::string, std::string> source_sha256;
  for (size_t i = 0; i < opt.schemes.size(); ++i) {
    interrupt.check();
    const std::string& scheme = opt.schemes[i];
    ConvertOptions c;
    c.source = opt.source;
    c.out = root + "/" + artifact_name(scheme, format);
    c.format = opt.format;
    const CompareScheme cs = parse_compare_scheme(scheme);
    c.scheme = cs.scheme;
    if (!cs.method.empty()) {
      c.calib_method = cs.method;
      c.calib = opt.calib;
      c.calib_tokens = opt.calib_tokens;
      c.calib_ctx = opt.calib_ctx;
      if (cs.tune) c.calib_tune_steps = opt.calib_tune_steps;
    }
    c.tokenizer = in.tokenizer;
    c.trim_vocab = opt.trim_vocab;
    c.threads = opt.threads;
    c.force = false;
    c.progress = true;  // drawn only on a terminal
    c.source_sha256 = source_sha256;
    const SchemeArtifact artifact{c.out, !opt.keep_dir.empty(), format.file_extension != nullptr};
    source_sha256 = convert(c).source_sha256;

    CompareRow r;
    r.scheme = scheme;
    {
      const ExecModel model(c.out);
      const VocabMap* map = model.artifact().vocab_map();
      if (bool(map) != bool(in.map) || (map && !(*map == *in.map)))
        fail_file(c.out, "keeps other ids than compare planned from --trim-vocab (did its file change meanwhile?)");
      const json& tokenizer = model.artifact().manifest()["tokenizer"];
      std::set<std::string> tokenizer_files;
      if (tokenizer.is_object())
        for (const auto& f : tokenizer["files"]) tokenizer_files.insert(f["name"].get<std::string>());
      for (const auto& f : model.artifact().manifest()["files"])
        if (!tokenizer_files.count(f["path"].get<std::string>())) r.weight_bytes += f["bytes"].get<uint64_t>();
      // A single-file format ships as the file: its size is the column (headers, padding and an
      // embedded tokenizer included).
      struct stat st {};
      if (format.file_extension && ::stat(c.out.c_str(), &st) == 0) r.weight_bytes = uint64_t(st.st_size);
      r.bits_per_weight = model.artifact().manifest()["summary"]["bits_per_weight"].get<double>();
      if (i == 0) {  // the reference: its logits are stored once for every other scheme
        reference = std::make_unique<ReferenceLogits>(scratch.path, size_t(in.plan.positions()),
                                                      size_t(model.desc().vocab_size));
        reference_dir = c.out;
        const PerplexityResult p =
            perplexity(model, in.tokens, opt.ctx, in.bos, opt.chunks, pool, reference.get(), "ppl " + scheme);
        r.ppl = p.ppl;
        r.ppl_stderr = p.ppl_stderr;
        r.tokens_scored = p.tokens_scored;
        r.kld = 0;
        r.top1 = 1;
      } else {  // one pass over the model gives the perplexity too
        const KldResult k = kl_divergence(model, *reference, reference_dir, in.tokens, opt.ctx, in.bos, opt.chunks,
                                          pool, "kld " + scheme);
        r.ppl = k.ppl;
        r.ppl_stderr = k.ppl_stderr;
        r.tokens_scored = k.tokens_scored;
        r.kld = k.kld_mean;
        r.kld_stderr = k.kld_stderr;
        r.top1 = k.top1_agreement;
      }
    }
    if (opt.bench_tokens > 0) {
      const SpeedResult s = measure_speed(c.out, opt.bench_tokens, opt.bench_tokens, int64_t(opt.threads),
                                          opt.bench_reps, "bench " + scheme);
      r.prefill = s.prefill;
      r.decode = s.decode;
    }
    rows.push_back(r);
  }
  if (!in.unk_warning.empty()) warn(in.unk_warning);
  return rows;
}

}  // namespace sf
