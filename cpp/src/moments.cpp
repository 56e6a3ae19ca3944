#include "fastsas/moments.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <type_traits>

#include "fastsas/blas.hpp"
#include "fastsas/memory.hpp"
#include "fastsas/parallel.hpp"

namespace fastsas {

namespace {

std::string describe_rows(const std::string& problem, const std::vector<Index>& rows, Index total) {
  std::ostringstream out;
  out << problem << " in " << total << (total == 1 ? " row" : " rows") << ": ";
  for (size_t i = 0; i < rows.size(); ++i) out << (i ? ", " : "") << rows[i];
  if (total > static_cast<Index>(rows.size())) out << ", ...";
  return out.str();
}

// Per-worker scratch for one block: the shifted rows, their float product, and the
// block's O(n d) sums. Reused across waves.
template <class T>
struct BlockScratch {
  std::vector<T> rows;
  std::vector<T> product;
  Eigen::VectorXd sum;
  Eigen::VectorXd unit_sum;
  double cosine_sum = 0.0;
  bool bad = false;
  std::vector<T> column_max;  // max |shifted value| per column of the block
  std::vector<int> exponents;  // per column: the block's rows hold value * 2^-e (empty: unscaled)
  NormMoments norm;
};

// Squared row norms below this (and not zero) are refused: the second moments of such a row
// underflow float64. float32 rows never come near it (their smallest square is ~2e-90).
constexpr double kMinSquaredNorm = 1e-290;

enum RowProblem { kRowOk = -1, kNonFinite = 0, kTooLarge = 1, kTooSmall = 2, kZeroNorm = 3 };
// Indexed by RowProblem (moments.hpp words them for every engine).
const char* const kRowProblems[] = {kNonFiniteRows, kTooLargeRows, kTooSmallRows, kZeroNormRows};

// What is wrong with a row, from its squared norm in float64 (`all_finite`, `nonzero`: of its
// values; only consulted on the slow paths).
inline RowProblem row_problem(double squared_norm, bool all_finite, bool nonzero, bool track_unit_rows) {
  if (!all_finite) return kNonFinite;
  if (!std::isfinite(squared_norm)) return kTooLarge;
  if (squared_norm >= kMinSquaredNorm) return kRowOk;
  if (nonzero) return kTooSmall;
  return track_unit_rows ? kZeroNorm : kRowOk;
}

template <class T>
bool any_nonzero(const T* r, Index stride, Index dim) {
  for (Index j = 0; j < dim; ++j)
    if (r[j * stride] != T(0)) return true;
  return false;
}

// Whether a block's float products of these column maxima neither overflow T (a block sums
// kBlockRows products) nor lose digits to underflow; otherwise the block is rescaled.
template <class T>
bool block_in_range(const std::vector<T>& column_max) {
  constexpr int kHigh = std::numeric_limits<T>::max_exponent / 2 - 8;   // float: 2^56
  constexpr int kLow = std::numeric_limits<T>::min_exponent / 2 + 12;   // float: 2^-50
  const T high = std::ldexp(T(1), kHigh), low = std::ldexp(T(1), kLow);
  for (const T m : column_max)
    if (!(m <= high) || (m != T(0) && m < low)) return false;
  return true;
}

// Rewrites a block whose products would overflow or underflow T: column j holds its shifted
// values times 2^-e_j (e_j: the exponent of the column's largest magnitude), so every product
// is computed in range, and the sums are redone from the rescaled values so that they still
// describe exactly what is multiplied. Rare (only extreme magnitudes reach it).
template <class T>
void rescale_block(const MatrixView<T>& x, const MatrixView<T>& y, const Index* rows, Index r0, Index r1,
                   Index dim, const double* pilot, BlockScratch<T>& s) {
  const Index width = 2 * dim;
  auto shifted = [&](Index r, Index j) {
    return (j < dim ? static_cast<double>(x(r, j)) : static_cast<double>(y(r, j - dim))) - pilot[j];
  };
  std::vector<double> maxima(static_cast<size_t>(width), 0.0);
  for (Index i = r0; i < r1; ++i) {
    const Index r = rows ? rows[i] : i;
    for (Index j = 0; j < width; ++j) maxima[j] = std::max(maxima[j], std::abs(shifted(r, j)));
  }
  s.exponents.assign(static_cast<size_t>(width), 0);
  for (Index j = 0; j < width; ++j)
    if (maxima[j] > 0.0) s.exponents[j] = std::ilogb(maxima[j]);
  s.sum.setZero(width);
  for (Index i = r0; i < r1; ++i) {
    const Index r = rows ? rows[i] : i;
    T* z = s.rows.data() + (i - r0) * width;
    for (Index j = 0; j < width; ++j) {
      const T v = static_cast<T>(std::ldexp(shifted(r, j), -s.exponents[j]));
      z[j] = v;
      s.sum[j] += std::ldexp(static_cast<double>(v), s.exponents[j]);
    }
  }
}

// Adds a shifted row pair's fourth-order terms (NormMoments) to the block's.
template <class T>
void add_norm_moments(const T* z, Index dim, NormMoments& norm) {
  double a = 0.0, b = 0.0;
  for (Index j = 0; j < dim; ++j) {
    a += static_cast<double>(z[j]) * static_cast<double>(z[j]);
    b += static_cast<double>(z[dim + j]) * static_cast<double>(z[dim + j]);
  }
  norm.products += Eigen::Vector3d(a * a, a * b, b * b);
  double* wa = norm.weighted.data();
  double* wb = wa + 2 * dim;
  for (Index j = 0; j < 2 * dim; ++j) {
    wa[j] += a * static_cast<double>(z[j]);
    wb[j] += b * static_cast<double>(z[j]);
  }
}

// Copies one row pair into the shifted block and adds its sums. Returns false for a row
// the metrics cannot use (non-finite, too large or too small for float64 second moments, or
// zero-norm when unit rows count).
template <class T>
bool absorb_row(const T* xr, Index xs, const T* yr, Index ys, Index dim, const double* pilot,
                T* z, BlockScratch<T>& s, bool track_unit_rows) {
  double nx = 0.0, ny = 0.0, xy = 0.0;
  T* const cmax = s.column_max.data();
  if (xs == 1 && ys == 1) {
    for (Index j = 0; j < dim; ++j) {
      const double xv = static_cast<double>(xr[j]), yv = static_cast<double>(yr[j]);
      const T zx = static_cast<T>(xv - pilot[j]), zy = static_cast<T>(yv - pilot[dim + j]);
      z[j] = zx;
      z[dim + j] = zy;
      cmax[j] = std::max(cmax[j], std::abs(zx));
      cmax[dim + j] = std::max(cmax[dim + j], std::abs(zy));
      nx += xv * xv;
      ny += yv * yv;
      xy += xv * yv;
    }
  } else {
    for (Index j = 0; j < dim; ++j) {
      const double xv = static_cast<double>(xr[j * xs]), yv = static_cast<double>(yr[j * ys]);
      const T zx = static_cast<T>(xv - pilot[j]), zy = static_cast<T>(yv - pilot[dim + j]);
      z[j] = zx;
      z[dim + j] = zy;
      cmax[j] = std::max(cmax[j], std::abs(zx));
      cmax[dim + j] = std::max(cmax[dim + j], std::abs(zy));
      nx += xv * xv;
      ny += yv * yv;
      xy += xv * yv;
    }
  }
  // A NaN or Inf anywhere in the row makes its squared norm non-finite; so does overflow.
  if (!std::isfinite(nx) || !std::isfinite(ny)) return false;
  if ((nx < kMinSquaredNorm &&
       row_problem(nx, true, any_nonzero(xr, xs, dim), track_unit_rows) != kRowOk) ||
      (ny < kMinSquaredNorm &&
       row_problem(ny, true, any_nonzero(yr, ys, dim), track_unit_rows) != kRowOk))
    return false;
  double* sum = s.sum.data();
  for (Index j = 0; j < 2 * dim; ++j) sum[j] += static_cast<double>(z[j]);
  add_norm_moments(z, dim, s.norm);
  if (track_unit_rows) {
    const double ix = 1.0 / std::sqrt(nx), iy = 1.0 / std::sqrt(ny);
    double* unit = s.unit_sum.data();
    if (xs == 1 && ys == 1) {
      for (Index j = 0; j < dim; ++j) {
        unit[j] += static_cast<double>(xr[j]) * ix;
        unit[dim + j] += static_cast<double>(yr[j]) * iy;
      }
    } else {
      for (Index j = 0; j < dim; ++j) {
        unit[j] += static_cast<double>(xr[j * xs]) * ix;
        unit[dim + j] += static_cast<double>(yr[j * ys]) * iy;
      }
    }
    s.cosine_sum += xy * ix * iy;
  }
  return true;
}

// The slow, exact account of what is wrong, run only once a block has found a bad row.
template <class T>
[[noreturn]] void throw_bad_rows(const MatrixView<T>& x, const MatrixView<T>& y, bool track_unit_rows) {
  struct Finding { std::string input, problem; std::vector<Index> rows; Index total = 0; };
  Finding findings[8];  // problem p of input k at 2 p + k: the first problems are reported first
  for (int p = 0; p < 4; ++p)
    for (int k = 0; k < 2; ++k) findings[2 * p + k] = {k ? "y" : "x", kRowProblems[p], {}, 0};
  for (Index r = 0; r < x.rows; ++r) {
    bool finite[2] = {true, true}, nonzero[2] = {false, false};
    double norm[2] = {0.0, 0.0};
    for (Index j = 0; j < x.cols; ++j) {
      const double v[2] = {static_cast<double>(x(r, j)), static_cast<double>(y(r, j))};
      for (int k = 0; k < 2; ++k) {
        finite[k] = finite[k] && std::isfinite(v[k]);
        nonzero[k] = nonzero[k] || v[k] != 0.0;
        norm[k] += v[k] * v[k];
      }
    }
    for (int k = 0; k < 2; ++k) {
      const RowProblem p = row_problem(norm[k], finite[k], nonzero[k], track_unit_rows);
      if (p == kRowOk) continue;
      Finding* f = &findings[2 * p + k];
      if (f->rows.size() < kBadRowsShown) f->rows.push_back(r);
      ++f->total;
    }
  }
  for (auto& f : findings)
    if (f.total) throw BadRowsError(f.input, f.problem, f.rows, f.total);
  throw std::logic_error("fastsas: a block reported a bad row that a rescan did not find");
}

}  // namespace

BadRowsError::BadRowsError(std::string input, std::string problem, std::vector<Index> rows, Index total)
    : std::invalid_argument(describe_rows(problem, rows, total)),
      input_(std::move(input)),
      problem_(std::move(problem)),
      rows_(std::move(rows)),
      total_(total) {}

namespace {

// The dim, checked before anything is allocated for it.
Index checked_dim(Index dim, Index states) {
  if (dim < 1) throw std::invalid_argument("dim must be at least 1");
  const double bytes = static_cast<double>(states) * Moments::state_bytes(dim);
  require_memory((states == 1 ? std::string("the state of Moments(dim=") + std::to_string(dim) + ")"
                              : "the states of " + std::to_string(states) + " Moments(dim=" + std::to_string(dim) + ")") +
                     " (float64 second moments of 2 dim x 2 dim)",
                 bytes, "use a smaller dim (e.g. project the embeddings with PCA) or a machine with more memory");
  return dim;
}

}  // namespace

double Moments::state_bytes(Index dim) {
  const double width = 2.0 * static_cast<double>(dim);
  return 8.0 * width * (width + 6.0) + 24.0;  // scatter, four vectors, the fourth-order sums
}

Moments::Moments(Index dim, bool track_unit_rows)
    : dim_(checked_dim(dim, 1)),
      track_unit_rows_(track_unit_rows),
      pilot_(Eigen::VectorXd::Zero(2 * dim)),
      shifted_sum_(Eigen::VectorXd::Zero(2 * dim)),
      shifted_scatter_(allocating("the state of Moments(dim=" + std::to_string(dim) + ")", state_bytes(dim),
                                  [&] { return Eigen::MatrixXd(Eigen::MatrixXd::Zero(2 * dim, 2 * dim)); })),
      unit_sum_(Eigen::VectorXd::Zero(2 * dim)) {
  norm_moments_.weighted = Eigen::MatrixXd::Zero(2 * dim, 2);
}

template <class T>
void Moments::set_pilot(const MatrixView<T>& x, const MatrixView<T>& y, const Index* rows, Index count) {
  const Index used = std::min<Index>(count, kBlockRows);
  Eigen::VectorXd p = Eigen::VectorXd::Zero(2 * dim_);
  for (Index i = 0; i < used; ++i) {
    const Index r = rows ? rows[i] : i;
    for (Index j = 0; j < dim_; ++j) {
      p[j] += static_cast<double>(x(r, j));
      p[dim_ + j] += static_cast<double>(y(r, j));
    }
  }
  p /= static_cast<double>(used);
  // The shift must be exactly representable in the block's precision, so that the
  // sums of shifted values describe exactly the values that were multiplied.
  for (Index j = 0; j < 2 * dim_; ++j) p[j] = static_cast<double>(static_cast<T>(p[j]));
  pilot_ = p;
}

template <class T>
void Moments::update(const MatrixView<T>& x, const MatrixView<T>& y, int threads) {
  accumulate(x, y, nullptr, x.rows, threads);
}

template <class T>
void Moments::update_rows(const MatrixView<T>& x, const MatrixView<T>& y, const Index* rows, Index count,
                          int threads) {
  for (Index i = 0; i < count; ++i)
    if (rows[i] < 0 || rows[i] >= x.rows)
      throw std::out_of_range("row index " + std::to_string(rows[i]) + " is outside the " +
                              std::to_string(x.rows) + " rows of x");
  accumulate(x, y, rows, count, threads);
}

template <class T>
void Moments::accumulate(const MatrixView<T>& x, const MatrixView<T>& y, const Index* rows, Index count,
                         int threads) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  if (x.cols != dim_ || y.cols != dim_)
    throw std::invalid_argument("x and y must have " + std::to_string(dim_) + " columns");
  if (x.rows != y.rows) throw std::invalid_argument("x and y must have the same number of rows");
  const Index n = count;
  if (n == 0) return;
  threads = std::max(1, threads);
  blas::use_calling_thread_only();

  const bool first_chunk = !has_pilot_;
  const Eigen::VectorXd saved_pilot = pilot_;
  if (first_chunk) set_pilot(x, y, rows, count);

  const Index width = 2 * dim_;
  const Index blocks = (n + kBlockRows - 1) / kBlockRows;
  // A chunk of several blocks is summed apart (upper triangle, packed by column) and added at
  // the end, so a bad row in a late block, or a stop, leaves the state untouched; a one-block
  // chunk is checked before it is added.
  const bool direct = blocks == 1;
  const Index block_rows = std::min<Index>(n, kBlockRows);
  const double packed_bytes = direct ? 0.0 : 8.0 * static_cast<double>(width) * static_cast<double>(width + 1) / 2;
  const double slot_bytes = static_cast<double>(sizeof(T)) * static_cast<double>(width) *
                            static_cast<double>(width + block_rows);
  // Fewer blocks side by side when memory is short: the result does not depend on it.
  int slots = static_cast<int>(std::min<Index>(threads, blocks));
  while (slots > 1 && !memory_fits(packed_bytes + slots * slot_bytes)) --slots;
  require_memory("Moments.update at dim " + std::to_string(dim_) + " (" +
                     (direct ? std::string() : format_bytes(packed_bytes) + " for the chunk's second moments, ") +
                     format_bytes(slot_bytes) + " per block of " + std::to_string(block_rows) + " rows, " +
                     std::to_string(slots) + (slots == 1 ? " block" : " blocks") + " at a time)",
                 packed_bytes + slots * slot_bytes,
                 "use a smaller dim (e.g. project the embeddings with PCA) or a machine with more memory");

  std::vector<double> delta_scatter;
  Eigen::VectorXd delta_sum, delta_unit;
  double delta_cosine = 0.0;
  NormMoments delta_norm;
  if (!direct) {
    allocating("the chunk's second moments", packed_bytes,
               [&] { delta_scatter.assign(static_cast<size_t>(width * (width + 1) / 2), 0.0); });
    delta_norm.weighted = Eigen::MatrixXd::Zero(width, 2);
    delta_sum = Eigen::VectorXd::Zero(width);
    delta_unit = Eigen::VectorXd::Zero(width);
  }
  Eigen::VectorXd& sum = direct ? shifted_sum_ : delta_sum;
  Eigen::VectorXd& unit = direct ? unit_sum_ : delta_unit;
  double& cosine = direct ? matched_cosine_sum_ : delta_cosine;
  NormMoments& norm = direct ? norm_moments_ : delta_norm;

  std::vector<BlockScratch<T>> scratch(static_cast<size_t>(slots));
  const double* pilot = pilot_.data();

  try {
    allocating("Moments.update's block buffers", slots * slot_bytes, [&] {
      for (auto& s : scratch) {
        s.rows.resize(static_cast<size_t>(block_rows * width));
        s.product.resize(static_cast<size_t>(width * width));
      }
    });
    for (Index wave_start = 0; wave_start < blocks; wave_start += slots) {
      const Index wave_blocks = std::min<Index>(slots, blocks - wave_start);
      parallel_for(slots, wave_blocks, [&](long slot, int) {
        BlockScratch<T>& s = scratch[static_cast<size_t>(slot)];
        const Index r0 = (wave_start + slot) * kBlockRows;
        const Index r1 = std::min(n, r0 + kBlockRows);
        s.sum.setZero(width);
        s.unit_sum.setZero(width);
        s.cosine_sum = 0.0;
        s.bad = false;
        s.column_max.assign(static_cast<size_t>(width), T(0));
        s.exponents.clear();
        s.norm.products.setZero();
        s.norm.weighted.setZero(width, 2);
        for (Index i = r0; i < r1; ++i) {
          const Index r = rows ? rows[i] : i;
          T* z = s.rows.data() + (i - r0) * width;
          if (!absorb_row(x.data + r * x.row_stride, x.col_stride, y.data + r * y.row_stride,
                          y.col_stride, dim_, pilot, z, s, track_unit_rows_)) {
            s.bad = true;
            return;
          }
        }
        if (!block_in_range(s.column_max)) rescale_block(x, y, rows, r0, r1, dim_, pilot, s);
        blas::syrk_rows_upper(static_cast<int>(width), static_cast<int>(r1 - r0), s.rows.data(),
                              static_cast<int>(width), s.product.data(), static_cast<int>(width));
      });
      for (Index b = 0; b < wave_blocks; ++b)
        if (scratch[static_cast<size_t>(b)].bad) throw_bad_rows(x, y, track_unit_rows_);

      // Fixed order: every element receives the blocks in block order, whoever adds them. A
      // rescaled block is scaled back exactly (powers of two) on the way into float64.
      parallel_for(
          slots, width,
          [&](long col, int) {
            double* target = direct ? shifted_scatter_.data() + col * width : delta_scatter.data() + col * (col + 1) / 2;
            for (Index b = 0; b < wave_blocks; ++b) {
              const BlockScratch<T>& sb = scratch[static_cast<size_t>(b)];
              const T* source = sb.product.data() + col * width;
              if (sb.exponents.empty()) {
                for (Index i = 0; i <= col; ++i) target[i] += static_cast<double>(source[i]);
              } else {
                const int ec = sb.exponents[static_cast<size_t>(col)];
                for (Index i = 0; i <= col; ++i)
                  target[i] += std::ldexp(static_cast<double>(source[i]), sb.exponents[static_cast<size_t>(i)] + ec);
              }
            }
          },
          direct ? Stop::never : Stop::between_items);
      for (Index b = 0; b < wave_blocks; ++b) {
        const BlockScratch<T>& s = scratch[static_cast<size_t>(b)];
        sum += s.sum;
        unit += s.unit_sum;
        cosine += s.cosine_sum;
        norm.products += s.norm.products;
        norm.weighted += s.norm.weighted;
      }
    }
  } catch (...) {
    if (first_chunk) pilot_ = saved_pilot;
    throw;
  }

  if (!direct) {
    for (Index col = 0; col < width; ++col) {
      const double* source = delta_scatter.data() + col * (col + 1) / 2;
      double* target = shifted_scatter_.data() + col * width;
      for (Index i = 0; i <= col; ++i) target[i] += source[i];
    }
    shifted_sum_ += delta_sum;
    unit_sum_ += delta_unit;
    matched_cosine_sum_ += delta_cosine;
    norm_moments_.products += delta_norm.products;
    norm_moments_.weighted += delta_norm.weighted;
  }
  has_pilot_ = true;
  count_ += n;
}

template void Moments::update<float>(const MatrixView<float>&, const MatrixView<float>&, int);
template void Moments::update<double>(const MatrixView<double>&, const MatrixView<double>&, int);
template void Moments::update_rows<float>(const MatrixView<float>&, const MatrixView<float>&, const Index*,
                                          Index, int);
template void Moments::update_rows<double>(const MatrixView<double>&, const MatrixView<double>&,
                                           const Index*, Index, int);

MomentsGroups::MomentsGroups(Index groups, Index dim, bool track_unit_rows) : dim_(dim) {
  if (groups < 1) throw std::invalid_argument("groups must be at least 1");
  checked_dim(dim, groups + 1);
  allocating("the states of " + std::to_string(groups) + " Moments(dim=" + std::to_string(dim) + ")",
             static_cast<double>(groups) * Moments::state_bytes(dim),
             [&] { groups_.assign(static_cast<size_t>(groups), Moments(dim, track_unit_rows)); });
}

template <class T>
void MomentsGroups::update(const MatrixView<T>& x, const MatrixView<T>& y, const std::int32_t* codes,
                           int threads) {
  if (x.rows != y.rows) throw std::invalid_argument("x and y must have the same number of rows");
  const Index k = size();
  // Counting sort: each group's rows in ascending order, so its blocks keep a fixed order.
  std::vector<Index> start(static_cast<size_t>(k) + 1, 0);
  for (Index r = 0; r < x.rows; ++r) {
    const std::int32_t c = codes[r];
    if (c < 0 || c >= k)
      throw std::out_of_range("group code " + std::to_string(c) + " of row " + std::to_string(r) +
                              " is outside [0, " + std::to_string(k) + ")");
    ++start[static_cast<size_t>(c) + 1];
  }
  for (Index g = 0; g < k; ++g) start[static_cast<size_t>(g) + 1] += start[static_cast<size_t>(g)];
  std::vector<Index> order(static_cast<size_t>(x.rows));
  std::vector<Index> fill(start.begin(), start.end() - 1);
  for (Index r = 0; r < x.rows; ++r) order[static_cast<size_t>(fill[static_cast<size_t>(codes[r])]++)] = r;
  for (Index g = 0; g < k; ++g) {
    const Index a = start[static_cast<size_t>(g)], b = start[static_cast<size_t>(g) + 1];
    if (b > a) groups_[static_cast<size_t>(g)].update_rows(x, y, order.data() + a, b - a, threads);
  }
}

template void MomentsGroups::update<float>(const MatrixView<float>&, const MatrixView<float>&,
                                           const std::int32_t*, int);
template void MomentsGroups::update<double>(const MatrixView<double>&, const MatrixView<double>&,
                                            const std::int32_t*, int);

Eigen::VectorXd Moments::mean() const {
  if (count_ == 0) throw std::logic_error("no rows have been added");
  return pilot_ + shifted_sum_ / static_cast<double>(count_);
}

Eigen::MatrixXd Moments::centered_scatter() const {
  if (count_ == 0) throw std::logic_error("no rows have been added");
  Eigen::MatrixXd m = shifted_scatter_.selfadjointView<Eigen::Upper>();
  m.noalias() -= shifted_sum_ * shifted_sum_.transpose() / static_cast<double>(count_);
  return m;
}

void Moments::merge(const Moments& other) {
  if (other.dim_ != dim_)
    throw std::invalid_argument("cannot merge moments of dim " + std::to_string(other.dim_) +
                                " into moments of dim " + std::to_string(dim_));
  if (other.track_unit_rows_ != track_unit_rows_)
    throw std::invalid_argument("cannot merge moments that track unit rows with ones that do not");
  if (other.count_ == 0) return;
  if (count_ == 0) {
    *this = other;
    return;
  }
  require_memory("Moments.merge at dim " + std::to_string(dim_) + " (two centred copies of the second moments)",
                 2.0 * 8.0 * static_cast<double>(4 * dim_ * dim_),
                 "use a smaller dim (e.g. project the embeddings with PCA) or a machine with more memory");
  // Chan et al.: combine centred scatters, then re-anchor the state at the joint mean.
  const double na = static_cast<double>(count_), nb = static_cast<double>(other.count_);
  const Eigen::VectorXd mean_a = mean(), mean_b = other.mean();
  const Eigen::VectorXd delta = mean_b - mean_a;
  const bool both_norm = track_norm_moments_ && other.track_norm_moments_;
  if (both_norm) {
    const Eigen::VectorXd joint_pilot = mean_a + delta * (nb / (na + nb));
    NormMoments a = norm_moments_about(joint_pilot);
    const NormMoments b = other.norm_moments_about(joint_pilot);
    a.products += b.products;
    a.weighted += b.weighted;
    norm_moments_ = std::move(a);
  }
  track_norm_moments_ = both_norm;
  Eigen::MatrixXd scatter = centered_scatter();
  scatter += other.centered_scatter();
  scatter.noalias() += delta * delta.transpose() * (na * nb / (na + nb));
  pilot_ = mean_a + delta * (nb / (na + nb));
  shifted_sum_.setZero();
  shifted_scatter_ = std::move(scatter);
  unit_sum_ += other.unit_sum_;
  matched_cosine_sum_ += other.matched_cosine_sum_;
  count_ += other.count_;
}

void Moments::restore(Index count, bool has_pilot, Eigen::VectorXd pilot, Eigen::VectorXd shifted_sum,
                      Eigen::MatrixXd shifted_scatter, Eigen::VectorXd unit_sum,
                      double matched_cosine_sum) {
  const Index width = 2 * dim_;
  if (count < 0 || pilot.size() != width || shifted_sum.size() != width ||
      shifted_scatter.rows() != width || shifted_scatter.cols() != width || unit_sum.size() != width)
    throw std::invalid_argument("moments state does not match dim " + std::to_string(dim_));
  count_ = count;
  has_pilot_ = has_pilot;
  pilot_ = std::move(pilot);
  shifted_sum_ = std::move(shifted_sum);
  shifted_scatter_ = std::move(shifted_scatter);
  unit_sum_ = std::move(unit_sum);
  matched_cosine_sum_ = matched_cosine_sum;
  // Without restore_norm_moments() the fourth-order sums are unknown (zero rows: exactly 0).
  norm_moments_.products.setZero();
  norm_moments_.weighted.setZero(width, 2);
  track_norm_moments_ = count == 0;
}

void Moments::restore_norm_moments(NormMoments about_pilot) {
  if (about_pilot.weighted.rows() != 2 * dim_ || about_pilot.weighted.cols() != 2)
    throw std::invalid_argument("fourth-order sums do not match dim " + std::to_string(dim_));
  norm_moments_ = std::move(about_pilot);
  track_norm_moments_ = true;
}

// With s = origin - pilot split into (s_x, s_y), q_g = |z_g|^2 about the pilot and
// q'_g = |z_g - s_g|^2 = q_g - 2 s_g.z_g + |s_g|^2, every sum about the origin expands into
// sums about the pilot: the fourth-order ones, the shifted scatter R and sum S, and n.
NormMoments Moments::norm_moments_about(const Eigen::VectorXd& origin) const {
  if (!track_norm_moments_) throw std::logic_error("these moments do not track fourth-order sums");
  const Index d = dim_, w = 2 * dim_;
  if (origin.size() != w) throw std::invalid_argument("origin must have 2 dim entries");
  const double n = static_cast<double>(count_);
  const Eigen::VectorXd s = origin - pilot_;
  const Eigen::MatrixXd raw = shifted_scatter_.selfadjointView<Eigen::Upper>();
  const Eigen::VectorXd& sum = shifted_sum_;
  // Per modality g: s_g padded to 2 dim, |s_g|^2, Q_g = sum q_g, s_g.S_g, R s_g (2 dim).
  Eigen::VectorXd sg[2] = {Eigen::VectorXd::Zero(w), Eigen::VectorXd::Zero(w)};
  sg[0].head(d) = s.head(d);
  sg[1].tail(d) = s.tail(d);
  double sq[2], total[2], along[2];
  Eigen::VectorXd rs[2];
  for (int g = 0; g < 2; ++g) {
    sq[g] = sg[g].squaredNorm();
    total[g] = raw.block(g * d, g * d, d, d).trace();
    along[g] = sg[g].dot(sum);
    rs[g] = raw * sg[g];
  }
  const NormMoments& m = norm_moments_;
  NormMoments out;
  out.weighted.resize(w, 2);
  for (int g = 0; g < 2; ++g)
    out.weighted.col(g) = m.weighted.col(g) - s * total[g] - 2.0 * rs[g] + 2.0 * s * along[g] + sq[g] * sum -
                          n * sq[g] * s;
  // products: (g, h) = (x, x), (x, y), (y, y).
  const int pairs[3][2] = {{0, 0}, {0, 1}, {1, 1}};
  for (int p = 0; p < 3; ++p) {
    const int g = pairs[p][0], h = pairs[p][1];
    out.products[p] = m.products[p] - 2.0 * sg[h].dot(m.weighted.col(g)) - 2.0 * sg[g].dot(m.weighted.col(h)) +
                      4.0 * sg[g].dot(rs[h]) + sq[h] * total[g] + sq[g] * total[h] - 2.0 * sq[h] * along[g] -
                      2.0 * sq[g] * along[h] + n * sq[g] * sq[h];
  }
  return out;
}

}  // namespace fastsas
