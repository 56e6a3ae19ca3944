#include "fastsas/exact.hpp"

#include "fastsas/screen.hpp"

namespace fastsas::exact {

// One canonical similarity in the whole core: the retrieval engine's (screen.hpp), so that a
// pair of rows has the same value for neighbours as for retrieval, on every path.
namespace {

template <class T>
void canonical_many(const T* rows, const std::int64_t* first, const std::int64_t* second, Index count, Index d,
                    double* out) {
  Index p = 0;
  for (; p + 4 <= count; p += 4) {
    const T* const a[4] = {rows + first[p] * d, rows + first[p + 1] * d, rows + first[p + 2] * d,
                           rows + first[p + 3] * d};
    const T* const b[4] = {rows + second[p] * d, rows + second[p + 1] * d, rows + second[p + 2] * d,
                           rows + second[p + 3] * d};
    fastsas::canonical_dot4(a, b, d, out + p);
  }
  for (; p < count; ++p) out[p] = fastsas::canonical_dot(rows + first[p] * d, rows + second[p] * d, d);
}

}  // namespace

double canonical_dot(const float* a, const float* b, Index d) { return fastsas::canonical_dot(a, b, d); }
double canonical_dot(const double* a, const double* b, Index d) { return fastsas::canonical_dot(a, b, d); }

void canonical_pairs(const float* rows, const std::int64_t* first, const std::int64_t* second, Index count, Index d,
                     double* out) {
  canonical_many(rows, first, second, count, d, out);
}
void canonical_pairs(const double* rows, const std::int64_t* first, const std::int64_t* second, Index count,
                     Index d, double* out) {
  canonical_many(rows, first, second, count, d, out);
}

}  // namespace fastsas::exact
