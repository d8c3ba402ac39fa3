#pragma once
// convert --trim-vocab SPEC (docs/cli.md): which ids of the source vocabulary an artifact keeps.
//   range:A-B[,C-D...]   the ids in the ranges ("A-" runs to the end, "A" is one id), in increasing
//                        order without overlapping
//   corpus:FILE[:MIN]    the ids the tokenizer gives FILE at least MIN times (default 1), plus every
//                        id no corpus can count: the tokenizer's reserved ids (special and byte
//                        pieces), the model's special ids and ids past the tokenizer's pieces
//   ids:FILE             the ids FILE lists (decimal, separated by spaces, commas or newlines)
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/model_desc.h"

namespace sf {

class Tokenizer;

// More ranges than this is not a vocabulary anyone means to keep (and each costs manifest bytes).
inline constexpr size_t kMaxTrimRanges = 65536;
// Corpus mode tokenizes the corpus a chunk at a time (cut at a line end), so memory does not grow
// with the corpus: SentencePiece takes about 120 bytes per byte of text it encodes at once.
inline constexpr size_t kCorpusChunkBytes = size_t(1) << 20;

struct TrimSpec {
  enum class Kind { Range, Corpus, Ids };
  Kind kind = Kind::Range;
  std::vector<std::pair<int64_t, int64_t>> ranges;  // Range: inclusive; second = -1 for an open end
  std::string file;                                 // Corpus, Ids
  int64_t min_count = 1;                            // Corpus
};

// The ids an ids file lists, in order (decimal, separated by spaces, commas or newlines); one-line
// errors naming `file` for anything else, an id outside 0 .. vocab-1, or no id at all.
std::vector<int64_t> parse_id_list(const std::string& file, const std::string& text, int64_t vocab);
// An ids file's size limit (a few MiB even for the largest vocabularies).
inline constexpr uint64_t kMaxIdsFileBytes = uint64_t(64) << 20;

// The spec's syntax (usage errors naming the spec); files are not opened and ids not checked
// against a vocabulary here.
TrimSpec parse_trim_spec(const std::string& spec);

// The spec with its file named by its base name only: what the manifest records (no paths), next
// to the file's sha256.
std::string recorded_trim_spec(const std::string& spec, const TrimSpec& parsed);

// The spec's file, read once (a regular file of at most 64 MiB; errors name it): the caller hashes
// these bytes and passes them to trim_keep_set, so the recorded sha256 is that of what was parsed.
// Empty for a range spec.
std::string read_trim_file(const TrimSpec& spec);

// keep[id] for the source vocabulary of `desc` (desc.vocab_size ids). `file_bytes` is
// read_trim_file's result; `tokenizer` (old ids) is needed by corpus mode and may be null
// otherwise. Ids outside the vocabulary, a corpus that is not UTF-8 text or holds no text, and a
// result keeping nothing are refused: usage errors for the spec, one-line errors naming the file
// for its content.
std::vector<bool> trim_keep_set(const TrimSpec& spec, const std::string& file_bytes, const ModelDesc& desc,
                                const Tokenizer* tokenizer);

// Where corpus mode's chunk of `text` (valid UTF-8) starting at `begin` ends: after the last line
// end within kCorpusChunkBytes; in a longer line, before its last space; else at a character
// boundary. text.size() when the rest fits.
size_t corpus_chunk_end(const std::string& text, size_t begin);
// Valid UTF-8 without NUL bytes: what a text corpus (or calibration text) is.
bool is_text(const std::string& s);

// The model's own special ids (ChatGLM-6B's [MASK], [gMASK], <sop>) with their names, -1 entries
// left out: corpus mode keeps them, the other specs must.
std::vector<std::pair<int64_t, const char*>> model_special_ids(const SpecialTokens& special);

}  // namespace sf
