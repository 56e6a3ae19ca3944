// Streaming sufficient statistics of paired embeddings (X, Y): the count, the means, the
// joint second moments of [X Y], and the O(n d) sums the pairwise-family metrics need.
// Accumulated block by block (a float32 input uses float32 SYRK per block and float64
// across blocks), shifted by a pilot mean so cone-shaped data keeps its digits, and
// mergeable (Chan et al.) so chunks, threads, processes and machines combine exactly.
#pragma once

#include <Eigen/Core>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace fastsas {

using Index = std::int64_t;

// A read-only strided view of a row-major or column-major (or any strided) 2-D array.
template <class T>
struct MatrixView {
  const T* data = nullptr;
  Index rows = 0;
  Index cols = 0;
  Index row_stride = 0;  // in elements
  Index col_stride = 1;  // in elements
  const T& operator()(Index r, Index c) const { return data[r * row_stride + c * col_stride]; }
};

// What BadRowsError says of a row, and how many of its rows it lists (the first, ascending).
// The Python layer words every bad-row message with these (fastsas._core.NON_FINITE_ROWS,
// ZERO_NORM_ROWS, TOO_LARGE_ROWS, TOO_SMALL_ROWS, TOO_LARGE_TO_NORMALISE_ROWS,
// BAD_ROWS_SHOWN), whichever engine found the rows.
inline constexpr const char* kNonFiniteRows = "non-finite values (NaN or Inf)";
inline constexpr const char* kZeroNormRows = "zero-norm rows (no direction to normalise)";
// Moments: rows whose float64 second moments would overflow, or underflow without being zero.
inline constexpr const char* kTooLargeRows =
    "values too large for float64 second moments (squared row norm above 1.8e308)";
inline constexpr const char* kTooSmallRows =
    "values too small for float64 second moments (squared row norm below 1e-290 but not zero)";
// The pairwise kernels: rows whose squared norm overflows float64, so they cannot be normalised.
inline constexpr const char* kTooLargeToNormaliseRows =
    "values too large to normalise in float64 (squared row norm above 1.8e308)";
inline constexpr std::size_t kBadRowsShown = 10;

// Raised for rows the metrics cannot use. `input` is "x" or "y" (X and Y of
// docs/definitions.md).
class BadRowsError : public std::invalid_argument {
 public:
  BadRowsError(std::string input, std::string problem, std::vector<Index> rows, Index total);
  const std::string& input() const { return input_; }
  const std::string& problem() const { return problem_; }
  const std::vector<Index>& rows() const { return rows_; }  // the first few, ascending
  Index total() const { return total_; }

 private:
  std::string input_, problem_;
  std::vector<Index> rows_;
  Index total_;
};

// Fourth-order sums about an origin o = [o_x o_y] (2 dim), for the unbiased HSIC of linear
// kernels (estimators.hpp): with a_i = |x_i - o_x|^2, b_i = |y_i - o_y|^2 and z_i the row pair
// minus o, `products` = [sum a^2, sum a b, sum b^2] and `weighted` (2 dim x 2) = [sum a_i z_i,
// sum b_i z_i].
struct NormMoments {
  Eigen::Vector3d products = Eigen::Vector3d::Zero();
  Eigen::MatrixXd weighted;
};

class Moments {
 public:
  // Rows per block: the unit of parallel work and of the fixed reduction order. Chosen so
  // a float32 block product keeps ~1e-6 relative accuracy and a block's SYRK dominates
  // the float64 accumulation that follows it.
  static constexpr Index kBlockRows = 2048;

  // `track_unit_rows`: also keep the sums of unit rows and matched cosines (Delta-cos,
  // RMG, cone, gap); zero-norm rows are then refused, since they have no direction.
  explicit Moments(Index dim, bool track_unit_rows = true);

  // Adds the rows of x and y (same shape, n x dim). All-or-nothing: on a bad row
  // (non-finite; a squared norm that overflows float64 or is below 1e-290 without being
  // zero; zero norm when unit rows are tracked) nothing is added and BadRowsError names the
  // rows, counted from the first row of this chunk. A stop (parallel.hpp) adds nothing either.
  // The memory a chunk needs is checked first (OutOfMemory, memory.hpp); with little memory
  // fewer blocks run side by side (same result). Any finite magnitude of float32 input is
  // computed in range: a block whose products would overflow or underflow is rescaled by
  // powers of two per column.
  template <class T>
  void update(const MatrixView<T>& x, const MatrixView<T>& y, int threads);

  // The same for a subset of the rows: `rows[0..count)` (ascending) index x and y.
  // Bad rows are then named by their index in x, not by their position in `rows`.
  template <class T>
  void update_rows(const MatrixView<T>& x, const MatrixView<T>& y, const Index* rows, Index count,
                   int threads);

  // Adds another partial state (same dim and tracking); equal to one pass over both.
  void merge(const Moments& other);

  // Bytes of one state of this dim (what the constructor allocates).
  static double state_bytes(Index dim);

  Index dim() const { return dim_; }
  Index count() const { return count_; }
  bool tracks_unit_rows() const { return track_unit_rows_; }

  // Derived statistics (valid for count() >= 1).
  Eigen::VectorXd mean() const;                   // 2*dim: [mean(X) mean(Y)]
  Eigen::MatrixXd centered_scatter() const;       // 2*dim x 2*dim, sum (z - mean)(z - mean)^T
  const Eigen::VectorXd& unit_sum() const { return unit_sum_; }  // 2*dim: [sum x^ , sum y^]
  double matched_cosine_sum() const { return matched_cosine_sum_; }

  // Raw state, for the versioned byte form. `shifted_scatter` has its upper triangle valid.
  const Eigen::VectorXd& pilot() const { return pilot_; }
  const Eigen::VectorXd& shifted_sum() const { return shifted_sum_; }
  const Eigen::MatrixXd& shifted_scatter() const { return shifted_scatter_; }
  bool has_pilot() const { return has_pilot_; }
  void restore(Index count, bool has_pilot, Eigen::VectorXd pilot, Eigen::VectorXd shifted_sum,
               Eigen::MatrixXd shifted_scatter, Eigen::VectorXd unit_sum,
               double matched_cosine_sum);

  // The fourth-order sums (NormMoments) are kept about the pilot, beside the rest, in the same
  // pass. A state restored without them (restore() alone, as for the first byte form) does
  // not track them until restore_norm_moments() gives them.
  bool tracks_norm_moments() const { return track_norm_moments_; }
  const NormMoments& norm_moments() const { return norm_moments_; }  // about pilot()
  void restore_norm_moments(NormMoments about_pilot);
  // The same sums about another origin (2 dim), re-expressed exactly from the state (the
  // shifted sum and scatter carry every lower-order term). Needs tracks_norm_moments().
  NormMoments norm_moments_about(const Eigen::VectorXd& origin) const;

 private:
  template <class T>
  void set_pilot(const MatrixView<T>& x, const MatrixView<T>& y, const Index* rows, Index count);
  template <class T>
  void accumulate(const MatrixView<T>& x, const MatrixView<T>& y, const Index* rows, Index count,
                  int threads);

  Index dim_;
  bool track_unit_rows_;
  Index count_ = 0;
  bool has_pilot_ = false;
  Eigen::VectorXd pilot_;           // 2*dim shift applied before every block product
  Eigen::VectorXd shifted_sum_;     // sum (z - pilot)
  Eigen::MatrixXd shifted_scatter_; // sum (z - pilot)(z - pilot)^T, upper triangle
  Eigen::VectorXd unit_sum_;        // 2*dim
  double matched_cosine_sum_ = 0.0;
  bool track_norm_moments_ = true;
  NormMoments norm_moments_;        // about pilot_
};

// One Moments per group code, filled in one pass: each row goes to the group its code
// names, without copying the data (rows are gathered into the block buffers directly).
// Used by audits for subgroups, time periods and jackknife blocks.
class MomentsGroups {
 public:
  MomentsGroups(Index groups, Index dim, bool track_unit_rows = true);

  // codes[r] in [0, groups) for every row r of x and y. Not transactional across groups:
  // after a BadRowsError the groups are unspecified and should be discarded.
  template <class T>
  void update(const MatrixView<T>& x, const MatrixView<T>& y, const std::int32_t* codes, int threads);

  Index size() const { return static_cast<Index>(groups_.size()); }
  const Moments& group(Index g) const { return groups_.at(static_cast<size_t>(g)); }

 private:
  Index dim_;
  std::vector<Moments> groups_;
};

}  // namespace fastsas
