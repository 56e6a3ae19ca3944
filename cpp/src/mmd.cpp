// Exact biased RBF MMD, blocked and fused: per tile one GEMM, then exp and a float64 sum of
// the tile in the same pass. Tiles are listed once (K(x,x) and K(y,y): on and above the
// diagonal, off-diagonal tiles weighted 2; K(x,y): all), each tile's sum is stored in its
// slot, and the slots are added in list order: the same bits for any thread count.
//
// Accuracy. A tile's GEMM gives ||a - b||^2 = |a|^2 + |b|^2 - 2 a.b with an error bounded by
// kappa (|a|^2 + |b|^2) (kappa = 2 (d + 8) u of the precision used), so each kernel's
// exponent errs by at most that times 1 / (2 sigma^2). Every tile takes the cheapest of three
// ways that keeps this bound below kMaxExponentError:
//   1. the GEMM in the input's precision (the usual case);
//   2. a float64 GEMM of the tile's rows (float32 input with a sigma small against the spread);
//   3. per pair: 0 when the pair's exponent is certainly below float64's exp underflow, else
//      the exact distance from the input rows, ||a - b|| / sigma squared (sigma far below the
//      spread: only near pairs get here).
// K(a, a) is exactly 1 in all three. Rows are shifted by the joint mean and scaled by one power
// of two so that no product overflows or underflows, whatever the magnitudes.
#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "fastsas/blas.hpp"
#include "fastsas/memory.hpp"
#include "fastsas/pairwise.hpp"
#include "fastsas/parallel.hpp"

namespace fastsas {

namespace {

// The largest exponent error a tile's way of computing may have (relative error of a kernel).
constexpr double kMaxExponentError = 1.0 / 4096;
// exp(-x) is 0 in float64 for x above this.
constexpr double kExpUnderflow = 745.2;

struct TileItem {
  int pair;  // 0: x-x, 1: y-y, 2: x-y
  Index i0, j0;
  double weight;
};

// Sum of n values in float64 with a fixed association (8 independent lanes).
template <class T>
double sum_f64(const T* v, Index n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  Index j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) acc[l] += static_cast<double>(v[j + l]);
  for (; j < n; ++j) acc[0] += static_cast<double>(v[j]);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// The bound of the header comment for a GEMM in precision P, and the absolute error that
// gradual underflow of the products can add.
template <class P>
double gemm_error_factor(Index d) {
  return 2.0 * static_cast<double>(d + 8) * std::ldexp(1.0, -std::numeric_limits<P>::digits);
}
template <class P>
double gemm_error_floor(Index d) {
  return 4.0 * static_cast<double>(d + 2) * static_cast<double>(std::numeric_limits<P>::min());
}

}  // namespace

template <class T>
MmdResult mmd(const MatrixView<T>& x, const MatrixView<T>& y, double sigma, const MmdOptions& options) {
  const Index n = x.rows, m = y.rows, d = x.cols;
  if (y.cols != d) throw std::invalid_argument("x and y must have the same number of columns");
  if (n < 1 || m < 1 || d < 1) throw std::invalid_argument("x and y must be non-empty");
  if (!(sigma > 0.0) || !std::isfinite(sigma)) throw std::invalid_argument("sigma must be a finite number > 0");
  const int threads = std::max(1, options.threads);
  const Index tile = options.tile > 0 ? options.tile : kMmdTile;
  blas::use_calling_thread_only();
  constexpr bool kFloat = std::is_same_v<T, float>;
  {
    const double t = static_cast<double>(std::min(tile, std::max(n, m)));
    const double per_worker = t * t * sizeof(T) + 16.0 * t + (kFloat ? 8.0 * (2.0 * t * static_cast<double>(d) + t * t) : 0.0);
    require_memory("MMD of " + std::to_string(n) + " x " + std::to_string(d) + " and " + std::to_string(m) + " x " +
                       std::to_string(d) + " rows (a shifted copy of both, and tiles)",
                   static_cast<double>(n + m) * static_cast<double>(d * sizeof(T)) + threads * per_worker,
                   "compute it on a sample of the rows or use a machine with more memory");
  }

  std::vector<T> xs = detail::pack_rows(x, "x", false, threads);
  std::vector<T> ys = detail::pack_rows(y, "y", false, threads);

  // Shift both sets by their joint mean (fixed-order chunk sums).
  constexpr Index kChunk = 4096;
  auto chunk_reduce = [&](Index rows, auto&& per_chunk, auto&& combine, auto init) {
    const long chunks = static_cast<long>((rows + kChunk - 1) / kChunk);
    std::vector<decltype(init)> parts(static_cast<size_t>(chunks), init);
    parallel_for(threads, chunks, [&](long c, int) {
      per_chunk(c * kChunk, std::min(rows, (c + 1) * kChunk), parts[static_cast<size_t>(c)]);
    });
    auto total = init;
    for (const auto& p : parts) combine(total, p);
    return total;
  };
  auto column_sums = [&](const std::vector<T>& a, Index rows) {
    return chunk_reduce(
        rows,
        [&](Index r0, Index r1, Eigen::VectorXd& s) {
          for (Index r = r0; r < r1; ++r)
            for (Index k = 0; k < d; ++k) s[k] += static_cast<double>(a[r * d + k]);
        },
        [](Eigen::VectorXd& t, const Eigen::VectorXd& p) { t += p; }, Eigen::VectorXd(Eigen::VectorXd::Zero(d)));
  };
  const Eigen::VectorXd shift = (column_sums(xs, n) + column_sums(ys, m)) / static_cast<double>(n + m);
  // One power of two for both sets that brings every shifted row's norm below 1.
  auto largest_shifted = [&](const std::vector<T>& a, Index rows) {
    return chunk_reduce(
        rows,
        [&](Index r0, Index r1, double& top) {
          for (Index r = r0; r < r1; ++r)
            for (Index k = 0; k < d; ++k) top = std::max(top, std::abs(static_cast<double>(a[r * d + k]) - shift[k]));
        },
        [](double& t, double p) { t = std::max(t, p); }, 0.0);
  };
  const double largest = std::max(largest_shifted(xs, n), largest_shifted(ys, m));
  const int scale = largest > 0.0 ? std::ilogb(largest) + 1 + (std::ilogb(static_cast<double>(d)) + 2) / 2 : 0;
  // The shifted, scaled rows in T (what tile GEMMs multiply) and their squared norms; for
  // float32 input also the squared norms of the same rows before rounding to T (what float64
  // tiles multiply).
  auto center = [&](std::vector<T>& a, Index rows, std::vector<double>& sq, std::vector<double>& sq64) {
    sq.assign(static_cast<size_t>(rows), 0.0);
    if (kFloat) sq64.assign(static_cast<size_t>(rows), 0.0);
    parallel_for(threads, static_cast<long>((rows + kChunk - 1) / kChunk), [&](long c, int) {
      const Index r1 = std::min(rows, (c + 1) * kChunk);
      for (Index r = c * kChunk; r < r1; ++r) {
        T* row = a.data() + r * d;
        double s = 0.0, s64 = 0.0;
        for (Index k = 0; k < d; ++k) {
          const double v = std::ldexp(static_cast<double>(row[k]) - shift[k], -scale);
          row[k] = static_cast<T>(v);
          s += static_cast<double>(row[k]) * static_cast<double>(row[k]);
          s64 += v * v;
        }
        sq[r] = s;
        if (kFloat) sq64[r] = s64;
      }
    });
  };
  std::vector<double> sqx, sqy, sq64x, sq64y;
  center(xs, n, sqx, sq64x);
  center(ys, m, sqy, sq64y);
  if (!kFloat) {
    sq64x = sqx;
    sq64y = sqy;
  }

  // In scaled units: sigma' = sigma 2^-scale, K(a, b) = exp(-g ||a - b||^2), g = 1 / (2 sigma'^2).
  const double scaled_sigma = std::ldexp(sigma, -scale);
  const double two_var = 2.0 * scaled_sigma * scaled_sigma;  // may overflow (K = 1) or underflow
  const double g = 1.0 / two_var;
  const double tolerance = kMaxExponentError * two_var;  // on ||a - b||^2 errors
  const double cutoff = kExpUnderflow * two_var;          // ||a - b||^2 beyond which K is 0
  const double kappa_t = gemm_error_factor<T>(d), floor_t = gemm_error_floor<T>(d);
  const double kappa_64 = gemm_error_factor<double>(d), floor_64 = gemm_error_floor<double>(d);

  // K(a, b) = exp(2g a.b - g|a|^2 - g|b|^2), argument clipped at 0 (distances are >= 0).
  const bool fast_possible = floor_t <= tolerance;  // g is then finite in T too
  std::vector<T> hx(static_cast<size_t>(n)), hy(static_cast<size_t>(m));
  if (fast_possible) {
    for (Index i = 0; i < n; ++i) hx[i] = static_cast<T>(-g * sqx[i]);
    for (Index j = 0; j < m; ++j) hy[j] = static_cast<T>(-g * sqy[j]);
  }
  const T two_g = fast_possible ? static_cast<T>(2.0 * g) : T(0);

  std::vector<TileItem> items;
  for (int pair = 0; pair < 2; ++pair) {
    const Index rows = pair == 0 ? n : m;
    for (Index i0 = 0; i0 < rows; i0 += tile)
      for (Index j0 = i0; j0 < rows; j0 += tile) items.push_back({pair, i0, j0, j0 == i0 ? 1.0 : 2.0});
  }
  for (Index i0 = 0; i0 < n; i0 += tile)
    for (Index j0 = 0; j0 < m; j0 += tile) items.push_back({2, i0, j0, 1.0});
  // Largest squared norm per tile of rows, for the choice of each tile's way.
  auto tile_maxima = [&](const std::vector<double>& sq, Index rows) {
    std::vector<double> top(static_cast<size_t>((rows + tile - 1) / tile), 0.0);
    for (Index r = 0; r < rows; ++r) top[static_cast<size_t>(r / tile)] = std::max(top[static_cast<size_t>(r / tile)], sq[r]);
    return top;
  };
  const std::vector<double> top_x = tile_maxima(sqx, n), top_y = tile_maxima(sqy, m);

  // The exact kernel of two input rows: the distance from their differences, over sigma.
  auto exact_kernel = [&](const MatrixView<T>& a, Index i, const MatrixView<T>& b, Index j) {
    double d2 = 0.0;
    for (Index k = 0; k < d; ++k) {
      const double diff = static_cast<double>(a(i, k)) - static_cast<double>(b(j, k));
      d2 += diff * diff;
    }
    if (d2 == 0.0) return 1.0;
    const double r = std::sqrt(d2) / sigma;
    return std::exp(-0.5 * r * r);
  };

  const int workers = static_cast<int>(std::max<long>(1, std::min<long>(threads, static_cast<long>(items.size()))));
  using Array = Eigen::Array<T, Eigen::Dynamic, 1>;
  // exp runs on a padded, maximally aligned scratch row whose length is a multiple of every
  // SIMD width: Eigen then evaluates every element with the same packet code, never a
  // scalar peel or tail chosen by a buffer's address, so the bits do not depend on which
  // worker computed a tile.
  constexpr Index kPad = 16;
  const Index padded = (std::min(tile, std::max(n, m)) + kPad - 1) / kPad * kPad;
  struct Buffers {
    std::vector<T> tile;
    std::vector<double> a64, b64, tile64;
  };
  std::vector<Buffers> buffers(static_cast<size_t>(workers));
  std::vector<Array> scratch(static_cast<size_t>(workers), Array::Zero(padded));
  std::vector<double> sums(items.size(), 0.0);
  parallel_for(workers, static_cast<long>(items.size()), [&](long it, int wid) {
    const TileItem& item = items[static_cast<size_t>(it)];
    const std::vector<T>& a = item.pair == 1 ? ys : xs;
    const std::vector<T>& b = item.pair == 0 ? xs : ys;
    const MatrixView<T>& va = item.pair == 1 ? y : x;
    const MatrixView<T>& vb = item.pair == 0 ? x : y;
    const std::vector<double>& sqa = item.pair == 1 ? sq64y : sq64x;
    const std::vector<double>& sqb = item.pair == 0 ? sq64x : sq64y;
    const Index na = item.pair == 1 ? m : n, nb = item.pair == 0 ? n : m;
    const Index rows = std::min(tile, na - item.i0), cols = std::min(tile, nb - item.j0);
    const bool diagonal = item.pair != 2 && item.i0 == item.j0;  // entry (r, r) is K(a, a) = 1
    const double top = (item.pair == 1 ? top_y : top_x)[static_cast<size_t>(item.i0 / tile)] +
                       (item.pair == 0 ? top_x : top_y)[static_cast<size_t>(item.j0 / tile)];
    Buffers& buf = buffers[static_cast<size_t>(wid)];
    double total = 0.0;
    if (fast_possible && top * kappa_t + floor_t <= tolerance) {
      // 1. The GEMM in T, exp in T, float64 sums.
      const std::vector<T>& ha = item.pair == 1 ? hy : hx;
      const std::vector<T>& hb = item.pair == 0 ? hx : hy;
      buf.tile.resize(static_cast<size_t>(tile * tile));
      detail::gemm_nt(rows, cols, d, a.data() + item.i0 * d, d, b.data() + item.j0 * d, d, buf.tile.data(), cols);
      Array& arg = scratch[static_cast<size_t>(wid)];
      T* __restrict z = arg.data();
      const T* __restrict hcol = hb.data() + item.j0;
      const Index width = (cols + kPad - 1) / kPad * kPad;
      Eigen::Map<Array, Eigen::AlignedMax> kernel(z, width);
      for (Index r = 0; r < rows; ++r) {
        const T* __restrict c = buf.tile.data() + r * cols;
        const T hr = ha[item.i0 + r];
        for (Index j = 0; j < cols; ++j) z[j] = std::min(c[j] * two_g + (hcol[j] + hr), T(0));
        if (diagonal) z[r] = T(0);
        for (Index j = cols; j < width; ++j) z[j] = T(0);
        kernel = kernel.exp();
        total += sum_f64(z, cols);
      }
    } else {
      // 2. A float64 GEMM (for float32 input: of the rows before rounding to T), and per pair
      // 3. the exact kernel where even that is not accurate enough.
      const double* pa;
      const double* pb;
      if constexpr (kFloat) {
        buf.a64.resize(static_cast<size_t>(rows * d));
        buf.b64.resize(static_cast<size_t>(cols * d));
        for (Index r = 0; r < rows; ++r)
          for (Index k = 0; k < d; ++k)
            buf.a64[r * d + k] = std::ldexp(static_cast<double>(va(item.i0 + r, k)) - shift[k], -scale);
        for (Index r = 0; r < cols; ++r)
          for (Index k = 0; k < d; ++k)
            buf.b64[r * d + k] = std::ldexp(static_cast<double>(vb(item.j0 + r, k)) - shift[k], -scale);
        pa = buf.a64.data();
        pb = buf.b64.data();
      } else {
        pa = a.data() + item.i0 * d;
        pb = b.data() + item.j0 * d;
      }
      buf.tile64.resize(static_cast<size_t>(rows * cols));
      detail::gemm_nt(rows, cols, d, pa, d, pb, d, buf.tile64.data(), cols);
      for (Index r = 0; r < rows; ++r) {
        const double* c = buf.tile64.data() + r * cols;
        const double sr = sqa[item.i0 + r];
        double row_total = 0.0;
        for (Index j = 0; j < cols; ++j) {
          if (diagonal && j == r) {
            row_total += 1.0;
            continue;
          }
          const double sc = sqb[item.j0 + j];
          const double estimate = std::max(0.0, sr + sc - 2.0 * c[j]);
          const double error = (sr + sc) * kappa_64 + floor_64;
          const double lower = estimate - error;
          if (lower > 0.0 && lower >= cutoff) continue;  // K underflows to 0
          row_total += error <= tolerance ? std::exp(-estimate * g)
                                          : exact_kernel(va, item.i0 + r, vb, item.j0 + j);
        }
        total += row_total;
      }
    }
    sums[static_cast<size_t>(it)] = item.weight * total;
  });

  double s[3] = {0.0, 0.0, 0.0};
  for (size_t it = 0; it < items.size(); ++it) s[items[it].pair] += sums[it];
  MmdResult res;
  res.mean_kxx = s[0] / (static_cast<double>(n) * static_cast<double>(n));
  res.mean_kyy = s[1] / (static_cast<double>(m) * static_cast<double>(m));
  res.mean_kxy = s[2] / (static_cast<double>(n) * static_cast<double>(m));
  res.mmd = 100.0 * (res.mean_kxx + res.mean_kyy - 2.0 * res.mean_kxy);
  return res;
}

template MmdResult mmd(const MatrixView<float>&, const MatrixView<float>&, double, const MmdOptions&);
template MmdResult mmd(const MatrixView<double>&, const MatrixView<double>&, double, const MmdOptions&);

}  // namespace fastsas
