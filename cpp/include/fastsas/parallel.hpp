// A minimal fork-join helper. Work items are assigned to workers statically; callers keep
// every reduction in a fixed item order, so results never depend on the thread count.
//
// Stopping. Long calls must be stoppable (Ctrl-C) without the core knowing who asks: a caller
// installs a stop check for its thread (StopScope); parallel_for runs it on that thread
// between work items (and while that thread waits for the other workers), and a work item
// that is itself long calls check_stop() at safe points. When the check says stop, every
// worker leaves after its current item, all of them are joined, and Stopped is thrown from
// the call: no thread is left running.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace fastsas {

// Thrown out of a core call that stopped because its caller's stop check asked it to.
class Stopped : public std::runtime_error {
 public:
  Stopped() : std::runtime_error("fastsas: the computation was stopped at the caller's request") {}
};

namespace detail {

// What a thread consults in check_stop(): the caller's check (only on the thread that
// installed it) and the flag shared by everything running for that caller.
struct StopState {
  const std::function<bool()>* check = nullptr;
  std::atomic<bool>* flag = nullptr;
};

inline thread_local StopState stop_state;

}  // namespace detail

// Installs `check` (returns true to ask for a stop) on the calling thread for this scope. The
// check runs on this thread only, at most once per work item: it may be slow-ish (the Python
// binding takes the GIL in it) if it throttles itself.
class StopScope {
 public:
  explicit StopScope(std::function<bool()> check) : check_(std::move(check)), saved_(detail::stop_state) {
    detail::stop_state.check = &check_;
    detail::stop_state.flag = &flag_;
  }
  ~StopScope() { detail::stop_state = saved_; }
  StopScope(const StopScope&) = delete;
  StopScope& operator=(const StopScope&) = delete;

 private:
  std::function<bool()> check_;
  std::atomic<bool> flag_{false};
  detail::StopState saved_;
};

// Throws Stopped when a stop was asked for (by this thread's check, or seen by another worker
// of the same call). A no-op without a StopScope. Call it between steps of long work.
inline void check_stop() {
  detail::StopState& s = detail::stop_state;
  if (s.flag && s.flag->load(std::memory_order_relaxed)) throw Stopped();
  if (s.check && (*s.check)()) {
    if (s.flag) s.flag->store(true, std::memory_order_relaxed);
    throw Stopped();
  }
}

// Whether parallel_for may stop between items. `never` is for short steps that commit a
// result in place, which must not be left half done.
enum class Stop { between_items, never };

// Runs fn(item, worker) for item in [0, count) on up to `threads` workers (the caller's
// thread is worker 0). The first exception thrown by any item (in worker order) is rethrown
// after all workers have joined; a stop is one such exception (Stopped).
inline void parallel_for(int threads, long count, const std::function<void(long, int)>& fn,
                         Stop stop = Stop::between_items) {
  if (count <= 0) return;
  const bool stoppable = stop == Stop::between_items;
  if (stoppable) check_stop();
  const int workers = static_cast<int>(std::max<long>(1, std::min<long>(threads, count)));
  if (workers == 1) {
    for (long i = 0; i < count; ++i) {
      if (stoppable && i > 0) check_stop();
      fn(i, 0);
    }
    return;
  }
  std::atomic<bool>* const flag = detail::stop_state.flag;
  std::vector<std::exception_ptr> errors(static_cast<size_t>(workers));
  auto run = [&](int worker) {
    try {
      for (long i = worker; i < count; i += workers) {
        if (stoppable && i != worker) check_stop();
        fn(i, worker);
      }
    } catch (...) {
      errors[static_cast<size_t>(worker)] = std::current_exception();
    }
  };
  std::mutex mutex;
  std::condition_variable finished;
  int running = 0;
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(workers - 1));
  for (int w = 1; w < workers; ++w) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      ++running;
    }
    try {
      pool.emplace_back([&, w] {
        detail::stop_state = detail::StopState{nullptr, flag};  // sees the stop, never runs the check
        run(w);
        std::lock_guard<std::mutex> lock(mutex);
        if (--running == 0) finished.notify_one();
      });
    } catch (...) {  // std::system_error, std::bad_alloc
      std::lock_guard<std::mutex> lock(mutex);
      --running;
      break;  // the system has no thread to give: the caller's thread runs those items
    }
  }
  run(0);
  // Items of workers that could not be started, in their worker's order (same results).
  for (int w = static_cast<int>(pool.size()) + 1; w < workers; ++w) run(w);
  // Worker 0 keeps polling its check while the others finish, so a stop is seen even when the
  // caller's thread has run out of items first.
  {
    std::unique_lock<std::mutex> lock(mutex);
    while (running > 0) {
      if (finished.wait_for(lock, std::chrono::milliseconds(20), [&] { return running == 0; })) break;
      if (!stoppable || errors[0]) continue;
      lock.unlock();
      try {
        check_stop();
      } catch (...) {
        errors[0] = std::current_exception();
      }
      lock.lock();
    }
  }
  for (auto& t : pool) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace fastsas
