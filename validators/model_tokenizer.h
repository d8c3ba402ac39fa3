#pragma once
// A tokenizer seen through an artifact's vocabulary map (formats/vocab_map.h): text becomes the ids
// the model's rows are numbered by ("model ids"), and model ids become text again. Without a map
// both are the tokenizer's own ids. Every command that tokenizes for a model (run, eval, compare)
// goes through this class.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "formats/artifact.h"
#include "tokenizers/tokenizer.h"

namespace sf {

class ModelTokenizer {
 public:
  // `map` may be null (untrimmed) and must outlive this; `model` names the model in messages.
  ModelTokenizer(std::unique_ptr<Tokenizer> tokenizer, const VocabMap* map, std::string model);
  // The artifact's tokenizer (validators/artifact_tokenizer.h) through its map; null when the
  // artifact has none.
  static std::unique_ptr<ModelTokenizer> open(const Artifact& artifact);
  // The same, failing (naming the artifact) when it has none.
  static std::unique_ptr<ModelTokenizer> require(const Artifact& artifact);

  const Tokenizer& tokenizer() const { return *tok_; }
  const VocabMap* map() const { return map_; }

  // Tokenizer ids -> model ids. An id the trim dropped is spelt with the tokenizer's byte pieces
  // (Tokenizer::byte_spelling) when the trim kept those, so the text reads the same; else it
  // becomes the unknown piece when the trim kept that; both are counted for unk_warning().
  // Otherwise it is an Error naming `where`, the piece and its id.
  std::vector<int> to_model(const std::vector<int>& ids, const std::string& where);
  // BOS as a model id; an Error naming the model when the tokenizer has none or the trim dropped it.
  int bos() const;
  // EOS as a model id; -1 when the trim dropped it (generation then never meets it).
  int eos() const;
  // Model id -> tokenizer id.
  int tokenizer_id(int model_id) const;
  std::vector<int> tokenizer_ids(const std::vector<int>& model_ids) const;
  // Model ids the tokenizer has no piece for (padded rows: nanoGPT's GPT-2 has 50304 rows for
  // 50257 pieces) decode to nothing and are counted for undecodable_warning(); a `prev` without a
  // piece is read as none.
  bool has_piece(int model_id) const { return tok_->is_decodable(tokenizer_id(model_id)); }
  std::string decode(const std::vector<int>& model_ids) const;
  std::string piece_text(int prev_model_id, int model_id) const;
  // One line for a warning when to_model() spelt dropped tokens in bytes or read them as unknown;
  // empty otherwise.
  std::string unk_warning() const;
  // One line for a warning when decode() or piece_text() met ids without a piece; empty otherwise.
  std::string undecodable_warning() const;

 private:
  bool spell_in_bytes(int id, std::vector<int>& out) const;  // appends nothing when it cannot

  std::unique_ptr<Tokenizer> tok_;
  const VocabMap* map_;
  std::string model_;
  int64_t replaced_ = 0;
  int first_replaced_ = -1;
  std::string replaced_where_;
  // Counted by the const decoders: what they showed as nothing.
  void count_undecodable(int model_id, int tokenizer_id) const;
  mutable int64_t undecodable_ = 0;
  mutable int first_undecodable_ = -1;
  int64_t spelled_ = 0;
  int first_spelled_ = -1;
  std::string spelled_where_;
};

}  // namespace sf
