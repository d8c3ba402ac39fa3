#pragma once
// A one-line progress bar on stderr, drawn only when stderr is a terminal. step() may be called
// from any thread (evaluation windows finish on the pool's workers); drawing is throttled so a
// bar stepped per token costs nothing measurable.
#include <chrono>
#include <cstddef>
#include <mutex>
#include <string>

namespace sf {

class Progress {
 public:
  Progress(std::string label, size_t total);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  void step(const std::string& item = "");
  bool enabled() const { return enabled_; }

 private:
  void draw();
  std::mutex mu_;
  std::string label_, item_;
  size_t total_, done_ = 0;
  bool enabled_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace sf
