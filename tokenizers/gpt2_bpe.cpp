#include "tokenizers/gpt2_bpe.h"

#include <algorithm>
#include <new>
#include <queue>

#include "core/error.h"
#include "core/fs_util.h"
#include "core/json_util.h"
#include "tokenizers/byte_level.h"
#include "tokenizers/gpt2_pretokenizer.h"

namespace sf {

using json = nlohmann::json;

namespace {

// GPT-2's files are 1 MiB (vocab.json) and 0.5 MiB (merges.txt); vocabularies 5x larger stay far
// below these. The JSON is parsed whole, so its bound also bounds the parser's memory.
constexpr uint64_t kMaxVocabFileBytes = uint64_t(16) << 20;
constexpr uint64_t kMaxMergesFileBytes = uint64_t(16) << 20;
constexpr size_t kMaxTokens = size_t(1) << 24;
// Pieces up to this long are encoded once per text and then looked up: most words repeat.
constexpr size_t kMaxCachedPiece = 64;

// A token or merge line quoted in a message, cut short: a line may be megabytes long.
std::string quote(std::string_view s) {
  constexpr size_t kMax = 40;
  std::string q = "\"";
  q.append(s.substr(0, kMax));
  q += s.size() > kMax ? "...\"" : "\"";
  return q;
}

uint64_t pair_key(int left, int right) { return uint64_t(uint32_t(left)) << 32 | uint32_t(right); }

}  // namespace

Gpt2BpeTokenizer::Gpt2BpeTokenizer(const std::string& vocab_path, const std::string& merges_path)
    : Tokenizer({vocab_path, merges_path}), vocab_path_(vocab_path) {
  read_vocab(vocab_path);
  read_merges(merges_path);
}

// vocab.json: {"token": id, ...}, tokens written in the byte-level alphabet, ids 0 to n-1 each once.
void Gpt2BpeTokenizer::read_vocab(const std::string& path) {
  const json v = read_json_file(path, kMaxVocabFileBytes);
  if (!v.is_object() || v.empty())
    fail_file(path, "not a GPT-2 vocabulary: expected a JSON object mapping each token to its id");
  const size_t n = v.size();
  if (n > kMaxTokens)
    fail_file(path, "has " + std::to_string(n) + " tokens, more than the " + std::to_string(kMaxTokens) + " allowed");
  token_bytes_.assign(n, std::string());
  std::vector<bool> seen(n, false);
  std::vector<const std::string*> name_of(n, nullptr);
  std::string bytes;
  for (const auto& [token, id_json] : v.items()) {
    if (!id_json.is_number_integer())
      fail_file(path, "token " + quote(token) + " has id " + id_json.dump() + ", not an integer");
    const int64_t id = id_json.is_number_unsigned() ? int64_t(std::min<uint64_t>(id_json.get<uint64_t>(), INT64_MAX))
                                                    : id_json.get<int64_t>();
    if (id < 0 || uint64_t(id) >= n)
      fail_file(path, "token " + quote(token) + " has id " + std::to_string(id) + "; ids must be 0 to " +
                          std::to_string(n - 1) + " (the vocabulary has " + std::to_string(n) + " tokens)");
    if (seen[size_t(id)])
      fail_file(path, "id " + std::to_string(id) + " is given to both " + quote(*name_of[size_t(id)]) + " and " +
                          quote(token));
    if (!alphabet_to_bytes(token, bytes))
      fail_file(path, "token " + quote(token) + " is not written in GPT-2's byte-level alphabet");
    seen[size_t(id)] = true;
    name_of[size_t(id)] = &token;
    token_bytes_[size_t(id)] = bytes;
    id_of_.emplace(bytes, int(id));  // distinct tokens stand for distinct bytes: the alphabet is one-to-one
  }
  for (int b = 0; b < 256; ++b) {
    const auto it = id_of_.find(std::string(1, char(b)));
    if (it == id_of_.end())
      fail_file(path, "has no token for the byte " + std::to_string(b) + ": a byte-level vocabulary needs all 256");
    byte_id_[b] = it->second;
  }
  const auto eot = id_of_.find(kEndOfText);
  if (eot == id_of_.end()) fail_file(path, std::string("has no ") + kEndOfText + " token");
  end_of_text_ = eot->second;
}

// merges.txt: "left right" per line, both vocabulary tokens whose concatenation is one too; the
// line order is the rank. Hugging Face's files start with "#version: 0.2"; a last empty line ends
// the file.
void Gpt2BpeTokenizer::read_merges(const std::string& path) {
  const std::string text = read_file(path, kMaxMergesFileBytes);
  const std::string_view all(text);
  std::string left, right;
  size_t line_no = 0;
  uint32_t rank = 0;
  for (size_t pos = 0; pos < all.size();) {
    const size_t eol = std::min(all.find('\n', pos), all.size());
    std::string_view line = all.substr(pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_no == 1 && line.substr(0, 8) == "#version")) continue;
    const std::string where = path + ": line " + std::to_string(line_no);
    const size_t space = line.find(' ');
    if (space == 0 || space == std::string_view::npos || space + 1 == line.size() ||
        line.find(' ', space + 1) != std::string_view::npos)
      fail(where + ": expected two tokens separated by one space, found " + quote(line));
    const std::string_view a = line.substr(0, space), b = line.substr(space + 1);
    const auto token_id = [&](std::string_view shown, std::string& bytes) {
      const auto it = alphabet_to_bytes(shown, bytes) ? id_of_.find(bytes) : id_of_.end();
      if (it == id_of_.end()) fail(where + ": " + quote(shown) + " is not a token of " + vocab_path_);
      return it->second;
    };
    const int a_id = token_id(a, left), b_id = token_id(b, right);
    const auto merged = id_of_.find(left + right);
    if (merged == id_of_.end())
      fail(where + ": merging " + quote(a) + " and " + quote(b) + " makes a token that is not in " + vocab_path_);
    if (!merges_.emplace(pair_key(a_id, b_id), Merge{rank, merged->second}).second)
      fail(where + ": the merge " + quote(line) + " appears twice");
    ++rank;
  }
}

const std::string& Gpt2BpeTokenizer::bytes_of(int id) const {
  if (id < 0 || size_t(id) >= token_bytes_.size())
    fail_file(vocab_path_, "cannot decode id " + std::to_string(id) + ": the vocabulary has ids 0 to " +
                               std::to_string(token_bytes_.size() - 1));
  return token_bytes_[size_t(id)];
}

// Merges one piece: its bytes as single-byte tokens in a linked list, candidate pairs in a heap by
// (rank, position). Each merge joins a pair into its left symbol and offers the two new pairs it
// forms. A candidate is taken only if the pair now at its position still has its rank: every
// current pair has an entry of its own, so the smallest entry that is still true is the next
// merge. O(n log n) with 8-byte entries, so a piece of megabytes (a long run of one letter) takes
// neither quadratic time nor much memory: 16 MiB of "a" encodes in 6 s and 390 MB all told.
void Gpt2BpeTokenizer::encode_piece(std::string_view piece, std::vector<int>& out) const {
  struct Symbol {
    int id;
    int prev, next;  // -1 at the ends
  };
  struct Candidate {
    uint32_t rank, left;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  const int n = int(piece.size());
  std::vector<Symbol> sym(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) sym[size_t(i)] = {byte_id_[uint8_t(piece[size_t(i)])], i - 1, i + 1 < n ? i + 1 : -1};
  // The merge of the pair starting at `left`, or nullptr when there is none (or no pair).
  const auto merge_at = [&](int left) -> const Merge* {
    if (left < 0 || sym[size_t(left)].id < 0 || sym[size_t(left)].next < 0) return nullptr;
    const auto it = merges_.find(pair_key(sym[size_t(left)].id, sym[size_t(sym[size_t(left)].next)].id));
    return it == merges_.end() ? nullptr : &it->second;
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  const auto offer = [&](int left) {
    if (const Merge* m = merge_at(left)) heap.push({m->rank, uint32_t(left)});
  };
  for (int i = 0; i + 1 < n; ++i) offer(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const Merge* m = merge_at(int(c.left));
    if (!m || m->rank != c.rank) continue;  // stale: the pair there changed since
    Symbol& l = sym[c.left];
    Symbol& r = sym[size_t(l.next)];
    l.id = m->merged;
    l.next = r.next;
    if (r.next >= 0) sym[size_t(r.next)].prev = int(c.left);
    r.id = -1;
    offer(l.prev);
    offer(int(c.left));
  }
  for (int i = 0; i >= 0 && i < n; i = sym[size_t(i)].next) out.push_back(sym[size_t(i)].id);
}

std::vector<int> Gpt2BpeTokenizer::encode_text(const std::string& text, const std::string& where) const {
  (void)where;  // every byte string encodes: nothing in a text can be refused
  std::vector<int> ids;
  std::unordered_map<std::string_view, std::vector<int>> cache;
  std::vector<int> word;
  const std::string_view eot(kEndOfText), all(text);
  for (size_t pos = 0; pos <= all.size();) {
    // "<|endoftext|>" is its special id wherever it appears; the text between is encoded alone.
    const size_t special = all.find(eot, pos);
    const size_t end = special == std::string_view::npos ? all.size() : special;
    Gpt2Pretokenizer pieces(all.substr(pos, end - pos));
    for (std::string_view piece; pieces.next(piece);) {
      if (piece.size() > kMaxCachedPiece) {
        encode_piece(piece, ids);
        continue;
      }
      auto it = cache.find(piece);
      if (it == cache.end()) {
        word.clear();
        encode_piece(piece, word);
        it = cache.emplace(piece, word).first;
      }
      ids.insert(ids.end(), it->second.begin(), it->second.end());
    }
    if (special == std::string_view::npos) break;
    ids.push_back(end_of_text_);
    pos = special + eot.size();
  }
  return ids;
}

std::string Gpt2BpeTokenizer::decode_ids(const std::vector<int>& ids) const {
  std::string out;
  for (int id : ids) out += bytes_of(id);
  return out;
}

// Byte-level tokens stand for bytes whatever precedes them: a piece is the token's bytes, which may
// be part of a UTF-8 character (the next pieces complete it).
std::string Gpt2BpeTokenizer::piece_text_of(int prev, int id) const {
  (void)prev;
  return bytes_of(id);
}

std::string Gpt2BpeTokenizer::piece(int id) const {
  return id >= 0 && size_t(id) < token_bytes_.size() ? token_bytes_[size_t(id)] : "<id " + std::to_string(id) + ">";
}

// Every text is spelt by the 256 single-byte tokens and <|endoftext|>; merges only shorten it.
std::vector<int> Gpt2BpeTokenizer::reserved_ids() const {
  std::vector<int> ids(std::begin(byte_id_), std::end(byte_id_));
  if (end_of_text_ >= 0) ids.push_back(end_of_text_);
  return ids;
}

// A token stands for its bytes, and each byte has its token: the spelling is exact. <|endoftext|>
// is a control token, not text.
std::vector<int> Gpt2BpeTokenizer::byte_spelling(int id) const {
  if (id < 0 || size_t(id) >= token_bytes_.size() || id == end_of_text_) return {};
  std::vector<int> ids;
  for (char c : token_bytes_[size_t(id)]) ids.push_back(byte_id_[uint8_t(c)]);
  return ids;
}

}  // namespace sf
