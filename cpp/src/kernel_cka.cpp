// Exact RBF-kernel CKA (biased and unbiased HSIC) from tiles of one GEMM per modality; see
// kernel_cka.hpp for the numerics and the order of the sums.
#include "fastsas/kernel_cka.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "fastsas/blas.hpp"
#include "fastsas/pairwise.hpp"
#include "fastsas/parallel.hpp"

namespace fastsas {

namespace {

// Per-row sums are added across tiles as integers, exactly, so the order in which workers add
// them does not matter: a tile's float64 partial v is split into a coarse part in units of
// 2^-64 (|v| < 2^63) and a fine part in units of 2^-164 (|fine| < 2^100, so 2^27 tiles per
// row cannot overflow it). Only bits of v below 2^-164 are dropped: kernel row sums keep
// their digits down to about 1e-33, where float32 kernels have long underflowed.
__extension__ typedef __int128 Wide;
constexpr double kCoarse = 18446744073709551616.0;  // 2^64
constexpr double kFine = 1267650600228229401496703205376.0;  // 2^100
constexpr Index kMaxTilesPerRow = Index{1} << 27;

struct Fixed {
  Wide coarse = 0, fine = 0;
  Fixed& operator+=(double v) {
    const double scaled = v * kCoarse;       // exact: a power of 2
    const double whole = std::trunc(scaled);
    coarse += static_cast<Wide>(whole);
    fine += static_cast<Wide>((scaled - whole) * kFine);  // scaled - whole is exact
    return *this;
  }
  Fixed& operator+=(const Fixed& o) {
    coarse += o.coarse;
    fine += o.fine;
    return *this;
  }
  double value() const { return static_cast<double>(coarse) / kCoarse + static_cast<double>(fine) / (kCoarse * kFine); }
};

// One modality's rows shifted by their mean (stored in T), -g |row|^2 per row, and the
// constant the tiles subtract from every kernel entry: offset = exp(pilot), pilot a typical
// argument -g |a - b|^2 (the median over the pairs of consecutive rows, in T).
template <class T>
struct ShiftedRows {
  std::vector<T> rows;
  std::vector<T> minus_g_norm;
  Index n = 0, d = 0;
  T pilot = 0, offset = 1;
  double diagonal = 0;  // K_ii - offset, as the tiles would compute it at argument 0
};

// Both estimators are unchanged by subtracting one constant from every kernel entry, so the
// tiles hold K - offset with the offset at the kernel's typical value: where all entries lie
// close to it (a large sigma, or the concentrated distances of high dimensions) they keep
// their digits. K - offset = offset expm1(z - pilot) near the pilot (|z - pilot| <= 1/2, the
// series), exp(z) - offset elsewhere (no cancellation there).
constexpr double kNearPilot = 0.5;

template <class T>
ShiftedRows<T> shift_by_mean(const MatrixView<T>& v, const char* input, double g, int threads) {
  ShiftedRows<T> out;
  out.n = v.rows;
  out.d = v.cols;
  out.rows = detail::pack_rows(v, input, false, threads);
  const Index n = out.n, d = out.d;
  constexpr Index kChunk = 4096;
  const long chunks = static_cast<long>((n + kChunk - 1) / kChunk);
  std::vector<Eigen::VectorXd> parts(static_cast<size_t>(chunks), Eigen::VectorXd::Zero(d));
  parallel_for(threads, chunks, [&](long c, int) {
    double* s = parts[static_cast<size_t>(c)].data();
    for (Index r = c * kChunk; r < std::min(n, (c + 1) * kChunk); ++r)
      for (Index k = 0; k < d; ++k) s[k] += static_cast<double>(out.rows[r * d + k]);
  });
  Eigen::VectorXd mean = Eigen::VectorXd::Zero(d);
  for (const auto& p : parts) mean += p;  // chunk order: independent of the thread count
  mean /= static_cast<double>(n);
  out.minus_g_norm.assign(static_cast<size_t>(n), T(0));
  parallel_for(threads, chunks, [&](long c, int) {
    for (Index r = c * kChunk; r < std::min(n, (c + 1) * kChunk); ++r) {
      T* row = out.rows.data() + r * d;
      double s = 0.0;
      for (Index k = 0; k < d; ++k) {
        row[k] = static_cast<T>(static_cast<double>(row[k]) - mean[k]);
        s = std::fma(static_cast<double>(row[k]), static_cast<double>(row[k]), s);
      }
      out.minus_g_norm[r] = static_cast<T>(-g * s);
    }
  });
  const Index pairs = std::min<Index>(n - 1, 2048);
  std::vector<double> args(static_cast<size_t>(pairs));
  for (Index i = 0; i < pairs; ++i) {
    double s = 0.0;
    for (Index k = 0; k < d; ++k) {
      const double e = static_cast<double>(out.rows[i * d + k]) - static_cast<double>(out.rows[(i + 1) * d + k]);
      s = std::fma(e, e, s);
    }
    args[i] = -g * s;
  }
  std::nth_element(args.begin(), args.begin() + pairs / 2, args.end());
  out.pilot = static_cast<T>(args[static_cast<size_t>(pairs / 2)]);
  out.offset = static_cast<T>(std::exp(static_cast<double>(out.pilot)));
  const double at_zero = -static_cast<double>(out.pilot);
  out.diagonal = std::abs(at_zero) <= kNearPilot ? static_cast<double>(out.offset) * std::expm1(at_zero)
                                                 : 1.0 - static_cast<double>(out.offset);
  return out;
}

struct TileItem {
  Index ib, jb;
};

struct TileSums {
  double kl = 0, kk = 0, ll = 0;  // over the pairs of the tile, each unordered pair once
};

template <class T>
struct CkaWorker {
  std::vector<T> tile_x, tile_y;
  // Padded, maximally aligned rows: the argument (then K - 1) and its exponential.
  Eigen::Array<T, Eigen::Dynamic, 1> arg_x, arg_y, exp_scratch;
  std::vector<double> col_k, col_l;
  std::vector<Fixed> row_k, row_l;  // per row of the whole set
};

// expm1(z) for |z| <= 1/2: the Taylor series in nested form z (1 + z/2 (1 + z/3 (1 + ...))),
// one fma per term, truncated where the next term is below the unit roundoff of T.
template <class T>
inline T expm1_small(T z) {
  constexpr int kTerms = std::numeric_limits<T>::digits > 24 ? 17 : 10;
  T p = T(1);
  for (int k = kTerms; k >= 2; --k) p = std::fma(z * (T(1) / static_cast<T>(k)), p, T(1));
  return z * p;
}

// K - offset for one row of a tile, from z = min(2 g a.b - g|a|^2 - g|b|^2, 0), written over
// `arg`. z is one fma per entry; exp runs on the whole padded scratch row (a multiple of every
// SIMD width, maximally aligned), so every entry is computed by the same instructions
// whichever worker computes it, and a row is a pure function of its inputs.
template <class T>
void kernel_row(const T* products, const T* minus_g_col, T minus_g_row, T two_g, Index cols, T pilot, T offset,
                Eigen::Array<T, Eigen::Dynamic, 1>& arg, Eigen::Array<T, Eigen::Dynamic, 1>& scratch) {
  T* __restrict z = arg.data();
  for (Index j = 0; j < cols; ++j) z[j] = std::min(std::fma(products[j], two_g, minus_g_col[j] + minus_g_row), T(0));
  for (Index j = cols; j < arg.size(); ++j) z[j] = T(0);
  using Map = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>, Eigen::AlignedMax>;
  Map(scratch.data(), arg.size()) = Map(z, arg.size()).exp();
  const T* __restrict e = scratch.data();
  const T near = static_cast<T>(kNearPilot);
  // Below the normal range exp is 0 by definition: Eigen's vectorised exp clamps its argument
  // (to about -88.4 for float in its AVX2 code: 1.2e-38, not 0) and other SIMD paths flush or
  // keep subnormals, so without this cut an underflowed kernel would depend on the CPU.
  const T lowest = static_cast<T>(std::log(static_cast<double>(std::numeric_limits<T>::min())));
  for (Index j = 0; j < cols; ++j) {
    const T w = z[j] - pilot;
    z[j] = std::abs(w) <= near ? offset * expm1_small(w) : (z[j] < lowest ? T(0) : e[j]) - offset;
  }
}

}  // namespace

template <class T>
RbfCkaResult rbf_cka(const MatrixView<T>& x, const MatrixView<T>& y, double sigma_x, double sigma_y,
                     const RbfCkaOptions& options) {
  const Index n = x.rows;
  if (y.rows != n) throw std::invalid_argument("x and y must have the same number of rows (paired)");
  if (n < 4) throw std::invalid_argument("RBF CKA needs at least 4 rows, got " + std::to_string(n));
  if (x.cols < 1 || y.cols < 1) throw std::invalid_argument("x and y must have at least one column");
  for (double s : {sigma_x, sigma_y})
    if (!(s > 0.0) || !std::isfinite(s)) throw std::invalid_argument("sigma must be a finite number > 0");
  const int threads = std::max(1, options.threads);
  const Index tile = options.tile > 0 ? options.tile : kRbfCkaTile;
  blas::use_calling_thread_only();

  const double gx = 1.0 / (2.0 * sigma_x * sigma_x), gy = 1.0 / (2.0 * sigma_y * sigma_y);
  const ShiftedRows<T> sx = shift_by_mean(x, "x", gx, threads);
  const ShiftedRows<T> sy = shift_by_mean(y, "y", gy, threads);
  const T two_gx = static_cast<T>(2.0 * gx), two_gy = static_cast<T>(2.0 * gy);

  const Index blocks = (n + tile - 1) / tile;
  if (blocks > kMaxTilesPerRow) throw std::invalid_argument("tile is too small for this many rows");
  std::vector<TileItem> items;
  for (Index ib = 0; ib < blocks; ++ib)
    for (Index jb = ib; jb < blocks; ++jb) items.push_back({ib, jb});
  const int workers = static_cast<int>(std::max<long>(1, std::min<long>(threads, static_cast<long>(items.size()))));
  constexpr Index kPad = 16;
  const Index width = std::min(tile, n);
  const Index padded = (width + kPad - 1) / kPad * kPad;
  std::vector<CkaWorker<T>> ws(static_cast<size_t>(workers));
  for (auto& w : ws) {
    w.tile_x.resize(static_cast<size_t>(width * width));
    w.tile_y.resize(static_cast<size_t>(width * width));
    w.arg_x = Eigen::Array<T, Eigen::Dynamic, 1>::Zero(padded);
    w.arg_y = Eigen::Array<T, Eigen::Dynamic, 1>::Zero(padded);
    w.exp_scratch = Eigen::Array<T, Eigen::Dynamic, 1>::Zero(padded);
    w.row_k.assign(static_cast<size_t>(n), Fixed{});
    w.row_l.assign(static_cast<size_t>(n), Fixed{});
  }
  std::vector<TileSums> sums(items.size());

  parallel_for(workers, static_cast<long>(items.size()), [&](long it, int wid) {
    CkaWorker<T>& w = ws[static_cast<size_t>(wid)];
    const TileItem& item = items[static_cast<size_t>(it)];
    const Index i0 = item.ib * tile, j0 = item.jb * tile;
    const Index rows = std::min(tile, n - i0), cols = std::min(tile, n - j0);
    const bool diagonal = item.ib == item.jb;
    detail::gemm_nt(rows, cols, sx.d, sx.rows.data() + i0 * sx.d, sx.d, sx.rows.data() + j0 * sx.d, sx.d,
                    w.tile_x.data(), cols);
    detail::gemm_nt(rows, cols, sy.d, sy.rows.data() + i0 * sy.d, sy.d, sy.rows.data() + j0 * sy.d, sy.d,
                    w.tile_y.data(), cols);
    w.col_k.assign(static_cast<size_t>(cols), 0.0);
    w.col_l.assign(static_cast<size_t>(cols), 0.0);
    TileSums t;
    for (Index r = 0; r < rows; ++r) {
      const Index begin = diagonal ? r + 1 : 0;  // the strict upper triangle of a diagonal tile
      if (begin >= cols) continue;
      kernel_row(w.tile_x.data() + r * cols, sx.minus_g_norm.data() + j0, sx.minus_g_norm[i0 + r], two_gx, cols,
                 sx.pilot, sx.offset, w.arg_x, w.exp_scratch);
      kernel_row(w.tile_y.data() + r * cols, sy.minus_g_norm.data() + j0, sy.minus_g_norm[i0 + r], two_gy, cols,
                 sy.pilot, sy.offset, w.arg_y, w.exp_scratch);
      const T* __restrict kx = w.arg_x.data();
      const T* __restrict ky = w.arg_y.data();
      double* __restrict ck = w.col_k.data();
      double* __restrict cl = w.col_l.data();
      double kl = 0.0, kk = 0.0, ll = 0.0, rk = 0.0, rl = 0.0;
      for (Index j = begin; j < cols; ++j) {
        const double a = static_cast<double>(kx[j]), b = static_cast<double>(ky[j]);
        kl = std::fma(a, b, kl);
        kk = std::fma(a, a, kk);
        ll = std::fma(b, b, ll);
        rk += a;
        rl += b;
        ck[j] += a;
        cl[j] += b;
      }
      t.kl += kl;
      t.kk += kk;
      t.ll += ll;
      w.row_k[static_cast<size_t>(i0 + r)] += rk;
      w.row_l[static_cast<size_t>(i0 + r)] += rl;
    }
    for (Index j = 0; j < cols; ++j) {
      w.row_k[static_cast<size_t>(j0 + j)] += w.col_k[j];
      w.row_l[static_cast<size_t>(j0 + j)] += w.col_l[j];
    }
    sums[static_cast<size_t>(it)] = t;
  });

  // Every unordered pair i != j was counted once: the sums over i != j are twice that.
  HsicSums kl, kk, ll;
  for (const TileSums& t : sums) {
    kl.trace += 2.0 * t.kl;
    kk.trace += 2.0 * t.kk;
    ll.trace += 2.0 * t.ll;
  }
  double sum_k = 0, sum_l = 0, kl_rows = 0, kk_rows = 0, ll_rows = 0;
  for (Index i = 0; i < n; ++i) {
    Fixed fk, fl;
    for (const auto& w : ws) {
      fk += w.row_k[static_cast<size_t>(i)];
      fl += w.row_l[static_cast<size_t>(i)];
    }
    const double a = fk.value(), b = fl.value();
    sum_k += a;
    sum_l += b;
    kl_rows += a * b;
    kk_rows += a * a;
    ll_rows += b * b;
  }
  kl.sum_k = kk.sum_k = kk.sum_l = sum_k;
  kl.sum_l = ll.sum_k = ll.sum_l = sum_l;
  kl.col_k_row_l = kl.col_l_row_k = kl_rows;
  kk.col_k_row_l = kk.col_l_row_k = kk_rows;
  ll.col_k_row_l = ll.col_l_row_k = ll_rows;

  // The biased estimator also sees the diagonal, K_ii - offset = sx.diagonal for every i.
  const double nd = static_cast<double>(n), dx = sx.diagonal, dy = sy.diagonal;
  const auto with_diagonal = [&](HsicSums s, double dk, double dl) {
    s.trace += nd * dk * dl;
    s.col_k_row_l += dk * s.sum_l + dl * s.sum_k + nd * dk * dl;  // sum_i (k_i + dk)(l_i + dl)
    s.col_l_row_k = s.col_k_row_l;
    s.sum_k += nd * dk;
    s.sum_l += nd * dl;
    return s;
  };
  RbfCkaResult out;
  out.rows = n;
  out.biased = hsic_terms(hsic_biased(with_diagonal(kl, dx, dy), n), hsic_biased(with_diagonal(kk, dx, dx), n),
                          hsic_biased(with_diagonal(ll, dy, dy), n));
  out.unbiased = hsic_terms(hsic_unbiased(kl, n), hsic_unbiased(kk, n), hsic_unbiased(ll, n));
  return out;
}

template RbfCkaResult rbf_cka(const MatrixView<float>&, const MatrixView<float>&, double, double,
                              const RbfCkaOptions&);
template RbfCkaResult rbf_cka(const MatrixView<double>&, const MatrixView<double>&, double, double,
                              const RbfCkaOptions&);

}  // namespace fastsas
