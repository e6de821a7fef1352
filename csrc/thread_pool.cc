#include "thread_pool.h"

#include <algorithm>
#include <system_error>

namespace bmaml {

ThreadPool::ThreadPool(int num_threads) {
  workers_.reserve(num_threads > 1 ? num_threads - 1 : 0);
  try {
    for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
  } catch (...) {
    // The destructor does not run for a constructor that throws: without this, the started
    // workers would wait forever on a pool that is gone, and the caller with them.
    const int started = static_cast<int>(workers_.size()) + 1;
    stop_and_join();
    try {
      throw;
    } catch (const std::system_error& e) {  // the OS's refusal (EAGAIN): say which thread
      throw ThreadStartError(num_threads, started,
                             "could not start thread " + std::to_string(started + 1) + " of " +
                                 std::to_string(num_threads) + ": " + e.what());
    }  // anything else (std::bad_alloc) goes on as it is
  }
}

ThreadPool::~ThreadPool() { stop_and_join(); }

void ThreadPool::stop_and_join() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
  workers_.clear();
}

void ThreadPool::run_chunks(int worker) {
  for (;;) {
    const std::ptrdiff_t begin = next_.fetch_add(chunk_, std::memory_order_relaxed);
    if (begin >= n_) return;
    const std::ptrdiff_t end = std::min(begin + chunk_, n_);
    for (std::ptrdiff_t i = begin; i < end; ++i) {
      try {
        (*fn_)(i, worker);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex_);
        if (!error_) error_ = std::current_exception();
      }
    }
  }
}

void ThreadPool::worker_loop(int worker) {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
    }
    run_chunks(worker);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (--active_workers_ == 0) done_.notify_one();
    }
  }
}

void ThreadPool::parallel_for(std::ptrdiff_t n, std::ptrdiff_t chunk,
                              const std::function<void(std::ptrdiff_t, int)>& fn) {
  if (n <= 0) return;
  fn_ = &fn;
  n_ = n;
  chunk_ = std::max<std::ptrdiff_t>(1, chunk);
  next_.store(0, std::memory_order_relaxed);
  error_ = nullptr;
  if (!workers_.empty() && n > chunk_) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      active_workers_ = static_cast<int>(workers_.size());
      ++generation_;
    }
    wake_.notify_all();
    run_chunks(0);
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return active_workers_ == 0; });
  } else {
    run_chunks(0);
  }
  fn_ = nullptr;
  if (error_) std::rethrow_exception(error_);
}

}  // namespace bmaml
