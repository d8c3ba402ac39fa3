#include "core/thread_pool.h"

#include <algorithm>
#include <string>
#include <system_error>
#include <utility>

#include "core/error.h"

namespace sf {

size_t default_thread_count() { return std::max(1u, std::thread::hardware_concurrency()); }

ThreadPool::ThreadPool(size_t threads) {
  if (threads == 0) threads = default_thread_count();
  try {
    workers_.reserve(threads - 1);
    for (size_t i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
  } catch (const std::exception& e) {
    // The started workers wait on start_cv_: wake and join them before this object unwinds,
    // or they would wait forever on a condition variable that no longer exists.
    stop_and_join();
    fail("cannot start " + std::to_string(threads) + " threads: " + e.what());
  }
}

ThreadPool::~ThreadPool() { stop_and_join(); }

void ThreadPool::stop_and_join() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (auto& t : workers_)
    if (t.joinable()) t.join();
}

static void chunk(size_t n, size_t parts, size_t i, size_t& b, size_t& e) {
  b = n * i / parts;
  e = n * (i + 1) / parts;
}

void ThreadPool::run_chunk(size_t id, size_t n, const std::function<void(size_t, size_t)>& fn, size_t parts) {
  size_t b, e;
  chunk(n, parts, id, b, e);
  if (b >= e) return;
  try {
    fn(b, e);
  } catch (...) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!error_ || id < error_chunk_) {
      error_ = std::current_exception();
      error_chunk_ = id;
    }
  }
}

void ThreadPool::parallel_for(size_t n, const std::function<void(size_t, size_t)>& fn) {
  if (n == 0) return;
  const size_t parts = std::min(size(), n);
  if (parts == 1) {
    fn(0, n);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = &fn;
    job_n_ = n;
    job_parts_ = size();
    pending_ = workers_.size();
    error_ = nullptr;
    ++generation_;
  }
  start_cv_.notify_all();
  run_chunk(0, n, fn, size());
  std::exception_ptr error;
  {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [this] { return pending_ == 0; });
    job_ = nullptr;
    error = std::exchange(error_, nullptr);
  }
  if (error) std::rethrow_exception(error);
}

void ThreadPool::worker_loop(size_t id) {
  size_t seen = 0;
  for (;;) {
    const std::function<void(size_t, size_t)>* job;
    size_t n, parts;
    {
      std::unique_lock<std::mutex> lock(mu_);
      start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      job = job_;
      n = job_n_;
      parts = job_parts_;
    }
    run_chunk(id, n, *job, parts);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }
}

}  // namespace sf
