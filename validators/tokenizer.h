#pragma once
// SentencePiece tokenizer, as shipped inside an artifact or beside a checkpoint. Loading reads a
// regular file only and reports failures in shardforge's words, never SentencePiece's.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sentencepiece { class SentencePieceProcessor; }

namespace sf {

inline constexpr uint64_t kMaxTextBytes = uint64_t(64) << 20;

class Tokenizer {
 public:
  explicit Tokenizer(const std::string& model_path);
  ~Tokenizer();
  std::vector<int> encode(const std::string& text) const;  // no BOS
  // A whole evaluation text (a regular file of at most kMaxTextBytes: SentencePiece needs about
  // 100x the text's size in memory to encode it at once).
  std::vector<int> encode_file(const std::string& path) const;
  std::string decode(const std::vector<int>& ids) const;
  std::string piece_text(int prev, int id) const;          // text of one generated token, for streaming
  int bos() const;
  int eos() const;
  int vocab_size() const;

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string path_;
};

}  // namespace sf
