// A minimal fork-join helper. Work items are assigned to workers statically; callers keep
// every reduction in a fixed item order, so results never depend on the thread count.
#pragma once

#include <algorithm>
#include <exception>
#include <functional>
#include <thread>
#include <vector>

namespace fastsas {

// Runs fn(item, worker) for item in [0, count) on up to `threads` workers (the caller's
// thread is worker 0). The first exception thrown by any item is rethrown after all
// workers have joined.
inline void parallel_for(int threads, long count, const std::function<void(long, int)>& fn) {
  if (count <= 0) return;
  const int workers = static_cast<int>(std::max<long>(1, std::min<long>(threads, count)));
  if (workers == 1) {
    for (long i = 0; i < count; ++i) fn(i, 0);
    return;
  }
  std::vector<std::exception_ptr> errors(static_cast<size_t>(workers));
  auto run = [&](int worker) {
    try {
      for (long i = worker; i < count; i += workers) fn(i, worker);
    } catch (...) {
      errors[static_cast<size_t>(worker)] = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(workers - 1));
  for (int w = 1; w < workers; ++w) pool.emplace_back(run, w);
  run(0);
  for (auto& t : pool) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace fastsas
