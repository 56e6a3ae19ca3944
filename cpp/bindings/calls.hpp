// How every heavy core call is made from Python: without the GIL, stoppable by Ctrl-C.
//
// The core knows nothing of Python: it runs a stop check between work items (parallel.hpp).
// The check given here runs on the calling thread only when that is Python's main thread
// (the only one signal handlers run on), at most every 50 ms: it takes the GIL and calls
// PyErr_CheckSignals. When a handler raised (KeyboardInterrupt for Ctrl-C), the core stops,
// joins its workers and throws Stopped, which is turned back into that pending exception.
#pragma once

#include <pybind11/pybind11.h>

#include <chrono>
#include <new>
#include <optional>
#include <string>

#include "fastsas/memory.hpp"
#include "fastsas/moments.hpp"
#include "fastsas/parallel.hpp"
#include "fastsas/screen.hpp"

namespace fastsas::bindings {

// Whether the calling thread is Python's main thread (asked with the GIL held).
inline bool on_main_thread() {
  static const unsigned long main_ident = [] {
    return pybind11::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
  }();
  return PyThread_get_thread_ident() == main_ident;
}

class SignalCheck {
 public:
  bool operator()() {
    const auto now = std::chrono::steady_clock::now();
    if (now < next_) return false;
    next_ = now + std::chrono::milliseconds(50);
    pybind11::gil_scoped_acquire gil;
    return PyErr_CheckSignals() != 0;
  }

 private:
  std::chrono::steady_clock::time_point next_ = std::chrono::steady_clock::now() + std::chrono::milliseconds(50);
};

// "1000 x 768 float32": an input's shape in messages.
template <class T>
std::string shape_of(const MatrixView<T>& v) {
  return std::to_string(v.rows) + " x " + std::to_string(v.cols) + (sizeof(T) == 4 ? " float32" : " float64");
}

// Runs `work` (a core call) with the GIL released and Ctrl-C honoured; returns what it returns.
// `call` says what it computes (a refused allocation is reported with it).
template <class Work>
decltype(auto) run_released(const std::string& call, Work&& work) {
  std::optional<StopScope> stop;
  if (on_main_thread()) stop.emplace(SignalCheck());
  try {
    pybind11::gil_scoped_release release;
    return work();
  } catch (const Stopped&) {
    // The GIL is held again here; the handler's exception (KeyboardInterrupt) is pending.
    if (!PyErr_Occurred()) PyErr_SetNone(PyExc_KeyboardInterrupt);
    throw pybind11::error_already_set();
  } catch (const OutOfMemory&) {
    throw;  // already says what and how much
  } catch (const std::bad_alloc&) {
    throw OutOfMemory("fastsas: " + call +
                      " ran out of memory (the system refused an allocation); use fewer rows or dims per call, "
                      "or a machine with more memory");
  }
}

// Every tile precision, in the order the Python layer lists them (_core.RETRIEVAL_PRECISIONS).
inline constexpr ScreenPrecision kPrecisions[] = {ScreenPrecision::kAuto, ScreenPrecision::kNone,
                                                  ScreenPrecision::kBFloat16, ScreenPrecision::kInt8};

// A tile precision from its name ("auto", "float32", "bfloat16", "int8"); a ValueError
// listing the names otherwise.
inline ScreenPrecision precision_of(const std::string& name) {
  std::string names;
  for (ScreenPrecision p : kPrecisions) {
    if (name == screen_precision_name(p)) return p;
    names += std::string(names.empty() ? "'" : ", '") + screen_precision_name(p) + "'";
  }
  throw pybind11::value_error("precision must be one of " + names + ", got '" + name + "'");
}

}  // namespace fastsas::bindings
