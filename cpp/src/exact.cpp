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

// Four pairs side by side, each with canonical()'s lanes, operations and order.
template <class T>
void canonical_four(const T* const a[4], const T* const b[4], Index d, double out[4]) {
  double lane[4][4] = {};
  Index k = 0;
  for (; k + 4 <= d; k += 4)
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 4; ++l)
        lane[c][l] = std::fma(static_cast<double>(a[c][k + l]), static_cast<double>(b[c][k + l]), lane[c][l]);
  for (; k < d; ++k)
    for (int c = 0; c < 4; ++c)
      lane[c][0] = std::fma(static_cast<double>(a[c][k]), static_cast<double>(b[c][k]), lane[c][0]);
  for (int c = 0; c < 4; ++c) out[c] = (lane[c][0] + lane[c][1]) + (lane[c][2] + lane[c][3]);
}

template <class T>
void canonical_many(const T* rows, const std::int64_t* first, const std::int64_t* second, Index count, Index d,
                    double* out) {
  Index p = 0;
  for (; p + 4 <= count; p += 4) {
    const T* const a[4] = {rows + first[p] * d, rows + first[p + 1] * d, rows + first[p + 2] * d,
                           rows + first[p + 3] * d};
    const T* const b[4] = {rows + second[p] * d, rows + second[p + 1] * d, rows + second[p + 2] * d,
                           rows + second[p + 3] * d};
    canonical_four(a, b, d, out + p);
  }
  for (; p < count; ++p) out[p] = canonical(rows + first[p] * d, rows + second[p] * d, d);
}

}  // namespace

double canonical_dot(const float* a, const float* b, Index d) { return canonical(a, b, d); }
double canonical_dot(const double* a, const double* b, Index d) { return canonical(a, b, d); }

void canonical_pairs(const float* rows, const std::int64_t* first, const std::int64_t* second, Index count, Index d,
                     double* out) {
  canonical_many(rows, first, second, count, d, out);
}
void canonical_pairs(const double* rows, const std::int64_t* first, const std::int64_t* second, Index count,
                     Index d, double* out) {
  canonical_many(rows, first, second, count, d, out);
}

}  // namespace fastsas::exact
