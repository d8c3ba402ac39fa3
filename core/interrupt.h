#pragma once
// SIGINT / SIGTERM during a long job: the handler only records the signal; the job checks between
// units and unwinds with an Error, so temporary output is removed by the destructors that own it.
namespace sf {

class InterruptGuard {
 public:
  InterruptGuard();   // installs the handlers
  ~InterruptGuard();  // restores the previous ones
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;
  // Throws Error("interrupted by signal N") if a signal arrived since construction.
  void check() const;
};

}  // namespace sf
