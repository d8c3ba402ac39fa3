#include "executor/unit_stream.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>

#include "executor/exec_model.h"

namespace sf {

namespace {

uintptr_t page_size() {
  static const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  return page;
}

// The tensors' byte ranges sorted and merged, so a fused tensor's row views are one range.
std::vector<std::pair<const uint8_t*, size_t>> merged(std::vector<const TensorView*> views) {
  std::vector<std::pair<const uint8_t*, size_t>> out;
  std::sort(views.begin(), views.end(), [](auto* a, auto* b) { return a->data < b->data; });
  for (const TensorView* v : views) {
    if (!out.empty() && v->data <= out.back().first + out.back().second) {
      out.back().second = std::max(out.back().second, size_t(v->data + v->nbytes - out.back().first));
      continue;
    }
    out.emplace_back(v->data, v->nbytes);
  }
  return out;
}

// Only the whole pages inside the range: a page shared with a neighbouring unit stays.
void release(const uint8_t* p, size_t n) {
  const uintptr_t a = (uintptr_t(p) + page_size() - 1) & ~(page_size() - 1);
  const uintptr_t b = (uintptr_t(p) + n) & ~(page_size() - 1);
  if (b > a) ::madvise(reinterpret_cast<void*>(a), b - a, MADV_DONTNEED);
}

// Every page the range touches, read on this thread.
void bring_in(const uint8_t* p, size_t n) {
  const uintptr_t a = uintptr_t(p) & ~(page_size() - 1);
  ::madvise(reinterpret_cast<void*>(a), uintptr_t(p) + n - a, MADV_WILLNEED);
  volatile uint8_t sink = 0;
  for (size_t off = 0; off < n; off += page_size()) sink = sink + p[off];
  if (n) sink = sink + p[n - 1];
}

}  // namespace

UnitStream::UnitStream(const ExecModel& model, int64_t resident) {
  const ModelDesc& d = model.desc();
  for (int64_t l = 0; l < d.n_layers; ++l) {
    std::vector<const TensorView*> views;
    const LayerWeights& w = model.layer(l);
    for (const TensorView* t : {w.attn_norm, w.attn_norm_b, w.q, w.q_b, w.k, w.k_b, w.v, w.v_b, w.o, w.o_b,
                                w.ffn_norm, w.ffn_norm_b, w.gate, w.gate_b, w.up, w.up_b, w.down, w.down_b})
      if (t) views.push_back(t);
    ranges_.push_back(merged(views));
  }
  std::vector<const TensorView*> head = {&model.head_norm(), &model.output()};
  if (model.head_norm_bias()) head.push_back(model.head_norm_bias());
  ranges_.push_back(merged(head));
  pinned_ = std::max<int64_t>(0, resident - 1);
  worker_ = std::thread([this] { prefetch_loop(); });
}

UnitStream::~UnitStream() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

uint64_t UnitStream::unit_bytes(int64_t unit) const {
  uint64_t n = 0;
  for (const auto& r : ranges_[size_t(unit)]) n += r.second;
  return n;
}

int64_t UnitStream::next_streamed(int64_t unit) const {
  const int64_t n = units();
  for (int64_t i = 1; i <= n; ++i)
    if (!pinned((unit + i) % n)) return (unit + i) % n;
  return -1;
}

void UnitStream::enter(int64_t unit) {
  std::unique_lock<std::mutex> lock(mu_);
  // Wait for this unit's prefetch, unless another caller has asked the prefetch thread for
  // something else meanwhile (sessions of one model on several threads): then just compute.
  if (want_ == unit) cv_.wait(lock, [&] { return done_ == unit || want_ != unit; });
  want_ = next_streamed(unit);
  lock.unlock();
  cv_.notify_all();
}

void UnitStream::leave(int64_t unit) {
  if (pinned(unit)) return;
  for (const auto& [p, n] : ranges_[size_t(unit)]) release(p, n);
  // The next pass prefetches it again.
  std::lock_guard<std::mutex> lock(mu_);
  if (done_ == unit) done_ = -1;
}

void UnitStream::prefetch_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || (want_ >= 0 && want_ != done_); });
    if (stop_) return;
    const int64_t unit = want_;
    lock.unlock();
    for (const auto& [p, n] : ranges_[size_t(unit)]) bring_in(p, n);
    lock.lock();
    done_ = unit;
    cv_.notify_all();
  }
}

}  // namespace sf
