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
  int unk() const;  // -1 when the tokenizer has none
  int vocab_size() const;
  // The piece as the vocabulary spells it ("\xe2\x96\x81the", "<0x0A>"), for messages.
  std::string piece(int id) const;
  // Ids any text may need whatever it says, which a vocabulary trim always keeps: special pieces
  // (control and unknown: bos, eos, pad, unk) and byte-fallback pieces (<0x00>..<0xFF>), with which
  // a byte-fallback tokenizer spells what its other pieces cannot. The one place that knows which
  // pieces those are.
  std::vector<int> reserved_ids() const;

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string path_;
};

}  // namespace sf
