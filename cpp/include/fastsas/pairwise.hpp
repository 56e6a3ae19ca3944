// The pairwise kernels that truly need n^2 work: exact bidirectional cosine retrieval ranks
// and the exact RBF MMD. Both stream tiles of an (n x m) product through one GEMM per tile
// (OpenBLAS, in the input's own precision) and reduce each tile on the fly, so memory is
// O(tile + (n + m) d) whatever n is. Definitions: docs/definitions.md ("Retrieval", "MMD").
#pragma once

#include <cstdint>
#include <vector>

#include "fastsas/moments.hpp"
#include "fastsas/screen.hpp"

namespace fastsas {

// ------------------------------------------------------------------------------ retrieval
//
// Rank of a query = 1 + the number of non-matching candidates whose similarity to it is
// strictly greater than the best similarity among its own matches. Rows of integers
// (quantised embeddings) compare by their exact rational cosines wherever rounding could
// decide otherwise, so mathematically equal cosines tie (retrieval.cpp, "exact ties").
//
// Exactness. Every similarity is *defined* as the "canonical" dot product of the two
// L2-normalised rows (rows normalised in float64, stored in the input's precision T, then
// multiplied exactly and summed in float64 in a fixed order: one pure function of the two
// rows). The tiles come from a T-precision GEMM whose error against that value has a
// rigorous bound (gamma_d); a tile entry decides a comparison only when it lies outside that
// band around the query's threshold, and every entry inside the band is re-decided with the
// canonical dot product. So ranks do not depend on the GEMM's rounding, the tile size or the
// thread count; exact ties (duplicated candidates) are ties; a match is excluded by id and
// never counts against its own query.
//
// Precision. The tiles may instead come from a reduced-precision screen (screen.hpp:
// bfloat16 or int8 products, a proven bound per pair, every pair inside it re-decided with
// the canonical value): the same ranks, faster. `precision` chooses: kAuto (the fastest
// screen the CPU has; the input's own precision when topk > 0), kNone (the GEMM in the
// input's precision), kBFloat16 or kInt8 (refused with std::invalid_argument when the CPU
// lacks the instructions). Screen tiles are rounded up to whole micro-tiles (8 x 32).
struct RetrievalOptions {
  Index tile_rows = 0;   // images per tile (0: default)
  Index tile_cols = 0;   // texts per tile (0: default)
  int threads = 1;
  Index topk = 0;        // also keep the top-k retrieved candidates of every query
  ScreenPrecision precision = ScreenPrecision::kAuto;
};

struct RetrievalResult {
  // Rank of every image (over texts) and every text (over images); 0 for a query with no
  // match (it is excluded from the metrics and counted).
  std::vector<std::int64_t> image_ranks, text_ranks;
  // Row-major (n_images x topk) text indices, best first, and their tile similarities;
  // likewise (n_texts x topk) image indices. Empty unless topk > 0. Padded with -1 / NaN
  // when the gallery is smaller than topk. Ties are broken by the smaller index.
  std::vector<std::int64_t> image_topk, text_topk;
  std::vector<double> image_topk_sim, text_topk_sim;
  Index topk = 0;
  // Tile entries that fell inside the rounding band and were re-decided exactly, out of
  // `screened` (n x m) tile entries, and the precision the tiles were computed in.
  std::int64_t rechecked = 0;
  std::int64_t screened = 0;
  ScreenPrecision precision = ScreenPrecision::kNone;
};

inline constexpr Index kRetrievalTileRows = 512;
inline constexpr Index kRetrievalTileCols = 1024;

// x: images (n x d), y: texts (m x d). `image_codes` / `text_codes`: non-negative int32 ids
// (equal codes match), or both null for row i <-> row i (needs n == m). Rows are refused
// (BadRowsError, input "x" or "y") when non-finite or of zero norm.
template <class T>
RetrievalResult retrieval(const MatrixView<T>& x, const MatrixView<T>& y, const std::int32_t* image_codes,
                          const std::int32_t* text_codes, const RetrievalOptions& options);

// Sharded retrieval (a cluster's tasks; fastsas.dask): the same ranks, a block pair at a time.
// Because a count is a pure function of a pair of rows (its canonical similarity against the
// query's threshold), summing the counts of every (image block, text block) pair and adding
// 1 to the queries with a finite threshold gives exactly `retrieval`'s ranks.
//
// retrieval_thresholds: per query row, the canonical similarity of its best match among
// `candidates` (rows with an equal code; give at least every match of every query), +inf
// for a query without one. Bad rows raise BadRowsError naming `query_input` /
// `candidate_input` and the row in that block.
//
// Exact ties (integer rows: see docs/definitions.md, "Exact ties of integer-valued rows"):
// when a query row and its best match are rows of integers, `exact` (when not null)
// receives (x.m, |m|^2) of that match, the exact threshold retrieval_counts compares
// integer candidates against; {0, 0} for every other query.
struct ExactThreshold {
  std::int64_t dot = 0;    // query . best match (exact)
  std::int64_t norm2 = 0;  // |best match|^2; 0: no exact threshold
};

// An integer row's largest squared norm: |x.y| <= 2^40 and every product of the exact
// comparison stays below 2^120 (128-bit integers; the GPU kernels build them from 64-bit
// halves and take this limit from here).
inline constexpr double kIntegerRowNorm2Max = 1099511627776.0;  // 2^40

// The tie band tau_T(d) for rows stored in float32 (float64_rows false) or float64: twice a
// bound on |canonical similarity - exact cosine of the input rows| (retrieval.cpp, tie_band).
double retrieval_tie_band(Index d, bool float64_rows);

template <class T>
std::vector<double> retrieval_thresholds(const MatrixView<T>& queries, const MatrixView<T>& candidates,
                                         const std::int32_t* query_codes, const std::int32_t* candidate_codes,
                                         const char* query_input, const char* candidate_input, int threads,
                                         std::vector<ExactThreshold>* exact = nullptr);

struct RetrievalCounts {
  // image_counts[i]: texts of this block that do not match image i (codes differ) and whose
  // canonical similarity to it exceeds image_thresholds[i]; text_counts[j] likewise.
  std::vector<std::int64_t> image_counts, text_counts;
  std::int64_t rechecked = 0, screened = 0;
  ScreenPrecision precision = ScreenPrecision::kNone;
};

// x: a block of images, y: a block of texts, their codes (required, equal codes match) and
// the thresholds of both sides (from retrieval_thresholds; +inf: nothing counts; NaN is
// refused). One pass over the block pair's tiles serves both directions; options.topk is
// ignored, options.precision applies as in `retrieval`. Bad rows raise BadRowsError ("x" or
// "y", rows counted within the block).
// image_exact / text_exact: the exact thresholds of both sides (retrieval_thresholds'
// `exact`, one per row), or null: integer candidates are then compared by canonical values.
template <class T>
RetrievalCounts retrieval_counts(const MatrixView<T>& x, const MatrixView<T>& y, const std::int32_t* image_codes,
                                 const std::int32_t* text_codes, const double* image_thresholds,
                                 const double* text_thresholds, const RetrievalOptions& options,
                                 const ExactThreshold* image_exact = nullptr,
                                 const ExactThreshold* text_exact = nullptr);

// Every screened value of x's rows (normalised) against y's, with its proven bound on
// |screened - canonical| (pair_error_bound of the two rows) and the canonical value: row-major
// n x m each. For tests and diagnostics of the screen (small inputs: O(n m) memory).
struct ScreenCheck {
  std::vector<float> screened;
  std::vector<double> bound, canonical;
};
template <class T>
ScreenCheck retrieval_screen_check(const MatrixView<T>& x, const MatrixView<T>& y, ScreenPrecision precision);

// ------------------------------------------------------------------------------ MMD
//
// MMD = 100 (mean K(x_i, x_j) + mean K(y_i, y_j) - 2 mean K(x_i, y_j)), all pairs including
// i = j, K(a, b) = exp(-||a - b||^2 / (2 sigma^2)). Both inputs are first shifted by their
// joint mean (distances are unchanged, cancellation in ||a||^2 + ||b||^2 - 2 a.b is not),
// each tile is one GEMM in precision T followed by exp and a float64 sum in the same pass,
// K(x, x) and K(y, y) use only the tiles on and above the diagonal, and tile sums are added
// in a fixed order: the same bits for any thread count.
struct MmdOptions {
  Index tile = 0;  // rows and columns per tile (0: default)
  int threads = 1;
};

struct MmdResult {
  double mean_kxx = 0, mean_kyy = 0, mean_kxy = 0;
  double mmd = 0;  // paper scaling (x100)
};

inline constexpr Index kMmdTile = 512;

// x (n x d), y (m x d), sigma > 0. Non-finite rows raise BadRowsError ("x" or "y").
template <class T>
MmdResult mmd(const MatrixView<T>& x, const MatrixView<T>& y, double sigma, const MmdOptions& options);

namespace detail {

// A contiguous row-major copy of `v` (rows x cols), L2-normalised per row when `normalise`.
// Non-finite rows (and, when normalising, zero-norm rows) raise BadRowsError naming `input`.
template <class T>
std::vector<T> pack_rows(const MatrixView<T>& v, const char* input, bool normalise, int threads);

// C (m x n, row-major, leading dimension ldc) = A (m x k, row-major, lda) * B (n x k, row-major,
// ldb)^T through OpenBLAS on the calling thread.
void gemm_nt(Index m, Index n, Index k, const float* a, Index lda, const float* b, Index ldb, float* c,
             Index ldc);
void gemm_nt(Index m, Index n, Index k, const double* a, Index lda, const double* b, Index ldb, double* c,
             Index ldc);

}  // namespace detail

}  // namespace fastsas
