#include "pipeline/calib_data.h"

#include <algorithm>
#include <filesystem>

#include "core/error.h"
#include "core/fs_util.h"
#include "core/sha256.h"
#include "pipeline/vocab_trim.h"

namespace sf {

CalibSpec parse_calib_spec(const std::string& spec) {
  CalibSpec s;
  s.ids = spec.rfind("ids:", 0) == 0;
  s.file = s.ids ? spec.substr(4) : spec;
  if (s.file.empty()) fail_usage("--calib needs a file: FILE (text) or ids:FILE (token ids)");
  return s;
}

std::string recorded_calib_spec(const CalibSpec& spec) {
  const std::string base = std::filesystem::path(spec.file).filename().string();
  return spec.ids ? "ids:" + base : base;
}

int64_t calib_ctx(const ModelDesc& desc, int64_t ctx, const std::string& what) {
  if (ctx <= 0) return desc.max_seq > 0 ? std::min(kDefaultCalibCtx, desc.max_seq) : kDefaultCalibCtx;
  if (ctx < 2 || ctx > kMaxCalibCtx)
    fail_usage(what + " must be from 2 to " + std::to_string(kMaxCalibCtx));
  if (desc.positional == PositionalKind::Learned && ctx > desc.max_seq)
    fail_usage(what + " " + std::to_string(ctx) + " is more than the " + std::to_string(desc.max_seq) +
               " positions the model's learned position table covers");
  return ctx;
}

CalibData read_calib_data(const CalibSpec& spec, const Tokenizer* tok, const ModelDesc& desc, int64_t want,
                          int64_t ctx) {
  if (!spec.ids && !tok)
    fail_file(spec.file, "calibration text needs the model's tokenizer, and this conversion has none; give token "
                         "ids instead (--calib ids:FILE)");
  const std::string bytes = read_file(spec.file, spec.ids ? kMaxIdsFileBytes : kMaxTextBytes);
  CalibData c;
  c.sha256 = sha256_hex(bytes.data(), bytes.size());
  std::vector<int64_t> ids;
  if (spec.ids) {
    ids = parse_id_list(spec.file, bytes, desc.vocab_size);
  } else {
    if (!is_text(bytes))
      fail_file(spec.file, "is not UTF-8 text (calibration text must be a text file; give token ids as "
                           "--calib ids:FILE)");
    // A chunk at a time (the corpus chunks of --trim-vocab), stopping once `want` tokens are in hand:
    // memory is one chunk's tokens plus those kept, not the whole file's.
    for (size_t begin = 0, end = 0; begin < bytes.size() && ids.size() < size_t(want); begin = end) {
      end = corpus_chunk_end(bytes, begin);
      for (int id : tok->encode(bytes.substr(begin, end - begin))) {
        if (id < 0 || id >= desc.vocab_size)
          fail_file(spec.file, "the tokenizer gives id " + std::to_string(id) +
                                   ", outside the model's vocabulary of " + std::to_string(desc.vocab_size));
        ids.push_back(id);
      }
    }
  }
  c.file_tokens = ids.size();
  c.ctx = size_t(ctx);
  if (ids.size() < c.ctx)
    fail_file(spec.file, "gives " + std::to_string(ids.size()) + " tokens, fewer than one calibration sequence of " +
                             std::to_string(ctx) + " (--calib-ctx)");
  c.n_seq = std::min(ids.size(), size_t(want)) / c.ctx;
  const int bos = tok ? tok->bos() : -1;
  if (bos >= desc.vocab_size)
    fail_file(spec.file, "the tokenizer's BOS id " + std::to_string(bos) + " is outside the model's vocabulary");
  c.tokens.resize(c.n_seq * c.ctx);
  for (size_t i = 0; i < c.tokens.size(); ++i) c.tokens[i] = int32_t(ids[i]);
  if (bos >= 0)
    for (size_t s = 0; s < c.n_seq; ++s) c.tokens[s * c.ctx] = bos;
  return c;
}

}  // namespace sf
