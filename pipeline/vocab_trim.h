#pragma once
// convert --trim-vocab SPEC (docs/cli.md): which ids of the source vocabulary an artifact keeps.
//   range:A-B[,C-D...]   the ids in the ranges ("A-" runs to the end, "A" is one id)
//   corpus:FILE[:MIN]    the ids the tokenizer gives FILE at least MIN times (default 1), plus the
//                        tokenizer's reserved ids (special and byte-fallback pieces)
//   ids:FILE             the ids FILE lists (decimal, separated by spaces, commas or newlines)
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace sf {

class Tokenizer;

struct TrimSpec {
  enum class Kind { Range, Corpus, Ids };
  Kind kind = Kind::Range;
  std::vector<std::pair<int64_t, int64_t>> ranges;  // Range: inclusive; second = -1 for an open end
  std::string file;                                 // Corpus, Ids
  int64_t min_count = 1;                            // Corpus
};

// The spec's syntax (usage errors naming the spec); files are not opened and ids not checked
// against a vocabulary here.
TrimSpec parse_trim_spec(const std::string& spec);

// The spec with its file named by its base name only: what the manifest records (no paths), next
// to the file's sha256.
std::string recorded_trim_spec(const std::string& spec, const TrimSpec& parsed);

// keep[id] for a source vocabulary of `vocab` ids. `tokenizer` (old ids) is needed by corpus mode
// and may be null otherwise. Ids outside the vocabulary, a missing or unreadable file, a corpus that
// is not UTF-8 text and a result keeping nothing are refused: usage errors for the spec, one-line
// errors naming the file for its content.
std::vector<bool> trim_keep_set(const TrimSpec& spec, int64_t vocab, const Tokenizer* tokenizer);

}  // namespace sf
