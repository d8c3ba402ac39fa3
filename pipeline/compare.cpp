#include "pipeline/compare.h"

#include <filesystem>
#include <memory>

#include "core/error.h"
#include "core/fs_util.h"
#include "pipeline/convert.h"
#include "quantizers/scheme.h"
#include "validators/kl_divergence.h"
#include "validators/perplexity.h"
#include "validators/speed.h"
#include "validators/tokenizer.h"

namespace sf {

namespace fs = std::filesystem;

namespace {

// Removes the directory on scope exit unless told to keep it.
struct WorkDir {
  std::string path;
  bool keep;
  ~WorkDir() {
    std::error_code ec;
    if (!keep) fs::remove_all(path, ec);
  }
};

std::string make_work_dir(const std::string& keep) {
  if (!keep.empty()) {
    std::error_code ec;
    fs::create_directories(keep, ec);
    if (ec) fail_file(keep, "cannot create directory: " + ec.message());
    return keep;
  }
  std::string tmpl = (fs::temp_directory_path() / "shardforge-compare.XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) fail_file(tmpl, "cannot create a temporary directory");
  return tmpl;
}

std::string dir_name(std::string scheme) {
  for (char& c : scheme)
    if (c == ':') c = '_';
  return scheme;
}

}  // namespace

std::vector<CompareRow> compare_schemes(const CompareOptions& opt) {
  if (opt.schemes.empty()) fail("compare needs at least one scheme");
  for (const auto& s : opt.schemes) parse_scheme(s);  // reject a typo before converting anything
  const WorkDir work{make_work_dir(opt.keep_dir), !opt.keep_dir.empty()};
  const std::string text = read_text_file(opt.text);
  std::vector<std::string> dirs;
  for (const auto& scheme : opt.schemes) {
    ConvertOptions c;
    c.source = opt.source;
    c.out = work.path + "/" + dir_name(scheme);
    c.scheme = scheme;
    c.tokenizer = opt.tokenizer;
    c.threads = opt.threads;
    c.force = true;
    c.progress = false;
    convert(c);
    dirs.push_back(c.out);
  }
  ThreadPool pool(opt.threads);
  const ExecModel reference(dirs[0]);
  const std::string tpath = reference.artifact().tokenizer_path();
  if (tpath.empty()) fail_file(opt.source, "no tokenizer beside the source; pass --tokenizer FILE");
  const Tokenizer tok(tpath);
  const std::vector<int> tokens = tok.encode(text);

  std::vector<CompareRow> rows;
  for (size_t i = 0; i < dirs.size(); ++i) {
    CompareRow r;
    r.scheme = opt.schemes[i];
    const ExecModel model(dirs[i]);
    for (const auto& f : model.artifact().manifest()["files"])
      if (f["path"] != "tokenizer.model") r.weight_bytes += f["bytes"].get<uint64_t>();
    r.bits_per_weight = model.artifact().manifest()["summary"]["bits_per_weight"].get<double>();
    if (i == 0) {
      const PerplexityResult p = perplexity(model, tokens, opt.ctx, tok.bos(), opt.chunks, pool);
      r.ppl = p.ppl;
      r.ppl_stderr = p.ppl_stderr;
      r.tokens_scored = p.tokens_scored;
    } else {  // one pass over both models gives the perplexity too
      const KldResult k = kl_divergence(model, reference, tokens, opt.ctx, tok.bos(), opt.chunks, pool);
      r.ppl = k.ppl;
      r.ppl_stderr = k.ppl_stderr;
      r.tokens_scored = k.tokens_scored;
      r.kld = k.kld_mean;
      r.kld_stderr = k.kld_stderr;
      r.top1 = k.top1_agreement;
    }
    if (opt.bench_tokens > 0) {
      const SpeedResult s = measure_speed(dirs[i], opt.bench_tokens, opt.bench_tokens, int64_t(opt.threads));
      r.prefill_tokens_per_s = s.prefill_tokens_per_s;
      r.decode_tokens_per_s = s.decode_tokens_per_s;
    }
    rows.push_back(r);
  }
  return rows;
}

}  // namespace sf
