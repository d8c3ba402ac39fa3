#pragma once
// A one-line progress bar on stderr, drawn only when stderr is a terminal.
#include <chrono>
#include <cstddef>
#include <string>

namespace sf {

class Progress {
 public:
  Progress(std::string label, size_t total);
  ~Progress();
  void step(const std::string& item);

 private:
  void draw();
  std::string label_, item_;
  size_t total_, done_ = 0;
  bool enabled_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace sf
