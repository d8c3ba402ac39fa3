#include <gtest/gtest.h>

#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"

namespace sf {
namespace {

TEST(ThreadPool, CoversEveryIndexExactlyOnce) {
  for (size_t threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    for (size_t n : {0, 1, 2, 5, 1000}) {
      std::vector<std::atomic<int>> hits(n);
      for (int rep = 0; rep < 3; ++rep)
        pool.parallel_for(n, [&](size_t b, size_t e) {
          for (size_t i = b; i < e; ++i) hits[i]++;
        });
      for (size_t i = 0; i < n; ++i) EXPECT_EQ(hits[i].load(), 3) << "threads=" << threads << " n=" << n;
    }
  }
}

TEST(ThreadPool, RethrowsTheLowestFailingChunkAfterEveryChunkEnds) {
  for (size_t threads : {1, 2, 4}) {
    ThreadPool pool(threads);
    std::vector<std::atomic<int>> hits(100);
    try {
      pool.parallel_for(100, [&](size_t b, size_t e) {
        for (size_t i = b; i < e; ++i) hits[i]++;
        if (e > 50) throw std::runtime_error("chunk ending at " + std::to_string(e));
      });
      ADD_FAILURE() << "no exception, threads=" << threads;
    } catch (const std::runtime_error& err) {
      // The first chunk (in index order) whose end passes 50 - not whichever thread lost the race.
      const size_t parts = threads;
      size_t expected_end = 0;
      for (size_t i = 0; i < parts && !expected_end; ++i)
        if (100 * (i + 1) / parts > 50) expected_end = 100 * (i + 1) / parts;
      EXPECT_EQ(std::string(err.what()), "chunk ending at " + std::to_string(expected_end)) << "threads=" << threads;
    }
    for (size_t i = 0; i < 100; ++i) EXPECT_EQ(hits[i].load(), 1) << "every chunk ran to its end, threads=" << threads;
    // The pool is still usable after a failed job.
    std::atomic<int> n{0};
    pool.parallel_for(10, [&](size_t b, size_t e) { n += int(e - b); });
    EXPECT_EQ(n.load(), 10);
  }
}

// A decode step is ~100 tiny jobs back to back: every one must still see every index exactly once
// and its own function (the workers spin between jobs, so a stale job or a missed generation would
// show here), including after pauses long enough for the workers to fall asleep.
TEST(ThreadPool, ManySmallJobsInARow) {
  for (size_t threads : {2, 3}) {
    ThreadPool pool(threads);
    std::vector<int> hits(37, 0);  // each index written by one chunk only: no atomics needed
    for (int job = 0; job < 20000; ++job) {
      const size_t n = 1 + size_t(job) % 37;
      pool.parallel_for(n, [&, job](size_t b, size_t e) {
        for (size_t i = b; i < e; ++i) hits[i] += job;
      });
      if (job % 5000 == 4999) std::this_thread::sleep_for(std::chrono::milliseconds(5));  // workers sleep
    }
    for (size_t i = 0; i < hits.size(); ++i) {
      long expected = 0;
      for (int job = 0; job < 20000; ++job)
        if (i < 1 + size_t(job) % 37) expected += job;
      EXPECT_EQ(hits[i], expected) << "index " << i << ", threads=" << threads;
    }
  }
}

// After the spin window the workers sleep: an idle pool must not burn CPU.
TEST(ThreadPool, IdlePoolUsesNoCpu) {
  ThreadPool pool(3);
  std::atomic<int> n{0};
  pool.parallel_for(3, [&](size_t b, size_t e) { n += int(e - b); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // past the spin window
  struct rusage before {}, after {};
  ::getrusage(RUSAGE_SELF, &before);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ::getrusage(RUSAGE_SELF, &after);
  auto us = [](const struct rusage& r) {
    return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1000000L + r.ru_utime.tv_usec + r.ru_stime.tv_usec;
  };
  EXPECT_LT(us(after) - us(before), 30000) << "CPU microseconds used by an idle pool in 300 ms";
  EXPECT_EQ(n.load(), 3);
}

// When the system refuses a thread the constructor must throw an Error, not hang with the started
// workers waiting on a destroyed condition variable. Run in a child process with a small address
// space (each thread stack needs 8 MiB of it) and an alarm, so a hang fails instead of blocking.
TEST(ThreadPool, FailedStartThrowsAndNeverHangs) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer cannot run under an address-space limit";
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  GTEST_SKIP() << "AddressSanitizer cannot run under an address-space limit";
#endif
#endif
  EXPECT_EXIT(
      {
        ::alarm(20);
        struct rlimit lim {};
        lim.rlim_cur = lim.rlim_max = rlim_t(512) << 20;
        ::setrlimit(RLIMIT_AS, &lim);
        try {
          ThreadPool pool(4096);
        } catch (const Error& e) {
          const std::string msg = e.what();
          ::_exit(msg.find("cannot start 4096 threads") != std::string::npos ? 0 : 3);
        }
        ::_exit(4);  // all 4096 threads started: the limit did not bite
      },
      ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace sf
