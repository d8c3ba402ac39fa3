#include "tokenizers/tokenizer_kinds.h"

#include <sys/stat.h>

#include "core/error.h"
#include "core/fs_util.h"
#include "tokenizers/gpt2_bpe.h"
#include "tokenizers/sentencepiece_tokenizer.h"

namespace sf {

namespace {

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// GPT-2 BPE: NAMEvocab.json with NAMEmerges.txt beside it (Hugging Face's vocab.json /
// merges.txt, and the older gpt2-vocab.json / gpt2-merges.txt).
std::vector<std::string> locate_gpt2_bpe(const std::string& path) {
  std::vector<std::string> files;
  if (ends_with(path, "vocab.json")) {
    files = {path, path.substr(0, path.size() - 10) + "merges.txt"};
    if (!present(files[1])) fail_file(files[1], "missing: the GPT-2 vocabulary " + path + " needs its merges beside it");
  } else if (ends_with(path, ".json")) {
    fail_file(path, "not a tokenizer shardforge reads: a GPT-2 BPE tokenizer is given as its vocab.json (merges.txt "
                    "beside it) or their directory; a SentencePiece tokenizer as its .model file");
  }
  return files;
}

std::unique_ptr<Tokenizer> open_gpt2_bpe(const std::vector<std::string>& files) {
  return std::make_unique<Gpt2BpeTokenizer>(files[0], files[1]);
}

// SentencePiece: any other file, which must then parse as a model.
std::vector<std::string> locate_sentencepiece(const std::string& path) { return {path}; }

std::unique_ptr<Tokenizer> open_sentencepiece(const std::vector<std::string>& files) {
  return std::make_unique<SentencePieceTokenizer>(files[0]);
}

}  // namespace

// A file is offered to each kind in order: SentencePiece, which claims every file, comes last.
const std::vector<TokenizerKind>& tokenizer_kinds() {
  static const std::vector<TokenizerKind> kinds = {
      {"gpt2_bpe", {"vocab.json", "merges.txt"}, locate_gpt2_bpe, open_gpt2_bpe},
      {"sentencepiece", {"tokenizer.model"}, locate_sentencepiece, open_sentencepiece},
  };
  return kinds;
}

const TokenizerKind* find_tokenizer_kind(const std::string& name) {
  for (const auto& k : tokenizer_kinds())
    if (name == k.name) return &k;
  return nullptr;
}

namespace {

// "tokenizer.model (sentencepiece)", "vocab.json and merges.txt (gpt2_bpe)".
std::string described(const TokenizerKind& k) {
  std::string s;
  for (size_t i = 0; i < k.artifact_names.size(); ++i)
    s += (i == 0 ? "" : i + 1 == k.artifact_names.size() ? " and " : ", ") + k.artifact_names[i];
  return s + " (" + k.name + ")";
}

// A directory is searched for every kind's files under their artifact names: exactly one kind
// complete is taken; several are refused naming them (which one is meant is the user's call); a
// kind found in part names the file it lacks.
TokenizerSource locate_in_directory(const std::string& dir) {
  std::vector<TokenizerSource> complete;
  const TokenizerKind* partial = nullptr;
  std::string missing;
  for (const auto& k : tokenizer_kinds()) {
    std::vector<std::string> files;
    std::string lacks;
    bool any = false;
    for (const auto& name : k.artifact_names) {
      files.push_back(dir + "/" + name);
      if (present(files.back())) any = true;
      else if (lacks.empty()) lacks = files.back();
    }
    if (lacks.empty()) {
      complete.push_back({&k, std::move(files)});
    } else if (any && !partial) {
      partial = &k;
      missing = lacks;
    }
  }
  if (complete.size() == 1) return complete.front();
  std::string kinds;
  if (complete.size() > 1) {
    for (const auto& c : complete) kinds += (kinds.empty() ? "" : "; ") + described(*c.kind);
    fail_file(dir, "holds several tokenizers (" + kinds + "): name the one to use (its file)");
  }
  if (partial) fail_file(missing, "missing: the " + std::string(partial->name) + " tokenizer in " + dir + " needs " +
                                      described(*partial));
  for (const auto& k : tokenizer_kinds()) kinds += (kinds.empty() ? "" : ", or ") + described(k);
  fail_file(dir, "holds no tokenizer: a tokenizer directory holds " + kinds);
}

}  // namespace

TokenizerSource locate_tokenizer(const std::string& path) {
  if (is_directory(path)) return locate_in_directory(path);
  for (const auto& k : tokenizer_kinds())
    if (auto files = k.locate(path); !files.empty()) return {&k, std::move(files)};
  fail_file(path, "not a tokenizer");  // unreachable while SentencePiece claims every file
}

std::unique_ptr<Tokenizer> open_tokenizer(const std::string& path) {
  const TokenizerSource src = locate_tokenizer(path);
  return src.kind->open(src.files);
}

std::unique_ptr<Tokenizer> open_tokenizer(const std::string& kind, const std::vector<std::string>& files,
                                          const std::string& where) {
  const TokenizerKind* k = find_tokenizer_kind(kind);
  if (!k) {
    std::string known;
    for (const auto& t : tokenizer_kinds()) known += (known.empty() ? "" : ", ") + std::string(t.name);
    fail_file(where, "tokenizer kind \"" + kind + "\" is unknown (this shardforge reads " + known + ")");
  }
  if (files.size() != k->artifact_names.size())
    fail_file(where, "a " + kind + " tokenizer has " + std::to_string(k->artifact_names.size()) + " file(s), not " +
                         std::to_string(files.size()));
  return k->open(files);
}

}  // namespace sf
