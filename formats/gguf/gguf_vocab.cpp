#include "formats/gguf/gguf_vocab.h"

#include <cstring>

#include "core/checked.h"
#include "core/error.h"
#include "core/fs_util.h"
#include <nlohmann/json.hpp>

#include "core/json_util.h"
#include "formats/gguf/gguf_types.h"

namespace sf::gguf {

namespace {

constexpr uint64_t kMaxSentencePieceBytes = uint64_t(64) << 20;  // as tokenizers/ reads it
constexpr uint64_t kMaxGpt2FileBytes = uint64_t(16) << 20;
constexpr size_t kMaxTokens = size_t(1) << 24;

// A bounded protobuf reader over one message's bytes: every length is checked against what is left.
class Proto {
 public:
  Proto(const uint8_t* p, size_t n, const std::string& file) : p_(p), end_(p + n), file_(file) {}
  bool done() const { return p_ == end_; }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ == end_) bad("a number runs past the end");
      const uint8_t b = *p_++;
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    bad("a number is longer than 10 bytes");
  }
  // The next field: its number and wire type.
  std::pair<uint64_t, int> key() {
    const uint64_t k = varint();
    return {k >> 3, int(k & 7)};
  }
  std::pair<const uint8_t*, size_t> bytes() {
    const uint64_t n = varint();
    if (!range_within(0, n, uint64_t(end_ - p_))) bad("a field runs past the end");
    const uint8_t* at = p_;
    p_ += n;
    return {at, size_t(n)};
  }
  uint32_t fixed32() {
    if (end_ - p_ < 4) bad("a field runs past the end");
    uint32_t v;
    std::memcpy(&v, p_, 4);
    p_ += 4;
    return v;
  }
  void skip(int wire) {
    switch (wire) {
      case 0: varint(); break;
      case 1:
        if (end_ - p_ < 8) bad("a field runs past the end");
        p_ += 8;
        break;
      case 2: bytes(); break;
      case 5: fixed32(); break;
      default: bad("a field has wire type " + std::to_string(wire) + ", which SentencePiece models do not use");
    }
  }
  [[noreturn]] void bad(const std::string& why) const {
    fail_file(file_, "is not a SentencePiece model (" + why + ")");
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
  const std::string& file_;
};

void read_piece(Proto& outer, Vocab& v, const std::string& file) {
  auto [at, n] = outer.bytes();
  Proto p(at, n, file);
  std::string piece;
  float score = 0;
  int32_t type = int32_t(TokenType::Normal);
  while (!p.done()) {
    auto [field, wire] = p.key();
    if (field == 1 && wire == 2) {
      auto [s, len] = p.bytes();
      piece.assign(reinterpret_cast<const char*>(s), len);
    } else if (field == 2 && wire == 5) {
      const uint32_t bits = p.fixed32();
      std::memcpy(&score, &bits, 4);
    } else if (field == 3 && wire == 0) {
      type = int32_t(p.varint());
    } else {
      p.skip(wire);
    }
  }
  if (type < 1 || type > 6) type = int32_t(TokenType::Normal);
  v.tokens.push_back(std::move(piece));
  v.scores.push_back(score);
  v.types.push_back(type);
}

// TrainerSpec: unk_id 40, bos_id 41, eos_id 42, pad_id 43 (int32, possibly -1).
void read_trainer_spec(Proto& outer, Vocab& v, const std::string& file) {
  auto [at, n] = outer.bytes();
  Proto p(at, n, file);
  while (!p.done()) {
    auto [field, wire] = p.key();
    if (wire == 0 && field >= 40 && field <= 43) {
      const int64_t id = int64_t(int32_t(uint32_t(p.varint())));
      (field == 40 ? v.unk : field == 41 ? v.bos : field == 42 ? v.eos : v.pad) = id;
    } else {
      p.skip(wire);
    }
  }
}

// NormalizerSpec: add_dummy_prefix 3 (bool, default true).
void read_normalizer_spec(Proto& outer, Vocab& v, const std::string& file) {
  auto [at, n] = outer.bytes();
  Proto p(at, n, file);
  while (!p.done()) {
    auto [field, wire] = p.key();
    if (field == 3 && wire == 0) v.add_space_prefix = p.varint() != 0;
    else p.skip(wire);
  }
}

}  // namespace

Vocab read_sentencepiece_vocab(const std::string& path) {
  const std::string data = read_file(path, kMaxSentencePieceBytes);
  Vocab v;
  v.model = "llama";
  v.pre = "default";
  v.add_bos = true;
  v.unk = 0, v.bos = 1, v.eos = 2, v.pad = -1;  // TrainerSpec's defaults
  Proto p(reinterpret_cast<const uint8_t*>(data.data()), data.size(), path);
  while (!p.done()) {
    auto [field, wire] = p.key();
    if (field == 1 && wire == 2) {
      if (v.tokens.size() >= kMaxTokens) p.bad("more than 2^24 pieces");
      read_piece(p, v, path);
    } else if (field == 2 && wire == 2) {
      read_trainer_spec(p, v, path);
    } else if (field == 3 && wire == 2) {
      read_normalizer_spec(p, v, path);
    } else {
      p.skip(wire);
    }
  }
  if (v.tokens.empty()) fail_file(path, "is not a SentencePiece model (it has no pieces)");
  const int64_t n = int64_t(v.tokens.size());
  for (int64_t* id : {&v.unk, &v.bos, &v.eos, &v.pad})
    if (*id >= n) *id = -1;
  return v;
}

Vocab read_gpt2_vocab(const std::string& vocab_json, const std::string& merges_txt) {
  const nlohmann::json j = read_json_file(vocab_json, kMaxGpt2FileBytes);
  if (!j.is_object()) fail_file(vocab_json, "is not a JSON object of token -> id");
  if (j.size() > kMaxTokens) fail_file(vocab_json, "has more than 2^24 tokens");
  Vocab v;
  v.model = "gpt2";
  v.pre = "gpt-2";
  v.tokens.assign(j.size(), std::string());
  std::vector<bool> seen(j.size(), false);
  for (const auto& [token, id] : j.items()) {
    if (!id.is_number_integer()) fail_file(vocab_json, "an id is not an integer");
    const int64_t i = id.get<int64_t>();
    if (i < 0 || i >= int64_t(j.size()) || seen[size_t(i)])
      fail_file(vocab_json, "ids are not 0 .. " + std::to_string(j.size() - 1) + ", each once");
    seen[size_t(i)] = true;
    v.tokens[size_t(i)] = token;
  }
  v.types.assign(v.tokens.size(), int32_t(TokenType::Normal));
  for (size_t i = 0; i < v.tokens.size(); ++i)
    if (v.tokens[i] == "<|endoftext|>") {
      v.types[i] = int32_t(TokenType::Control);
      v.bos = v.eos = int64_t(i);
    }
  const std::string text = read_file(merges_txt, kMaxGpt2FileBytes);
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    start = end + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line.compare(0, 8, "#version") == 0) continue;
    v.merges.push_back(std::move(line));
  }
  return v;
}

void pad_vocab(Vocab& v, int64_t rows) {
  while (int64_t(v.tokens.size()) < rows) {
    v.tokens.push_back("[PAD" + std::to_string(v.tokens.size()) + "]");
    if (!v.scores.empty()) v.scores.push_back(0.0f);
    v.types.push_back(int32_t(TokenType::Unused));
  }
}

}  // namespace sf::gguf
