// A fixed pool of worker threads that runs one parallel loop at a time.
//
// Work is handed out in small chunks from an atomic counter, so robots whose steps cost more
// (contacts) do not leave a thread idle. Each index is processed by exactly one thread and
// results are written to disjoint memory, so outputs never depend on the thread count.
#pragma once

#include <atomic>
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace bmaml {

class ThreadPool {
 public:
  // num_threads counts the calling thread: num_threads - 1 workers are started.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(i, worker) for every i in [0, n) and returns when all are done; worker in
  // [0, num_threads) says which thread runs it (0: the caller), so fn can use per-thread
  // scratch memory. The first exception thrown by fn is rethrown after the loop has finished.
  void parallel_for(int n, int chunk, const std::function<void(int, int)>& fn);

 private:
  void worker_loop(int worker);
  void run_chunks(int worker);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  uint64_t generation_ = 0;
  bool stopping_ = false;
  int active_workers_ = 0;

  // The loop being run.
  const std::function<void(int, int)>* fn_ = nullptr;
  int n_ = 0;
  int chunk_ = 1;
  std::atomic<int> next_{0};
  std::exception_ptr error_;
  std::mutex error_mutex_;
};

}  // namespace bmaml
