#include "core/progress.h"

#include <unistd.h>

#include <cstdio>

namespace sf {

Progress::Progress(std::string label, size_t total)
    : label_(std::move(label)), total_(total), enabled_(::isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()) {
  if (enabled_) draw();
}

Progress::~Progress() {
  if (enabled_) std::fputs("\n", stderr);
}

void Progress::step(const std::string& item) {
  ++done_;
  item_ = item;
  if (enabled_) draw();
}

void Progress::draw() {
  constexpr int kWidth = 30;
  const int filled = total_ ? int(kWidth * done_ / total_) : kWidth;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::string bar(size_t(filled), '#');
  bar.resize(kWidth, ' ');
  std::fprintf(stderr, "\r%s [%s] %zu/%zu %-16s %.1fs", label_.c_str(), bar.c_str(), done_, total_,
               item_.c_str(), secs);
  std::fflush(stderr);
}

}  // namespace sf
