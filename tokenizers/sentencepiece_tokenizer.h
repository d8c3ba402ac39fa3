#pragma once
// A SentencePiece model (one .model file), as LLaMA-family checkpoints ship it.
#include <memory>
#include <string>

#include "tokenizers/tokenizer.h"

namespace sentencepiece { class SentencePieceProcessor; }

namespace sf {

class SentencePieceTokenizer : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& model_path);
  ~SentencePieceTokenizer() override;

  const char* kind() const override { return "sentencepiece"; }
  int bos() const override;
  int eos() const override;
  int vocab_size() const override;
  bool prompt_starts_with_bos() const override { return true; }
  int unk() const override;
  std::string piece(int id) const override;
  std::vector<int> reserved_ids() const override;
  std::vector<int> byte_spelling(int id) const override;

 protected:
  std::vector<int> encode_text(const std::string& text, const std::string& where) const override;
  std::string decode_ids(const std::vector<int>& ids) const override;
  std::string piece_text_of(int prev, int id) const override;

 private:
  int word_boundary() const;

  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string path_;
};

}  // namespace sf
