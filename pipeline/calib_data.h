#pragma once
// convert --calib FILE | ids:FILE: the calibration sequences. A text file is read through the
// tokenizer convert uses; an ids file lists token ids as --trim-vocab ids:FILE does. Sequences are
// consecutive windows of ctx tokens; with a tokenizer the first token of each is replaced by its BOS,
// as eval's windows are (an ids file with no tokenizer — ChatGLM-6B — is taken as given).
#include <cstdint>
#include <string>
#include <vector>

#include "core/model_desc.h"
#include "tokenizers/tokenizer.h"

namespace sf {

inline constexpr int64_t kDefaultCalibTokens = 32768;
inline constexpr int64_t kDefaultCalibCtx = 512;  // capped at the model's stated context
inline constexpr int64_t kMaxCalibCtx = 65536;    // a sequence's scratch and attention grow with it

struct CalibSpec {
  std::string file;
  bool ids = false;  // "ids:FILE"
};
CalibSpec parse_calib_spec(const std::string& spec);  // a usage error when empty
// The spec with its file named by its base name only (the manifest records no paths).
std::string recorded_calib_spec(const CalibSpec& spec);

// The context used: `ctx` when given (> 0), else kDefaultCalibCtx capped at desc.max_seq when the
// model states one. Refuses (usage) one outside [2, kMaxCalibCtx] or beyond a learned position table.
// `what` names the setting in messages: the option, or a pipeline stage's key.
int64_t calib_ctx(const ModelDesc& desc, int64_t ctx, const std::string& what = "--calib-ctx");

struct CalibData {
  std::vector<int32_t> tokens;  // n_seq x ctx
  size_t n_seq = 0, ctx = 0;
  size_t file_tokens = 0;  // tokens read: all of an ids file; of a text, up to the first chunk boundary past the tokens wanted
  std::string sha256;      // of the file's bytes
};
// Reads, hashes and tokenizes the file once; keeps min(tokens, what the file has) / ctx sequences.
// Refuses, naming the file, text without a tokenizer, ids outside the model's vocabulary and fewer
// tokens than one sequence.
CalibData read_calib_data(const CalibSpec& spec, const Tokenizer* tokenizer, const ModelDesc& desc, int64_t tokens,
                          int64_t ctx);

}  // namespace sf
