#include "formats/vocab_map.h"

#include "core/error.h"

namespace sf {

VocabMap VocabMap::from_keep(const std::vector<bool>& keep) {
  if (int64_t(keep.size()) > kMaxMappedVocab)
    fail("vocabulary trim: " + std::to_string(keep.size()) + " ids is more than a vocabulary map holds");
  VocabMap m;
  m.new_of_old_.assign(keep.size(), -1);
  for (size_t old = 0; old < keep.size(); ++old)
    if (keep[old]) {
      m.new_of_old_[old] = int32_t(m.old_of_new_.size());
      m.old_of_new_.push_back(int32_t(old));
    }
  return m;
}

VocabMap VocabMap::parse(const std::string& bytes, int64_t old_size, int64_t kept, const std::string& where) {
  if (old_size < 1 || old_size > kMaxMappedVocab || kept < 1 || kept > old_size)
    fail_file(where, "vocabulary map of " + std::to_string(kept) + " kept ids out of " + std::to_string(old_size) +
                         " is impossible");
  if (uint64_t(bytes.size()) != uint64_t(old_size) * 4)
    fail_file(where, "is " + std::to_string(bytes.size()) + " bytes; a map of " + std::to_string(old_size) +
                         " ids is " + std::to_string(uint64_t(old_size) * 4));
  VocabMap m;
  m.new_of_old_.resize(size_t(old_size));
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  for (int64_t old = 0; old < old_size; ++old, p += 4) {
    const uint32_t u = uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
    const int32_t v = int32_t(u);
    // Each kept id takes the next new id: the map is increasing and onto [0, kept), never a permutation.
    if (v != -1 && int64_t(v) != int64_t(m.old_of_new_.size()))
      fail_file(where, "old id " + std::to_string(old) + " maps to " + std::to_string(v) + ", expected -1 or " +
                           std::to_string(m.old_of_new_.size()) + " (kept ids are numbered in order)");
    m.new_of_old_[size_t(old)] = v;
    if (v != -1) m.old_of_new_.push_back(int32_t(old));
  }
  if (m.kept() != kept)
    fail_file(where, "keeps " + std::to_string(m.kept()) + " ids; the manifest says " + std::to_string(kept));
  return m;
}

std::string VocabMap::bytes() const {
  std::string out(new_of_old_.size() * 4, '\0');
  for (size_t i = 0; i < new_of_old_.size(); ++i) {
    const uint32_t u = uint32_t(new_of_old_[i]);
    for (int b = 0; b < 4; ++b) out[i * 4 + size_t(b)] = char((u >> (8 * b)) & 0xff);
  }
  return out;
}

int32_t VocabMap::new_id(int64_t old_id) const {
  return old_id >= 0 && old_id < old_size() ? new_of_old_[size_t(old_id)] : -1;
}

int32_t VocabMap::old_id(int64_t new_id) const {
  if (new_id < 0 || new_id >= kept()) fail("token id " + std::to_string(new_id) + " is outside the trimmed vocabulary");
  return old_of_new_[size_t(new_id)];
}

std::vector<std::pair<int64_t, int64_t>> VocabMap::kept_ranges() const {
  std::vector<std::pair<int64_t, int64_t>> r;
  for (int32_t old : old_of_new_) {
    if (!r.empty() && r.back().second + 1 == old) r.back().second = old;
    else r.emplace_back(old, old);
  }
  return r;
}

std::string describe_ranges(const std::vector<std::pair<int64_t, int64_t>>& ranges, size_t max_ranges) {
  std::string s;
  for (size_t i = 0; i < ranges.size() && i < max_ranges; ++i) {
    if (i) s += ", ";
    s += std::to_string(ranges[i].first);
    if (ranges[i].second != ranges[i].first) {
      s += '-';
      s += std::to_string(ranges[i].second);
    }
  }
  if (ranges.size() > max_ranges) s += ", ... (" + std::to_string(ranges.size() - max_ranges) + " more ranges)";
  return s;
}

}  // namespace sf
