#pragma once
// SIGINT / SIGTERM during a long job: the handler only records the signal; the job checks between
// units (or windows, from any thread) and unwinds with an Error, so temporary output is removed by
// the destructors that own it.
namespace sf {

class InterruptGuard {
 public:
  // Guards nest: the outermost one installs the handlers and clears any earlier signal, inner ones
  // (convert inside compare) only share it, so a signal seen by the inner job is not forgotten.
  InterruptGuard();
  ~InterruptGuard();  // the outermost restores the previous handlers
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;
  // Throws Error("interrupted by signal N") if a signal arrived since the outermost guard began.
  void check() const;
};

// The same check for code that holds no guard (evaluation loops on worker threads): throws only
// while some guard is active and a signal arrived; otherwise does nothing.
void check_interrupt();

}  // namespace sf
