#pragma once
// What every tokenizer kind offers (tokenizer_kinds.h lists the kinds and opens them). Each is
// loaded from regular files only and reports failures in shardforge's words, naming the file.
#include <cstdint>
#include <string>
#include <vector>

namespace sf {

// The most text encode_file reads: evaluation texts are megabytes; SentencePiece needs about 100x
// the text's size in memory to encode it at once, GPT-2 BPE about 25x in the worst case (a text
// that is one word).
inline constexpr uint64_t kMaxTextBytes = uint64_t(64) << 20;

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  virtual const char* kind() const = 0;  // the manifest's name for it: "sentencepiece", "gpt2_bpe"
  // The files it was read from, in the kind's order (tokenizer_kinds.h).
  const std::vector<std::string>& files() const { return files_; }

  std::vector<int> encode(const std::string& text) const;  // no BOS
  // A whole evaluation text: a regular file of at most kMaxTextBytes; problems name that file.
  std::vector<int> encode_file(const std::string& path) const;
  // Exact bytes, possibly invalid UTF-8. An id outside 0 .. vocab_size()-1 decodes to nothing:
  // models have more rows than their tokenizer has pieces (nanoGPT's GPT-2 pads 50257 to 50304,
  // ChatGLM2 to 65024) and may emit one; callers that show text warn about them
  // (is_decodable, validators/model_tokenizer.h).
  std::string decode(const std::vector<int>& ids) const;
  // The text one generated token adds after `prev` (-1: none), for streaming. Pieces may end inside
  // a UTF-8 character; their concatenation is the decoded text. An undecodable `id` adds nothing;
  // an undecodable `prev` is taken as none.
  std::string piece_text(int prev, int id) const;
  bool is_decodable(int id) const { return id >= 0 && id < vocab_size(); }
  virtual int bos() const = 0;
  virtual int eos() const = 0;
  virtual int vocab_size() const = 0;
  // Whether a prompt starts with bos(): LLaMA's SentencePiece models expect it, GPT-2 does not.
  virtual bool prompt_starts_with_bos() const = 0;
  // The unknown piece's id, or -1 when the kind has none (byte-level BPE spells every byte).
  virtual int unk() const = 0;
  // The piece as the vocabulary spells it (SentencePiece "\xe2\x96\x81the", "<0x0A>"; GPT-2 its
  // bytes), for messages.
  virtual std::string piece(int id) const = 0;
  // Ids any text may need whatever it says, which a vocabulary trim always keeps (pipeline/
  // vocab_trim.h): the special pieces (bos, eos, pad, unk, control) and those the kind spells
  // arbitrary bytes with (SentencePiece's byte-fallback pieces <0x00>..<0xFF> and its word-boundary
  // piece, GPT-2's 256 byte tokens and <|endoftext|>).
  virtual std::vector<int> reserved_ids() const = 0;
  // Token `id` spelt with the kind's byte pieces (all among reserved_ids()), decoding to the same
  // text: a trimmed artifact reads a token it dropped so (validators/model_tokenizer.h). Empty when
  // the kind cannot: a special or control token, or a vocabulary without byte pieces.
  virtual std::vector<int> byte_spelling(int id) const = 0;

 protected:
  explicit Tokenizer(std::vector<std::string> files) : files_(std::move(files)) {}
  // Encodes text; `where` is the file blamed when it cannot be.
  virtual std::vector<int> encode_text(const std::string& text, const std::string& where) const = 0;
  // decode and piece_text for ids the vocabulary has (prev may still be -1).
  virtual std::string decode_ids(const std::vector<int>& ids) const = 0;
  virtual std::string piece_text_of(int prev, int id) const = 0;

 private:
  std::vector<std::string> files_;
};

}  // namespace sf
