#pragma once
// A fixed pool of workers running static partitions of an index range. Work is split into
// contiguous chunks by index only, so results never depend on the thread count.
//
// Low latency: a decode step runs ~100 jobs of ~0.1 ms each, and a condition-variable wake-up
// costs about as much as the job. So workers first spin (yielding the core each turn) on an atomic
// job generation for a bounded time (kSpin) after their last job, and the caller spins on an atomic
// count of pending chunks; only past that window do they sleep on the condition variables, so an
// idle pool uses no CPU.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace sf {

class ThreadPool {
 public:
  // 0 = hardware concurrency. When the system refuses a thread, the workers already started are
  // stopped and joined and an Error ("cannot start N threads: ...") is thrown: never a hang.
  explicit ThreadPool(size_t threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  size_t size() const { return workers_.size() + 1; }
  // Calls fn(begin, end) over [0, n) in up to size() chunks; the caller's thread takes one. When
  // chunks throw, every chunk still ends first, then the exception of the lowest-numbered failing
  // chunk is rethrown here (the same one whatever the timing).
  void parallel_for(size_t n, const std::function<void(size_t, size_t)>& fn);

 private:
  void worker_loop(size_t id);
  void stop_and_join();
  void run_chunk(size_t id, size_t n, const std::function<void(size_t, size_t)>& fn, size_t parts);
  // How long a thread spins before sleeping: above the serial gaps between a decode step's
  // parallel sections (norms, rope: a few microseconds), so back-to-back jobs pay no wake-up; far
  // below anything that shows as CPU use of an idle pool.
  static constexpr std::chrono::microseconds kSpin{50};
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  // Written by the caller before it publishes a new generation_ (release); read after (acquire).
  const std::function<void(size_t, size_t)>* job_ = nullptr;
  size_t job_n_ = 0, job_parts_ = 0;
  std::atomic<size_t> generation_{0}, pending_{0};
  // Threads sleeping (or about to) on start_cv_ / done_cv_: the other side takes the mutex and
  // notifies only when one is, so the spinning fast path never touches the mutex.
  std::atomic<size_t> sleeping_workers_{0};
  std::atomic<bool> caller_sleeping_{false};
  std::atomic<bool> stop_{false};
  std::exception_ptr error_;  // of the lowest failing chunk in the current job
  size_t error_chunk_ = 0;
};

size_t default_thread_count();

}  // namespace sf
