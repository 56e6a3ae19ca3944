// Exact biased RBF MMD, blocked and fused: per tile one GEMM, then exp and a float64 sum of
// the tile in the same pass. Tiles are listed once (K(x,x) and K(y,y): on and above the
// diagonal, off-diagonal tiles weighted 2; K(x,y): all), each tile's sum is stored in its
// slot, and the slots are added in list order: the same bits for any thread count.
#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "fastsas/blas.hpp"
#include "fastsas/pairwise.hpp"
#include "fastsas/parallel.hpp"

namespace fastsas {

namespace {

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

  std::vector<T> xs = detail::pack_rows(x, "x", false, threads);
  std::vector<T> ys = detail::pack_rows(y, "y", false, threads);

  // Shift both sets by their joint mean (fixed-order chunk sums), then keep squared norms of
  // the shifted rows as they will be multiplied.
  constexpr Index kChunk = 4096;
  auto chunk_sums = [&](const std::vector<T>& a, Index rows) {
    const long chunks = static_cast<long>((rows + kChunk - 1) / kChunk);
    std::vector<Eigen::VectorXd> parts(static_cast<size_t>(chunks), Eigen::VectorXd::Zero(d));
    parallel_for(threads, chunks, [&](long c, int) {
      const Index r1 = std::min(rows, (c + 1) * kChunk);
      double* s = parts[static_cast<size_t>(c)].data();
      for (Index r = c * kChunk; r < r1; ++r)
        for (Index k = 0; k < d; ++k) s[k] += static_cast<double>(a[r * d + k]);
    });
    Eigen::VectorXd total = Eigen::VectorXd::Zero(d);
    for (const auto& p : parts) total += p;
    return total;
  };
  const Eigen::VectorXd shift = (chunk_sums(xs, n) + chunk_sums(ys, m)) / static_cast<double>(n + m);
  auto center = [&](std::vector<T>& a, Index rows, std::vector<double>& sq) {
    sq.assign(static_cast<size_t>(rows), 0.0);
    const long chunks = static_cast<long>((rows + kChunk - 1) / kChunk);
    parallel_for(threads, chunks, [&](long c, int) {
      const Index r1 = std::min(rows, (c + 1) * kChunk);
      for (Index r = c * kChunk; r < r1; ++r) {
        T* row = a.data() + r * d;
        double s = 0.0;
        for (Index k = 0; k < d; ++k) {
          row[k] = static_cast<T>(static_cast<double>(row[k]) - shift[k]);
          s += static_cast<double>(row[k]) * static_cast<double>(row[k]);
        }
        sq[r] = s;
      }
    });
  };
  std::vector<double> sqx, sqy;
  center(xs, n, sqx);
  center(ys, m, sqy);

  // K(a, b) = exp(2g a.b - g|a|^2 - g|b|^2), argument clipped at 0 (distances are >= 0).
  const double g = 1.0 / (2.0 * sigma * sigma);
  std::vector<T> hx(static_cast<size_t>(n)), hy(static_cast<size_t>(m));
  for (Index i = 0; i < n; ++i) hx[i] = static_cast<T>(-g * sqx[i]);
  for (Index j = 0; j < m; ++j) hy[j] = static_cast<T>(-g * sqy[j]);
  const T two_g = static_cast<T>(2.0 * g);

  std::vector<TileItem> items;
  for (int pair = 0; pair < 2; ++pair) {
    const Index rows = pair == 0 ? n : m;
    for (Index i0 = 0; i0 < rows; i0 += tile)
      for (Index j0 = i0; j0 < rows; j0 += tile) items.push_back({pair, i0, j0, j0 == i0 ? 1.0 : 2.0});
  }
  for (Index i0 = 0; i0 < n; i0 += tile)
    for (Index j0 = 0; j0 < m; j0 += tile) items.push_back({2, i0, j0, 1.0});

  const int workers = static_cast<int>(std::max<long>(1, std::min<long>(threads, static_cast<long>(items.size()))));
  using Array = Eigen::Array<T, Eigen::Dynamic, 1>;
  // exp runs on a padded, maximally aligned scratch row whose length is a multiple of every
  // SIMD width: Eigen then evaluates every element with the same packet code, never a
  // scalar peel or tail chosen by a buffer's address, so the bits do not depend on which
  // worker computed a tile.
  constexpr Index kPad = 16;
  const Index padded = (std::min(tile, std::max(n, m)) + kPad - 1) / kPad * kPad;
  std::vector<std::vector<T>> buffers(static_cast<size_t>(workers));
  std::vector<Array> scratch(static_cast<size_t>(workers), Array::Zero(padded));
  std::vector<double> sums(items.size(), 0.0);
  parallel_for(workers, static_cast<long>(items.size()), [&](long it, int wid) {
    const TileItem& item = items[static_cast<size_t>(it)];
    const std::vector<T>& a = item.pair == 1 ? ys : xs;
    const std::vector<T>& b = item.pair == 0 ? xs : ys;
    const std::vector<T>& ha = item.pair == 1 ? hy : hx;
    const std::vector<T>& hb = item.pair == 0 ? hx : hy;
    const Index na = item.pair == 1 ? m : n, nb = item.pair == 0 ? n : m;
    const Index rows = std::min(tile, na - item.i0), cols = std::min(tile, nb - item.j0);
    std::vector<T>& buf = buffers[static_cast<size_t>(wid)];
    buf.resize(static_cast<size_t>(tile * tile));
    detail::gemm_nt(rows, cols, d, a.data() + item.i0 * d, d, b.data() + item.j0 * d, d, buf.data(), cols);
    Array& arg = scratch[static_cast<size_t>(wid)];
    T* __restrict z = arg.data();
    const T* __restrict hcol = hb.data() + item.j0;
    const Index width = (cols + kPad - 1) / kPad * kPad;
    Eigen::Map<Array, Eigen::AlignedMax> kernel(z, width);
    double total = 0.0;
    for (Index r = 0; r < rows; ++r) {
      const T* __restrict c = buf.data() + r * cols;
      const T hr = ha[item.i0 + r];
      for (Index j = 0; j < cols; ++j) z[j] = std::min(c[j] * two_g + (hcol[j] + hr), T(0));
      for (Index j = cols; j < width; ++j) z[j] = T(0);
      kernel = kernel.exp();
      total += sum_f64(z, cols);
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
