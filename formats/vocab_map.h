#pragma once
// vocab_map.bin (docs/format.md): which rows of the source vocabulary a trimmed artifact kept, and
// under which ids. Old ids are the tokenizer's (the source's); new ids index the artifact's rows.
// The map is increasing: kept old ids keep their order, so new id n is the n-th kept old id.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace sf {

inline constexpr const char* kVocabMapName = "vocab_map.bin";
// Ids are int32 on disk and in every tokenizer: a vocabulary larger than this cannot be mapped.
inline constexpr int64_t kMaxMappedVocab = int64_t(INT32_MAX);

class VocabMap {
 public:
  VocabMap() = default;
  // keep[old] says whether old id `old` is kept; new ids are given in increasing old order.
  static VocabMap from_keep(const std::vector<bool>& keep);
  // Reads the file's bytes: exactly old_size little-endian int32 values, each -1 (dropped) or the
  // next new id (0, 1, 2, ... in order), `kept` of them in all. Throws Error naming `where` otherwise.
  static VocabMap parse(const std::string& bytes, int64_t old_size, int64_t kept, const std::string& where);

  std::string bytes() const;  // the file's content
  int64_t old_size() const { return int64_t(new_of_old_.size()); }
  int64_t kept() const { return int64_t(old_of_new_.size()); }
  // -1 when `old_id` was dropped or lies outside the source vocabulary.
  int32_t new_id(int64_t old_id) const;
  int32_t old_id(int64_t new_id) const;  // new_id must be in [0, kept)
  bool keeps(int64_t old_id) const { return new_id(old_id) >= 0; }
  // The kept old ids as inclusive ranges [first, last], in order: a summary for people.
  std::vector<std::pair<int64_t, int64_t>> kept_ranges() const;
  bool operator==(const VocabMap&) const = default;

 private:
  std::vector<int32_t> new_of_old_, old_of_new_;
};

// "0-9, 20-310" (at most `max_ranges` shown, then ", … (N more ranges)").
std::string describe_ranges(const std::vector<std::pair<int64_t, int64_t>>& ranges, size_t max_ranges = 8);

}  // namespace sf
