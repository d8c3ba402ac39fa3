#include "validators/tokenizer.h"

#include <sentencepiece_processor.h>

#include "core/error.h"

namespace sf {

Tokenizer::Tokenizer(const std::string& model_path)
    : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()), path_(model_path) {
  const auto status = sp_->Load(model_path);
  if (!status.ok()) fail_file(model_path, "not a SentencePiece model: " + status.ToString());
}

Tokenizer::~Tokenizer() = default;

std::vector<int> Tokenizer::encode(const std::string& text) const {
  std::vector<int> ids;
  const auto status = sp_->Encode(text, &ids);
  if (!status.ok()) fail(path_ + ": cannot encode text: " + status.ToString());
  return ids;
}

std::string Tokenizer::decode(const std::vector<int>& ids) const {
  std::string out;
  const auto status = sp_->Decode(ids, &out);
  if (!status.ok()) fail(path_ + ": cannot decode ids: " + status.ToString());
  return out;
}

std::string Tokenizer::piece_text(int prev, int id) const {
  // Decoding a pair and removing the first token's text keeps leading spaces right.
  if (prev < 0) return decode({id});
  const std::string a = decode({prev}), ab = decode({prev, id});
  return ab.compare(0, a.size(), a) == 0 ? ab.substr(a.size()) : decode({id});
}

int Tokenizer::bos() const { return sp_->bos_id(); }
int Tokenizer::eos() const { return sp_->eos_id(); }
int Tokenizer::vocab_size() const { return sp_->GetPieceSize(); }

}  // namespace sf
