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
    stop_.store(true);
  }
  start_cv_.notify_all();
  for (auto& t : workers_)
    if (t.joinable()) t.join();
}

static void chunk(size_t n, size_t parts, size_t i, size_t& b, size_t& e) {
  b = n * i / parts;
  e = n * (i + 1) / parts;
}

// Spins until done() or until `limit` has passed; true when done() became true. Each turn yields
// the core (sched_yield) instead of a pause instruction: on this machine (a VM, 2 shared cores) a
// pause loop made a tiny job ~100 us (pause-loop exits to the hypervisor, and the spinner keeping
// the awaited thread off the core), a yield loop ~2 us and the condition variable ~5 us.
template <class Done>
static bool spin_until(const Done& done, std::chrono::microseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    for (int i = 0; i < 8; ++i) {
      if (done()) return true;
      std::this_thread::yield();
    }
    if (std::chrono::steady_clock::now() >= deadline) return done();
  }
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
  job_ = &fn;
  job_n_ = n;
  job_parts_ = size();
  error_ = nullptr;  // no worker touches it between jobs
  pending_.store(workers_.size());
  // seq_cst store, then load of sleeping_workers_: pairs with the worker's seq_cst increment then
  // load of generation_, so either the worker sees the new generation or we see it sleeping.
  generation_.fetch_add(1);
  if (sleeping_workers_.load() > 0) {
    std::lock_guard<std::mutex> lock(mu_);  // a sleeper checks its predicate under the mutex
    start_cv_.notify_all();
  }
  run_chunk(0, n, fn, size());
  auto all_done = [this] { return pending_.load() == 0; };
  if (!spin_until(all_done, kSpin)) {
    caller_sleeping_.store(true);
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, all_done);
    caller_sleeping_.store(false);
  }
  job_ = nullptr;
  std::exception_ptr error = std::exchange(error_, nullptr);
  if (error) std::rethrow_exception(error);
}

void ThreadPool::worker_loop(size_t id) {
  size_t seen = 0;
  for (;;) {
    auto has_news = [&] { return stop_.load() || generation_.load() != seen; };
    if (!spin_until(has_news, kSpin)) {
      std::unique_lock<std::mutex> lock(mu_);
      sleeping_workers_.fetch_add(1);
      start_cv_.wait(lock, has_news);
      sleeping_workers_.fetch_sub(1);
    }
    if (stop_.load()) return;
    seen = generation_.load(std::memory_order_acquire);
    run_chunk(id, job_n_, *job_, job_parts_);
    // The last worker to finish wakes the caller if it stopped spinning (seq_cst, pairing with
    // the caller's store of caller_sleeping_ then load of pending_).
    if (pending_.fetch_sub(1) == 1 && caller_sleeping_.load()) {
      std::lock_guard<std::mutex> lock(mu_);
      done_cv_.notify_one();
    }
  }
}

}  // namespace sf
