#include "core/interrupt.h"

#include <atomic>
#include <csignal>
#include <string>

#include "core/error.h"

namespace sf {

namespace {
volatile std::sig_atomic_t g_signal = 0;
std::atomic<int> g_depth{0};  // guards alive; only changed on the thread that runs the job
struct sigaction g_old_int, g_old_term;
extern "C" void on_signal(int sig) { g_signal = sig; }
}  // namespace

InterruptGuard::InterruptGuard() {
  if (g_depth++ > 0) return;
  g_signal = 0;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, &g_old_int);
  ::sigaction(SIGTERM, &sa, &g_old_term);
}

InterruptGuard::~InterruptGuard() {
  if (--g_depth > 0) return;
  ::sigaction(SIGINT, &g_old_int, nullptr);
  ::sigaction(SIGTERM, &g_old_term, nullptr);
}

void InterruptGuard::check() const { check_interrupt(); }

void check_interrupt() {
  if (g_depth > 0 && g_signal)
    fail("interrupted by signal " + std::to_string(int(g_signal)) + "; partial output removed");
}

}  // namespace sf
