#pragma once
// A fixed pool of workers running static partitions of an index range. Work is split into
// contiguous chunks by index only, so results never depend on the thread count.
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace sf {

class ThreadPool {
 public:
  explicit ThreadPool(size_t threads);  // 0 = hardware concurrency
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  size_t size() const { return workers_.size() + 1; }
  // Calls fn(begin, end) over [0, n) in up to size() chunks; the caller's thread takes one.
  void parallel_for(size_t n, const std::function<void(size_t, size_t)>& fn);

 private:
  void worker_loop(size_t id);
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  const std::function<void(size_t, size_t)>* job_ = nullptr;
  size_t job_n_ = 0, generation_ = 0, pending_ = 0;
  bool stop_ = false;
};

size_t default_thread_count();

}  // namespace sf
