// The trim_vocab stage: plan() decides the kept ids and shrinks the model description; process()
// keeps those rows of the token embedding and of the output projection (by role, so a tied head is
// trimmed with its embedding); finish() writes vocab_map.bin and its manifest entry.
#include <algorithm>
#include <memory>
#include <tuple>

#include "core/error.h"
#include "core/sha256.h"
#include "formats/vocab_map.h"
#include "pipeline/stages.h"
#include "pipeline/vocab_trim.h"
#include "tokenizers/tokenizer.h"

namespace sf {

namespace {

std::string string_param(const json& p, const char* key, bool required) {
  if (!p.contains(key)) {
    if (required) fail_usage(std::string("trim_vocab stage: needs '") + key + "'");
    return "";
  }
  if (!p[key].is_string() || p[key].get<std::string>().empty())
    fail_usage(std::string("trim_vocab stage: '") + key + "' must be a non-empty string");
  return p[key].get<std::string>();
}

class TrimVocabStage : public Stage {
 public:
  explicit TrimVocabStage(const json& p)
      : given_(string_param(p, "spec", true)), spec_(parse_trim_spec(given_)),
        expected_sha_(string_param(p, "file_sha256", false)) {
    if (!expected_sha_.empty() && spec_.kind == TrimSpec::Kind::Range)
      fail_usage("trim_vocab stage: file_sha256 applies to corpus: and ids: specs only");
  }
  std::string name() const override { return "trim_vocab"; }
  json params() const override {
    json p = {{"spec", recorded_trim_spec(given_, spec_)}};
    if (!file_sha_.empty()) p["file_sha256"] = file_sha_;
    return p;
  }

  void plan(CanonicalModel& model, const PlanContext& ctx) override {
    // The file is read once: its sha256 is that of the bytes the keep set comes from.
    const std::string file_bytes = read_trim_file(spec_);
    if (!spec_.file.empty()) {
      ctx.inputs.push_back(spec_.file);
      file_sha_ = sha256_hex(file_bytes.data(), file_bytes.size());
      if (!expected_sha_.empty() && expected_sha_ != file_sha_)
        fail_file(spec_.file, "its sha256 differs from the pipeline's file_sha256 (not the file that was meant)");
    }
    old_vocab_ = model.desc.vocab_size;
    map_ = VocabMap::from_keep(trim_keep_set(spec_, file_bytes, model.desc, ctx.tokenizer));
    if (spec_.kind == TrimSpec::Kind::Corpus && ctx.tokenizer)
      note_uncounted(*ctx.tokenizer, model.desc.special, model.warnings);
    remap_special(model.desc.special);
    model.desc.vocab_size = map_.kept();
    if (ctx.tokenizer) warn_dropped_specials(*ctx.tokenizer, model.warnings);
  }

  void process(Unit& u, StageContext&) override {
    for (auto& t : u.tensors) {
      if (t.spec.role != TensorRole::TokenEmbedding && t.spec.role != TensorRole::Output) continue;
      if (!t.has_values)
        fail("trim_vocab stage: tensor " + t.spec.name + " was not loaded (trim_vocab runs after load)");
      const size_t cols = size_t(t.spec.shape.back());
      if (t.values.size() != size_t(old_vocab_) * cols)
        fail("trim_vocab stage: tensor " + t.spec.name + " does not have the source's " + std::to_string(old_vocab_) +
             " rows");
      // Kept rows move down in order (new id n is the n-th kept old id), in place: no second copy
      // of the largest tensor (quantize frees the buffer once it is encoded).
      float* v = t.values.data();
      for (int64_t n = 0; n < map_.kept(); ++n) {
        const size_t from = size_t(map_.old_id(n)) * cols, to = size_t(n) * cols;
        if (from != to) std::copy(v + from, v + from + cols, v + to);
      }
      t.values.resize(size_t(map_.kept()) * cols);
    }
  }

  void finish(FormatWriter& writer, json& manifest) override {
    const std::string bytes = map_.bytes();
    writer.add_bytes(kVocabMapName, bytes);
    manifest["vocab_map"] = {{"file", kVocabMapName}, {"old_vocab_size", map_.old_size()}, {"kept", map_.kept()},
                             {"sha256", sha256_hex(bytes.data(), bytes.size())}};
  }

 private:
  // A prefix-bidirectional model (ChatGLM-6B) gives meaning to [MASK], [gMASK] and <sop>: they take
  // their new ids, and a range or ids trim dropping one is refused (corpus mode keeps them).
  void remap_special(SpecialTokens& s) const {
    const std::pair<int64_t*, const char*> ids[] = {{&s.mask, "[MASK]"}, {&s.gmask, "[gMASK]"}, {&s.bos, "<sop>"}};
    for (auto [id, what] : ids) {
      if (*id < 0) continue;
      const int32_t now = map_.new_id(*id);
      if (now < 0)
        fail_usage("--trim-vocab drops " + std::string(what) + " (id " + std::to_string(*id) +
                   "), which the model needs; keep it");
      *id = now;
    }
  }

  // Corpus mode keeps ids no corpus can count (pipeline/vocab_trim.h); the ones a user may not
  // expect, the model's special ids and rows past the tokenizer's pieces, are said once.
  void note_uncounted(const Tokenizer& tok, const SpecialTokens& special, std::vector<std::string>& warnings) const {
    std::vector<std::string> parts;
    std::string names;
    for (auto [id, what] : model_special_ids(special)) names += std::string(names.empty() ? "" : ", ") + what;
    if (!names.empty()) parts.push_back("the model's special ids " + names);
    const int64_t pieces = tok.vocab_size();
    if (pieces < old_vocab_)
      parts.push_back("the " + std::to_string(old_vocab_ - pieces) + " ids past the tokenizer's " +
                      std::to_string(pieces) + " pieces (" + std::to_string(pieces) + " to " +
                      std::to_string(old_vocab_ - 1) + "), which the tokenizer never produces");
    if (parts.empty()) return;
    std::string line = "--trim-vocab corpus: kept " + parts[0];
    for (size_t i = 1; i < parts.size(); ++i) line += " and " + parts[i];
    warnings.push_back(line + ", whatever the corpus uses (no corpus can count them)");
  }

  // Allowed (the spec says what to keep) but worth saying: text commands depend on these. What
  // BOS costs depends on the kind: SentencePiece prompts start with it, GPT-2's do not (only
  // evaluation windows and an empty prompt do).
  void warn_dropped_specials(const Tokenizer& tok, std::vector<std::string>& warnings) const {
    const char* bos_cost = tok.prompt_starts_with_bos()
                               ? "run -p and eval will refuse every text"
                               : "eval will refuse every text (its windows start with BOS), and run an empty prompt";
    const std::tuple<int, const char*, const char*> ids[] = {
        {tok.bos(), "BOS", bos_cost},
        {tok.eos(), "EOS", "generation never stops at the end of a sequence"},
        {tok.unk(), "unknown piece", "text with a dropped token its byte pieces cannot spell is refused instead of "
                                     "read as unknown"}};
    for (auto [id, what, consequence] : ids)
      if (id >= 0 && id < old_vocab_ && !map_.keeps(id))
        warnings.push_back("--trim-vocab drops the tokenizer's " + std::string(what) + " " + tok.piece(id) + " (id " +
                           std::to_string(id) + "): " + consequence);
  }

  std::string given_;
  TrimSpec spec_;
  std::string expected_sha_, file_sha_;
  int64_t old_vocab_ = 0;
  VocabMap map_;
};

}  // namespace

std::unique_ptr<Stage> make_trim_vocab_stage(const json& p) { return std::make_unique<TrimVocabStage>(p); }

}  // namespace sf
