#include "validators/model_tokenizer.h"

#include "core/error.h"
#include "validators/artifact_tokenizer.h"

namespace sf {

namespace {
// A piece quoted in a message: JSON string syntax shows spaces and escapes control characters.
std::string quoted(const std::string& piece) {
  return json(piece).dump(-1, ' ', false, json::error_handler_t::replace);
}
}  // namespace

ModelTokenizer::ModelTokenizer(std::unique_ptr<Tokenizer> tokenizer, const VocabMap* map, std::string model)
    : tok_(std::move(tokenizer)), map_(map), model_(std::move(model)) {
  // The tokenizer's ids index the source's vocabulary: the model's own, or the one its map trims.
  if (map_ && tok_->vocab_size() > map_->old_size())
    fail_file(model_, "its tokenizer has " + std::to_string(tok_->vocab_size()) + " pieces but the model only " +
                          std::to_string(map_->old_size()) + " source ids");
}

std::unique_ptr<ModelTokenizer> ModelTokenizer::open(const Artifact& artifact) {
  std::unique_ptr<Tokenizer> tok = open_artifact_tokenizer(artifact);
  if (!tok) return nullptr;
  return std::make_unique<ModelTokenizer>(std::move(tok), artifact.vocab_map(), artifact.dir());
}

std::unique_ptr<ModelTokenizer> ModelTokenizer::require(const Artifact& artifact) {
  auto tok = open(artifact);
  if (!tok) fail_file(artifact.dir(), "artifact has no tokenizer (convert with --tokenizer FILE)");
  return tok;
}

// A dropped token is spelt with the byte pieces the trim kept, which read the same text (the
// model sees other tokens, not other text); failing that it is read as the unknown piece, or refused.
std::vector<int> ModelTokenizer::to_model(const std::vector<int>& ids, const std::string& where) {
  if (!map_) return ids;
  const int unk = tok_->unk();
  const int unk_model = unk >= 0 ? map_->new_id(unk) : -1;
  std::vector<int> out;
  out.reserve(ids.size());
  for (int id : ids) {
    const int32_t n = map_->new_id(id);
    if (n >= 0) {
      out.push_back(n);
      continue;
    }
    if (spell_in_bytes(id, out)) {
      if (spelled_++ == 0) {
        first_spelled_ = id;
        spelled_where_ = where;
      }
      continue;
    }
    if (unk_model < 0)
      fail_file(where, "holds the token " + quoted(tok_->piece(id)) + " (tokenizer id " + std::to_string(id) +
                           "), which the vocabulary trim of " + model_ + " dropped" +
                           (tok_->byte_spelling(id).empty() ? "; the tokenizer cannot spell it in byte pieces"
                                                            : "; the trim dropped pieces its byte spelling needs") +
                           (unk < 0 ? ", and the tokenizer has no unknown piece to read it as"
                                    : ", and the unknown piece too, so it cannot be read as unknown"));
    if (replaced_++ == 0) {
      first_replaced_ = id;
      replaced_where_ = where;
    }
    out.push_back(unk_model);
  }
  return out;
}

bool ModelTokenizer::spell_in_bytes(int id, std::vector<int>& out) const {
  const std::vector<int> spelling = tok_->byte_spelling(id);
  if (spelling.empty()) return false;
  const size_t before = out.size();
  for (int piece : spelling) {
    const int32_t n = map_->new_id(piece);
    if (n < 0) {
      out.resize(before);
      return false;
    }
    out.push_back(n);
  }
  return true;
}

// What needs BOS depends on the kind: SentencePiece prompts start with it, GPT-2's do not.
int ModelTokenizer::bos() const {
  const int b = tok_->bos();
  const std::string needed_by = tok_->prompt_starts_with_bos()
                                    ? "which every prompt and evaluation window starts with"
                                    : "which evaluation windows (and an empty prompt) start with";
  if (b < 0) fail_file(model_, "its tokenizer has no BOS piece, " + needed_by);
  if (!map_) return b;
  const int32_t n = map_->new_id(b);
  if (n < 0)
    fail_file(model_, "the vocabulary trim dropped the tokenizer's BOS " + quoted(tok_->piece(b)) + " (id " +
                          std::to_string(b) + "), " + needed_by);
  return n;
}

int ModelTokenizer::eos() const {
  const int e = tok_->eos();
  return map_ && e >= 0 ? map_->new_id(e) : e;
}

int ModelTokenizer::tokenizer_id(int model_id) const { return map_ ? map_->old_id(model_id) : model_id; }

std::vector<int> ModelTokenizer::tokenizer_ids(const std::vector<int>& model_ids) const {
  std::vector<int> out;
  out.reserve(model_ids.size());
  for (int id : model_ids) out.push_back(tokenizer_id(id));
  return out;
}

void ModelTokenizer::count_undecodable(int model_id, int tokenizer_id) const {
  if (tok_->is_decodable(tokenizer_id)) return;
  if (undecodable_++ == 0) first_undecodable_ = model_id;
}

std::string ModelTokenizer::decode(const std::vector<int>& model_ids) const {
  const std::vector<int> ids = tokenizer_ids(model_ids);
  for (size_t i = 0; i < ids.size(); ++i) count_undecodable(model_ids[i], ids[i]);
  return tok_->decode(ids);  // which skips them
}

std::string ModelTokenizer::piece_text(int prev_model_id, int model_id) const {
  const int id = tokenizer_id(model_id);
  count_undecodable(model_id, id);
  return tok_->piece_text(prev_model_id < 0 ? -1 : tokenizer_id(prev_model_id), id);
}

std::string ModelTokenizer::unk_warning() const {
  std::string line;
  if (spelled_ > 0)
    line = spelled_where_ + ": " + std::to_string(spelled_) + " token(s) the vocabulary trim of " + model_ +
           " dropped were spelt with byte pieces, which read the same text (the first: " +
           quoted(tok_->piece(first_spelled_)) + ", tokenizer id " + std::to_string(first_spelled_) + ")";
  if (replaced_ > 0)
    line += (line.empty() ? "" : "; ") + replaced_where_ + ": " + std::to_string(replaced_) +
            " token(s) the vocabulary trim of " + model_ + " dropped were read as the unknown piece " +
            quoted(tok_->piece(tok_->unk())) + " (the first: " + quoted(tok_->piece(first_replaced_)) +
            ", tokenizer id " + std::to_string(first_replaced_) + ")";
  return line;
}

std::string ModelTokenizer::undecodable_warning() const {
  if (undecodable_ == 0) return "";
  const int first = first_undecodable_;
  std::string id = "id " + std::to_string(first);
  if (map_) id = "model id " + std::to_string(first) + ", source id " + std::to_string(tokenizer_id(first));
  return model_ + ": " + std::to_string(undecodable_) + " generated token(s) have no piece in the tokenizer (" +
         std::to_string(tok_->vocab_size()) + " pieces; the first: " + id +
         ") and were shown as nothing; --json lists every id";
}

}  // namespace sf
