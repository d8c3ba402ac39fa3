#pragma once
// The reference model's logits at every scored position, kept on disk so `compare` runs the
// reference once and measures every scheme against the file instead of re-running it per scheme.
// Stored as the f32 logits themselves (not log-probabilities) so the KL-divergence computed from
// the file is bit-identical to `eval kld` running both models.
#include <cstddef>
#include <string>

namespace sf {

class ReferenceLogits {
 public:
  // Creates the file in `dir` and unlinks it at once: it lives only as long as this object, and a
  // killed process leaves nothing behind.
  ReferenceLogits(const std::string& dir, size_t positions, size_t vocab);
  ~ReferenceLogits();
  ReferenceLogits(const ReferenceLogits&) = delete;
  ReferenceLogits& operator=(const ReferenceLogits&) = delete;

  // By slot (validators/windows.h), with pwrite / pread: safe from several threads at once.
  void write(size_t slot, const float* logits) const;
  void read(size_t slot, float* dst) const;
  size_t positions() const { return positions_; }
  size_t vocab() const { return vocab_; }

 private:
  int fd_ = -1;
  size_t positions_, vocab_;
  std::string where_;
};

}  // namespace sf
