// Per-row, per-class Euclidean distance sums from GEMM tiles (class_distances.hpp).
#include "fastsas/class_distances.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "fastsas/blas.hpp"
#include "fastsas/pairwise.hpp"
#include "fastsas/parallel.hpp"

namespace fastsas {

namespace {

// Rows [start, start + count) of x as contiguous row-major float64.
template <class T>
void pack_double(const MatrixView<T>& x, Index start, Index count, std::vector<double>& out) {
  out.resize(static_cast<size_t>(count * x.cols));
  for (Index r = 0; r < count; ++r)
    for (Index c = 0; c < x.cols; ++c) out[static_cast<size_t>(r * x.cols + c)] = static_cast<double>(x(start + r, c));
}

}  // namespace

template <class T>
std::vector<double> class_distance_sums(const MatrixView<T>& x, const std::int32_t* codes, Index n_classes,
                                        const ClassDistanceOptions& options) {
  const Index n = x.rows;
  const Index d = x.cols;
  if (n_classes < 1) throw std::invalid_argument("class_distance_sums: n_classes must be at least 1");
  for (Index i = 0; i < n; ++i)
    if (codes[i] < 0 || codes[i] >= n_classes)
      throw std::invalid_argument("class_distance_sums: code " + std::to_string(codes[i]) + " of row " +
                                  std::to_string(i) + " is outside [0, " + std::to_string(n_classes) + ")");
  std::vector<double> norms(static_cast<size_t>(n));
  for (Index i = 0; i < n; ++i) {
    double s = 0.0;
    for (Index c = 0; c < d; ++c) {
      const double v = static_cast<double>(x(i, c));
      if (!std::isfinite(v))
        throw std::invalid_argument("class_distance_sums: row " + std::to_string(i) + " has a non-finite value");
      s += v * v;
    }
    norms[static_cast<size_t>(i)] = s;
  }
  std::vector<double> sums(static_cast<size_t>(n * n_classes), 0.0);
  if (n == 0 || d == 0) return sums;
  blas::use_calling_thread_only();
  const Index tile = options.tile > 0 ? options.tile : kClassDistanceTile;
  const Index blocks = (n + tile - 1) / tile;
  struct Workspace {
    std::vector<double> rows, cols, product;
  };
  std::vector<Workspace> spaces(static_cast<size_t>(std::max(1, options.threads)));
  // One work item = one row tile against every column tile: each row's sums are written by
  // one item only, in ascending column order.
  parallel_for(std::max(1, options.threads), static_cast<long>(blocks), [&](long item, int worker) {
    Workspace& w = spaces[static_cast<size_t>(worker)];
    const Index i0 = static_cast<Index>(item) * tile;
    const Index rows = std::min(tile, n - i0);
    pack_double(x, i0, rows, w.rows);
    w.product.resize(static_cast<size_t>(rows * tile));
    for (Index j0 = 0; j0 < n; j0 += tile) {
      check_stop();
      const Index cols = std::min(tile, n - j0);
      pack_double(x, j0, cols, w.cols);
      detail::gemm_nt(rows, cols, d, w.rows.data(), d, w.cols.data(), d, w.product.data(), cols);
      for (Index r = 0; r < rows; ++r) {
        const Index i = i0 + r;
        double* out = sums.data() + i * n_classes;
        const double* g = w.product.data() + r * cols;
        const double ni = norms[static_cast<size_t>(i)];
        for (Index c = 0; c < cols; ++c) {
          const Index j = j0 + c;
          if (j == i) continue;
          const double squared = ni + norms[static_cast<size_t>(j)] - 2.0 * g[c];
          out[codes[j]] += std::sqrt(std::max(squared, 0.0));
        }
      }
    }
  });
  return sums;
}

template std::vector<double> class_distance_sums<float>(const MatrixView<float>&, const std::int32_t*, Index,
                                                        const ClassDistanceOptions&);
template std::vector<double> class_distance_sums<double>(const MatrixView<double>&, const std::int32_t*, Index,
                                                         const ClassDistanceOptions&);

}  // namespace fastsas
