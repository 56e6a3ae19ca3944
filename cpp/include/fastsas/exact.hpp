// Exact decisions over tiles of a low-precision GEMM: the canonical similarity of two stored
// rows, a proven bound on how far a GEMM tile entry can be from it, and rounding of a double
// threshold to the tile's precision in a chosen direction. A kernel that compares tile entries
// against thresholds decides only the entries outside the bound and re-decides the others
// with the canonical value, so its result never depends on the GEMM's rounding, the tile
// shape or the thread count.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

namespace fastsas::exact {

using Index = std::int64_t;

// The canonical similarity of two stored rows of length d: float64 fused multiply-adds in
// four interleaved lanes (lane l takes k = l, l + 4, ...; the tail goes to lane 0), then
// (s0 + s1) + (s2 + s3). The fma is written out, so no compiler contraction choice changes
// it; for float32 rows every product is exact in float64. This is the same rule as the
// retrieval engine's and the CUDA kernels' (cuda/fastsas_common.cuh), so every engine agrees
// on every bit. One compiled copy per type (out of line), so equal rows give equal values.
double canonical_dot(const float* a, const float* b, Index d);
double canonical_dot(const double* a, const double* b, Index d);

// out[p] = canonical_dot(rows + first[p] * d, rows + second[p] * d, d) for p in [0, count):
// the same bits, four pairs at a time, so sixteen independent fma chains keep the core busy
// where one canonical_dot waits on the latency of its four.
void canonical_pairs(const float* rows, const std::int64_t* first, const std::int64_t* second, Index count, Index d,
                     double* out);
void canonical_pairs(const double* rows, const std::int64_t* first, const std::int64_t* second, Index count,
                     Index d, double* out);

// Unit roundoff of T (2^-24 for float, 2^-53 for double).
template <class T>
constexpr double unit_roundoff() {
  return 1.0 / static_cast<double>(std::uint64_t{1} << std::numeric_limits<T>::digits);
}

// gamma_m = m u / (1 - m u) (Higham, Accuracy and Stability, Lemma 3.1).
inline double gamma(Index m, double u) {
  const double mu = static_cast<double>(m) * u;
  return mu / (1.0 - mu);
}

// A bound on |tile entry - canonical_dot(a, b)| for rows a, b of length d whose Euclidean
// norms are at most 1 + 2 u_T (rows normalised in float64 and stored in T). Both are inner
// products of the same stored values: a T-precision dot product in any order (blocked, with
// or without fma) errs by at most gamma_d(u_T) sum |a_k b_k|, the canonical one by at most
// gamma_d(u_64) sum |a_k b_k|, and sum |a_k b_k| <= |a| |b| <= 1 + 5 u_T. Products that
// underflow lose at most the smallest normal of T each, d of them. The result is doubled:
// a margin for the rounding of the threshold arithmetic itself.
template <class T>
double tile_error_bound(Index d) {
  const double u = unit_roundoff<T>();
  const double relative = (gamma(d, u) + gamma(d, unit_roundoff<double>())) * (1.0 + 5.0 * u);
  const double underflow = static_cast<double>(d) * static_cast<double>(std::numeric_limits<T>::min());
  return 2.0 * (relative + underflow);
}

// The largest T <= v and the smallest T >= v (for v = +-inf: itself).
template <class T>
T round_down(double v) {
  T f = static_cast<T>(v);
  if (static_cast<double>(f) > v) f = std::nextafter(f, -std::numeric_limits<T>::infinity());
  return f;
}
template <class T>
T round_up(double v) {
  T f = static_cast<T>(v);
  if (static_cast<double>(f) < v) f = std::nextafter(f, std::numeric_limits<T>::infinity());
  return f;
}

}  // namespace fastsas::exact
