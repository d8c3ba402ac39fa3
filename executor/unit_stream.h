#pragma once
// Low-memory execution (--resident-blocks N): the weights of at most N blocks stay in the
// process's memory; the others are read from the artifact's file maps when a forward pass reaches
// them and released when it leaves them, while a background thread brings the next unit in (the
// prefetch overlaps the current unit's compute). The head (and a tied head's embedding) is
// streamed the same way; the embedding is otherwise read a row at a time.
//
// How: every tensor of a mapped artifact is a view into a read-only file map. Releasing a unit is
// madvise(MADV_DONTNEED) over the whole pages inside its tensors (the pages leave the process;
// the kernel's page cache may keep them, reclaimably), prefetching is MADV_WILLNEED plus a read of
// one byte per page on the prefetch thread, so the page faults are taken there rather than by the
// compute. The bytes read are the file's either way: outputs are identical to full residency.
// Several sessions of one model may call it from several threads (each unit is then released by
// whichever leaves it, and read in again by the next that needs it): always correct, but the
// memory bound holds for one thread, so evaluators run a streamed model's windows one at a time.
// Every artifact reader hands out views into read-only file maps (formats/artifact.h), so every
// artifact streams; memory a reader filled itself would be zeroed by MADV_DONTNEED.
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace sf {

class ExecModel;

class UnitStream {
 public:
  // Units 0 .. n_layers-1 are the blocks, n_layers the head. Blocks [0, resident - 1) stay in
  // memory once read; the others take turns in the remaining place.
  UnitStream(const ExecModel& model, int64_t resident);
  ~UnitStream();
  UnitStream(const UnitStream&) = delete;
  UnitStream& operator=(const UnitStream&) = delete;

  // Around the compute of unit u: enter waits for u's prefetch and starts the next streamed
  // unit's; leave releases u unless it stays resident.
  void enter(int64_t unit);
  void leave(int64_t unit);
  int64_t units() const { return int64_t(ranges_.size()); }
  uint64_t unit_bytes(int64_t unit) const;

 private:
  using Range = std::pair<const uint8_t*, size_t>;
  bool pinned(int64_t unit) const { return unit < pinned_; }
  int64_t next_streamed(int64_t unit) const;
  void prefetch_loop();
  std::vector<std::vector<Range>> ranges_;  // per unit: its tensors' byte ranges, merged
  int64_t pinned_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t want_ = -1, done_ = -1;  // unit asked of the prefetch thread, and the last it finished
  bool stop_ = false;
  std::thread worker_;
};

}  // namespace sf
