// A fixed pool of worker threads that runs one parallel loop at a time.
//
// Work is handed out in small chunks from an atomic counter, so robots whose steps cost more
// (contacts) do not leave a thread idle. Each index is processed by exactly one thread and
// results are written to disjoint memory, so outputs never depend on the thread count.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace bmaml {

// The OS refused a worker thread (a process or memory limit: ulimit -u, ulimit -v). Thrown by
// the constructor after the workers already started have been stopped and joined.
class ThreadStartError : public std::runtime_error {
 public:
  ThreadStartError(int requested, int started, const std::string& reason)
      : std::runtime_error(reason), requested(requested), started(started) {}
  int requested;  // threads asked for, the calling thread included
  int started;    // threads that were running, the calling thread included
};

class ThreadPool {
 public:
  // num_threads counts the calling thread: num_threads - 1 workers are started. If one cannot
  // be started, those that were are joined and ThreadStartError is thrown (never a half-built
  // pool whose threads nobody joins).
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(i, worker) for every i in [0, n) and returns when all are done; worker in
  // [0, num_threads) says which thread runs it (0: the caller), so fn can use per-thread
  // scratch memory. The first exception thrown by fn is rethrown after the loop has finished.
  // Indices are 64-bit: the counter may run past n by a chunk per thread without overflowing.
  void parallel_for(std::ptrdiff_t n, std::ptrdiff_t chunk,
                    const std::function<void(std::ptrdiff_t, int)>& fn);

 private:
  void worker_loop(int worker);
  void run_chunks(int worker);
  void stop_and_join();

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  uint64_t generation_ = 0;
  bool stopping_ = false;
  int active_workers_ = 0;

  // The loop being run.
  const std::function<void(std::ptrdiff_t, int)>* fn_ = nullptr;
  std::ptrdiff_t n_ = 0;
  std::ptrdiff_t chunk_ = 1;
  std::atomic<std::ptrdiff_t> next_{0};
  std::exception_ptr error_;
  std::mutex error_mutex_;
};

}  // namespace bmaml
