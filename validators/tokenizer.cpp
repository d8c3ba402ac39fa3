#include "validators/tokenizer.h"

#include <sentencepiece_processor.h>

#include "core/error.h"
#include "core/fs_util.h"

namespace sf {

namespace {
// Real SentencePiece models are a few MiB at most; a larger file is not one.
constexpr uint64_t kMaxTokenizerBytes = uint64_t(64) << 20;
}  // namespace

// The bytes are read by read_file (regular files only: a FIFO or /proc path is refused, never
// waited on) and parsed from memory; SentencePiece's own messages name its source files and
// internals, so every failure is reported in our words.
Tokenizer::Tokenizer(const std::string& model_path)
    : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()), path_(model_path) {
  const std::string bytes = read_file(model_path, kMaxTokenizerBytes);
  if (!sp_->LoadFromSerializedProto(bytes).ok() || sp_->GetPieceSize() <= 0)
    fail_file(model_path, "not a SentencePiece model (it does not parse as one, or has no pieces)");
}

Tokenizer::~Tokenizer() = default;

std::vector<int> Tokenizer::encode(const std::string& text) const {
  std::vector<int> ids;
  if (!sp_->Encode(text, &ids).ok()) fail_file(path_, "the tokenizer cannot encode the text");
  return ids;
}

std::vector<int> Tokenizer::encode_file(const std::string& path) const {
  const std::string text = read_file(path, kMaxTextBytes);
  std::vector<int> ids;
  try {
    if (!sp_->Encode(text, &ids).ok()) fail_file(path, "the tokenizer cannot encode this text");
  } catch (const std::bad_alloc&) {
    fail_file(path, "out of memory while tokenizing the text", ErrorKind::IO);
  }
  return ids;
}

std::string Tokenizer::decode(const std::vector<int>& ids) const {
  std::string out;
  if (!sp_->Decode(ids, &out).ok()) fail_file(path_, "the tokenizer cannot decode the generated ids");
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
int Tokenizer::unk() const {
  const int id = sp_->unk_id();
  return id >= 0 && id < vocab_size() && sp_->IsUnknown(id) ? id : -1;
}
int Tokenizer::vocab_size() const { return sp_->GetPieceSize(); }

std::string Tokenizer::piece(int id) const {
  return id >= 0 && id < vocab_size() ? sp_->IdToPiece(id) : "<id " + std::to_string(id) + ">";
}

std::vector<int> Tokenizer::reserved_ids() const {
  std::vector<int> ids;
  for (int id = 0; id < vocab_size(); ++id)
    if (sp_->IsControl(id) || sp_->IsUnknown(id) || sp_->IsByte(id)) ids.push_back(id);
  return ids;
}

}  // namespace sf
