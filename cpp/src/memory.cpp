#include "fastsas/memory.hpp"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>

namespace fastsas {

namespace {

std::atomic<double> limit_bytes{0.0};

// Requests below this are never checked: reading /proc/meminfo costs more than they matter.
constexpr double kCheckedFrom = 64.0 * 1024 * 1024;

double system_available_memory() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  double kib = 0.0;
  std::string unit;
  while (meminfo >> key >> kib) {
    std::getline(meminfo, unit);
    if (key == "MemAvailable:") return kib * 1024.0;
  }
  return -1.0;
}

}  // namespace

std::string format_bytes(double bytes) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = 0;
  double v = bytes;
  while (v >= 1024.0 && u < 5) {
    v /= 1024.0;
    ++u;
  }
  char text[48];
  std::snprintf(text, sizeof text, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return text;
}

double available_memory() {
  const double system = system_available_memory();
  const double limit = limit_bytes.load();
  if (limit > 0.0) return system >= 0.0 ? std::min(system, limit) : limit;
  return system;
}

void set_memory_limit(double bytes) { limit_bytes.store(bytes > 0.0 ? bytes : 0.0); }

double memory_limit() { return limit_bytes.load(); }

bool memory_fits(double bytes) {
  if (bytes < kCheckedFrom && limit_bytes.load() <= 0.0) return true;
  const double available = available_memory();
  return available < 0.0 || bytes <= available;
}

void require_memory(const std::string& what, double bytes, const std::string& fix) {
  if (memory_fits(bytes)) return;
  const double available = available_memory();
  const bool capped = limit_bytes.load() > 0.0 && available >= limit_bytes.load();
  throw OutOfMemory("fastsas: " + what + " needs about " + format_bytes(bytes) + ", but only " +
                    format_bytes(available) + (capped ? " are allowed (fastsas memory limit)" :
                                                        " are available (MemAvailable)") +
                    "; " + fix);
}

}  // namespace fastsas
