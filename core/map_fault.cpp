#include "core/map_fault.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>

namespace sf {

namespace {

struct Slot {
  std::atomic<bool> taken{false};
  std::atomic<uintptr_t> begin{0};  // published last: a handler seeing it non-zero sees the rest
  size_t length = 0;
  char path[480] = {};
};
constexpr size_t kSlots = 4096;  // every shard of a 1000-block model, several artifacts at once
Slot g_slots[kSlots];

void say(const char* s) {
  for (size_t n = std::strlen(s); n > 0;) {
    const ssize_t w = ::write(STDERR_FILENO, s, n);
    if (w <= 0) return;
    s += w;
    n -= size_t(w);
  }
}

extern "C" void on_sigbus(int sig, siginfo_t* info, void*) {
  const uintptr_t addr = uintptr_t(info->si_addr);
  for (auto& s : g_slots) {
    const uintptr_t b = s.begin.load(std::memory_order_acquire);
    if (b && addr >= b && addr - b < s.length) {
      say("\nshardforge: error: ");
      say(s.path);
      say(": file was truncated or replaced while it was being read\n");
      ::_exit(1);
    }
  }
  // Not one of our maps: a genuine bug. Die as the signal would have.
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

void install_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGBUS, &sa, nullptr);
  });
}

}  // namespace

int register_map(const void* begin, size_t length, const std::string& path) {
  install_once();
  for (size_t i = 0; i < kSlots; ++i) {
    bool expected = false;
    if (!g_slots[i].taken.compare_exchange_strong(expected, true)) continue;
    Slot& s = g_slots[i];
    s.length = length;
    // Control characters would let a file name forge a second line: keep the message one line.
    size_t n = 0;
    for (char c : path) {
      if (n + 1 >= sizeof s.path) break;
      s.path[n++] = (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
    }
    s.path[n] = '\0';
    s.begin.store(uintptr_t(begin), std::memory_order_release);
    return int(i);
  }
  return -1;
}

void unregister_map(int slot) {
  if (slot < 0) return;
  Slot& s = g_slots[size_t(slot)];
  s.begin.store(0, std::memory_order_release);
  s.taken.store(false, std::memory_order_release);
}

}  // namespace sf
