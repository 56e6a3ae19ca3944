#include "fastsas/exact.hpp"

namespace fastsas::exact {

namespace {

// Out of line and never inlined: one compiled copy per type, so the value of a pair of rows
// is the same wherever it is asked for.
template <class T>
[[gnu::noinline]] double canonical(const T* a, const T* b, Index d) {
  double lane0 = 0.0, lane1 = 0.0, lane2 = 0.0, lane3 = 0.0;
  Index k = 0;
  for (; k + 4 <= d; k += 4) {
    lane0 = std::fma(static_cast<double>(a[k]), static_cast<double>(b[k]), lane0);
    lane1 = std::fma(static_cast<double>(a[k + 1]), static_cast<double>(b[k + 1]), lane1);
    lane2 = std::fma(static_cast<double>(a[k + 2]), static_cast<double>(b[k + 2]), lane2);
    lane3 = std::fma(static_cast<double>(a[k + 3]), static_cast<double>(b[k + 3]), lane3);
  }
  for (; k < d; ++k) lane0 = std::fma(static_cast<double>(a[k]), static_cast<double>(b[k]), lane0);
  return (lane0 + lane1) + (lane2 + lane3);
}

}  // namespace

double canonical_dot(const float* a, const float* b, Index d) { return canonical(a, b, d); }
double canonical_dot(const double* a, const double* b, Index d) { return canonical(a, b, d); }

}  // namespace fastsas::exact
