#include "core/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace sf {

namespace {
constexpr auto kRedrawEvery = std::chrono::milliseconds(100);
}

Progress::Progress(std::string label, size_t total)
    : label_(std::move(label)), total_(total), enabled_(::isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()) {
  if (enabled_) draw();
}

Progress::~Progress() {
  if (!enabled_) return;
  draw();  // the final count, even when the last steps fell inside the throttle interval
  std::fputs("\n", stderr);
}

void Progress::step(const std::string& item) {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(mu_);
  ++done_;
  item_ = item;
  if (done_ == total_ || std::chrono::steady_clock::now() - last_draw_ >= kRedrawEvery) draw();
}

void Progress::draw() {
  constexpr int kWidth = 30;
  const size_t done = std::min(done_, total_);
  const int filled = total_ ? int(kWidth * done / total_) : kWidth;
  last_draw_ = std::chrono::steady_clock::now();
  const double secs = std::chrono::duration<double>(last_draw_ - start_).count();
  std::string bar(size_t(filled), '#');
  bar.resize(kWidth, ' ');
  std::fprintf(stderr, "\r%s [%s] %zu/%zu %-16s %.1fs", label_.c_str(), bar.c_str(), done, total_, item_.c_str(),
               secs);
  std::fflush(stderr);
}

}  // namespace sf
