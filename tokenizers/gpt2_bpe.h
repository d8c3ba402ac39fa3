#pragma once
// GPT-2's byte-level BPE, read from vocab.json (token -> id) and merges.txt (one merge per line,
// by rank; an optional "#version" first line). Encoding follows Hugging Face's GPT-2 tokenizer:
// "<|endoftext|>" in the text is its special id; the rest is cut by the pre-tokenizer
// (gpt2_pretokenizer.h), each piece's bytes written in the byte-level alphabet (byte_level.h) and
// merged pair by pair, lowest rank first (leftmost first among equal ranks).
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizers/tokenizer.h"

namespace sf {

class Gpt2BpeTokenizer : public Tokenizer {
 public:
  static constexpr const char* kEndOfText = "<|endoftext|>";

  Gpt2BpeTokenizer(const std::string& vocab_path, const std::string& merges_path);

  const char* kind() const override { return "gpt2_bpe"; }
  int bos() const override { return end_of_text_; }
  int eos() const override { return end_of_text_; }
  int vocab_size() const override { return int(token_bytes_.size()); }
  bool prompt_starts_with_bos() const override { return false; }
  int unk() const override { return -1; }
  std::string piece(int id) const override;
  std::vector<int> reserved_ids() const override;
  std::vector<int> byte_spelling(int id) const override;

 protected:
  std::vector<int> encode_text(const std::string& text, const std::string& where) const override;
  std::string decode_ids(const std::vector<int>& ids) const override;
  std::string piece_text_of(int prev, int id) const override;

 private:
  struct Merge {
    uint32_t rank;
    int merged;
  };
  void read_vocab(const std::string& path);
  void read_merges(const std::string& path);
  void encode_piece(std::string_view piece, std::vector<int>& out) const;
  const std::string& bytes_of(int id) const;

  std::string vocab_path_;
  std::vector<std::string> token_bytes_;           // id -> the bytes it stands for
  std::unordered_map<std::string, int> id_of_;      // bytes -> id
  int byte_id_[256] = {};                           // the single-byte tokens every piece starts from
  std::unordered_map<uint64_t, Merge> merges_;      // (left id << 32 | right id) -> rank and result
  int end_of_text_ = -1;
};

}  // namespace sf
