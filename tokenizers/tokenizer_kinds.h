#pragma once
// The table of tokenizer kinds: each has a name (the artifact manifest's "kind"), the names its
// files take inside an artifact, a rule claiming a path a user gives, and an opener. Adding a kind
// is one row in tokenizer_kinds.cpp.
#include <memory>
#include <string>
#include <vector>

#include "tokenizers/tokenizer.h"

namespace sf {

struct TokenizerKind {
  const char* name;
  // Its files inside an artifact, in the kind's order; also the names a tokenizer directory holds.
  std::vector<std::string> artifact_names;
  // The kind's files (in its order) for a file a user gave (not a directory), or empty when the
  // file is not of this kind; throws an Error naming the missing file when the path is this kind's
  // but incomplete.
  std::vector<std::string> (*locate)(const std::string& path);
  std::unique_ptr<Tokenizer> (*open)(const std::vector<std::string>& files);
};

const std::vector<TokenizerKind>& tokenizer_kinds();
const TokenizerKind* find_tokenizer_kind(const std::string& name);  // nullptr when unknown

struct TokenizerSource {
  const TokenizerKind* kind;
  std::vector<std::string> files;
};

// A tokenizer named by one path (--tokenizer, or found beside a checkpoint): a GPT-2 vocabulary
// (a file named *vocab.json, with *merges.txt beside it), a SentencePiece model (any other file),
// or a directory holding one kind's files under their artifact names (tokenizer.model, or
// vocab.json with merges.txt); a directory holding several kinds, or none, is refused naming them.
TokenizerSource locate_tokenizer(const std::string& path);
std::unique_ptr<Tokenizer> open_tokenizer(const std::string& path);
// A tokenizer stored in an artifact: the kind's name and its files in the kind's order. An
// unknown kind or a wrong number of files is an Error naming `where` (the manifest).
std::unique_ptr<Tokenizer> open_tokenizer(const std::string& kind, const std::vector<std::string>& files,
                                          const std::string& where);

}  // namespace sf
