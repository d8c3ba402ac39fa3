#include "tokenizers/sentencepiece_tokenizer.h"

#include <cstdio>
#include <string_view>

#include <sentencepiece_processor.h>

#include "core/error.h"
#include "core/fs_util.h"

namespace sf {

namespace {
// Real SentencePiece models are a few MiB at most; a larger file is not one.
constexpr uint64_t kMaxModelBytes = uint64_t(64) << 20;
// SentencePiece writes a space as U+2581, and spells a word it has no pieces for as the piece of
// that character alone followed by byte pieces ("\u2581", <0xE4>, <0xB8>, <0xAD> for " \u4e2d").
constexpr std::string_view kWordBoundary = "\xe2\x96\x81";
}  // namespace

// The bytes are read by read_file (regular files only: a FIFO or /proc path is refused, never
// waited on) and parsed from memory; SentencePiece's own messages name its source files and
// internals, so every failure is reported in our words.
SentencePieceTokenizer::SentencePieceTokenizer(const std::string& model_path)
    : Tokenizer({model_path}), sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()), path_(model_path) {
  const std::string bytes = read_file(model_path, kMaxModelBytes);
  if (!sp_->LoadFromSerializedProto(bytes).ok() || sp_->GetPieceSize() <= 0)
    fail_file(model_path, "not a SentencePiece model (it does not parse as one, or has no pieces)");
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::vector<int> SentencePieceTokenizer::encode_text(const std::string& text, const std::string& where) const {
  std::vector<int> ids;
  if (!sp_->Encode(text, &ids).ok()) fail_file(where, "the tokenizer cannot encode this text");
  return ids;
}

std::string SentencePieceTokenizer::decode_ids(const std::vector<int>& ids) const {
  std::string out;
  if (!sp_->Decode(ids, &out).ok()) fail_file(path_, "the tokenizer cannot decode the generated ids");
  return out;
}

std::string SentencePieceTokenizer::piece_text_of(int prev, int id) const {
  // Decoding a pair and removing the first token's text keeps leading spaces right.
  if (prev < 0) return decode_ids({id});
  const std::string a = decode_ids({prev}), ab = decode_ids({prev, id});
  return ab.compare(0, a.size(), a) == 0 ? ab.substr(a.size()) : decode_ids({id});
}

int SentencePieceTokenizer::bos() const { return sp_->bos_id(); }
int SentencePieceTokenizer::eos() const { return sp_->eos_id(); }
int SentencePieceTokenizer::vocab_size() const { return sp_->GetPieceSize(); }

int SentencePieceTokenizer::unk() const {
  const int id = sp_->unk_id();
  return id >= 0 && id < vocab_size() && sp_->IsUnknown(id) ? id : -1;
}

std::string SentencePieceTokenizer::piece(int id) const {
  return id >= 0 && id < vocab_size() ? sp_->IdToPiece(id) : "<id " + std::to_string(id) + ">";
}

// The piece of U+2581 alone when the model has it as a normal piece; -1 otherwise.
int SentencePieceTokenizer::word_boundary() const {
  const int id = sp_->PieceToId(std::string(kWordBoundary));
  const bool normal = !sp_->IsUnknown(id) && !sp_->IsControl(id) && !sp_->IsByte(id) && !sp_->IsUnused(id);
  return normal ? id : -1;
}

// Control pieces are bos, eos, pad and any user-defined control token; the word-boundary piece
// starts the byte spelling of a word (byte_spelling).
std::vector<int> SentencePieceTokenizer::reserved_ids() const {
  std::vector<int> ids;
  const int boundary = word_boundary();
  for (int id = 0; id < vocab_size(); ++id)
    if (sp_->IsControl(id) || sp_->IsUnknown(id) || sp_->IsByte(id) || id == boundary) ids.push_back(id);
  return ids;
}

// The piece's text in byte pieces, each U+2581 (a space) as the word-boundary piece, as
// SentencePiece spells a word it has no pieces for; a space as <0x20> when the model has no such
// piece. Needs a byte-fallback model (<0x00>..<0xFF>).
std::vector<int> SentencePieceTokenizer::byte_spelling(int id) const {
  if (id < 0 || id >= vocab_size() || sp_->IsControl(id) || sp_->IsUnknown(id) || sp_->IsByte(id) ||
      sp_->IsUnused(id))
    return {};
  const std::string text = sp_->IdToPiece(id);
  const int boundary = word_boundary();
  std::vector<int> ids;
  const auto add_byte = [&](unsigned char b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    const int byte_id = sp_->PieceToId(name);
    if (!sp_->IsByte(byte_id)) return false;
    ids.push_back(byte_id);
    return true;
  };
  for (size_t i = 0; i < text.size();) {
    if (std::string_view(text).substr(i, kWordBoundary.size()) == kWordBoundary) {
      if (boundary >= 0) ids.push_back(boundary);
      else if (!add_byte(' ')) return {};
      i += kWordBoundary.size();
    } else if (!add_byte(static_cast<unsigned char>(text[i++]))) {
      return {};
    }
  }
  return ids;
}

}  // namespace sf
