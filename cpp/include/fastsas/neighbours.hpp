// Exact nearest neighbours within one set of rows (cosine, self excluded) and the
// neighbourhood-family alignment metrics built from the neighbours of two paired sets:
// mutual k-NN, cycle k-NN, LCS k-NN, edit-distance k-NN and CKNNA (biased and unbiased).
// Definitions: docs/definitions.md, "Neighbourhood family".
#pragma once

#include <cstdint>
#include <vector>

#include "fastsas/hsic.hpp"
#include "fastsas/moments.hpp"
#include "fastsas/screen.hpp"

namespace fastsas {

// ------------------------------------------------------------------------------ neighbours
//
// The similarity of rows i and j is *defined* as the canonical similarity (exact.hpp) of the
// two rows normalised in float64 and stored in the input's precision T. The neighbours of i
// are the topk rows j != i of largest similarity; equal similarities are ordered by the
// smaller index. So the neighbours are one pure function of the rows, whatever the tile size,
// the thread count or the GEMM's rounding.
//
// How. Rows are split into blocks; every unordered pair of blocks (I, J), J >= I, is one
// T-precision GEMM tile (the similarity matrix is symmetric, so half the n x n products are
// computed) and serves the queries of both blocks. Every query keeps its current best topk
// with their canonical similarities and a threshold = its k-th canonical similarity minus the
// tile error bound (exact.hpp), rounded down to T. A tile entry below the threshold cannot
// enter the final list and is dropped; the few at or above it are re-decided with the
// canonical similarity. When many entries of one tile row pass at once (the first tile of a
// query, or near-ties), only those within twice the bound of their own k-th largest tile
// value are re-decided: the others cannot be among the final neighbours. A query's list is
// changed under its block's lock; thresholds are read without it (they only rise, and a
// stale one only lets more entries be re-decided), so no schedule changes the result.
// Memory: O(n topk) for the lists plus one tile per worker; never an n x n matrix.
// Near-ties cost canonical similarities: on data with many exactly duplicated rows the work
// grows towards n^2 d float64 operations, but the result stays exact.
//
// Reduced-precision tiles (screen.hpp). With precision int8 or bfloat16 the tiles are computed
// by the screen kernels instead of the T-precision GEMM, and the band is the screen's proven
// bound pair_error_bound() taken at the maxima of the packs' row norms and conversion errors
// (it bounds |tile value - canonical similarity| for every pair). Everything else is the same
// rule, so the lists are identical to the GEMM path's (wider band: more re-checks). kAuto
// takes the path knn_tile_choice() measures cheapest on the data.
struct KnnOptions {
  Index tile = 0;  // rows per block (0: kKnnTile; rounded up to kScreenCols for a screen)
  int threads = 1;
  ScreenPrecision precision = ScreenPrecision::kNone;
};

// kAuto's choice among the paths this CPU has (int8 needs AVX512_VNNI and d <=
// kScreenInt8MaxDim, bfloat16 AVX512_BF16, the T-precision GEMM always). A path costs its
// tile rate over the n / 2 pairs per query of the symmetric tiles plus one canonical re-check
// per candidate it re-decides, about the rows within twice its band of the query's k-th
// similarity; how many depends on the data (tight classes put hundreds of rows within int8's
// band, ~6x bfloat16's), so it is counted on a sample: min(256, n / 64) evenly spaced queries
// compared in T precision with every row (at most 1/32 of the tiles' work), the bands' maxima
// taken over them and 4,096 evenly spaced rows. Below kKnnChoiceMinRows rows nothing is
// measured: bfloat16, else int8. Only the speed depends on the choice. `rows` as knn_packed.
struct KnnTileChoice {
  ScreenPrecision precision = ScreenPrecision::kNone;   // the path taken
  Index queries = 0;                                    // sampled queries (0: not measured)
  double band_int8 = 0, band_bfloat16 = 0, band_gemm = 0;           // estimated bands (0: no such path)
  double rechecks_int8 = 0, rechecks_bfloat16 = 0, rechecks_gemm = 0;  // per query, estimated
  double cost_int8 = 0, cost_bfloat16 = 0, cost_gemm = 0;           // per query, relative (inf: no such path)
};

struct KnnResult {
  Index rows = 0, topk = 0;
  std::vector<std::int64_t> index;  // rows x topk, row-major, best first
  std::vector<double> similarity;   // the canonical similarity of each listed neighbour
  std::int64_t rechecked = 0;       // canonical similarities computed
  ScreenPrecision precision = ScreenPrecision::kNone;  // how the tiles were computed
  double band = 0;                  // the bound on |tile value - canonical similarity| used
  KnnTileChoice choice;             // with kAuto: what was measured (choice.queries 0: nothing)
};

// The tile precision a knn call with `requested` runs in on this CPU: kAuto stays kAuto when
// the CPU has a screen (knn measures which to take) and is kNone when it has none; an
// explicit screen the CPU lacks raises std::invalid_argument naming the instructions.
ScreenPrecision knn_precision(ScreenPrecision requested, Index d);

inline constexpr Index kKnnTile = 1024;
// Fewer rows: kAuto takes a screen without measuring (the whole call takes milliseconds).
inline constexpr Index kKnnChoiceMinRows = 4096;

template <class T>
KnnTileChoice knn_tile_choice(const T* rows, Index n, Index d, Index topk, int threads);

// x: n x d, 1 <= topk <= n - 1. Non-finite and zero-norm rows raise BadRowsError naming `input`.
template <class T>
KnnResult knn(const MatrixView<T>& x, Index topk, const KnnOptions& options, const char* input = "x");

// The same for rows already normalised and packed (row-major n x d, contiguous), as
// detail::pack_rows(x, input, true, threads) makes them (pairwise.hpp).
template <class T>
KnnResult knn_packed(const T* rows, Index n, Index d, Index topk, const KnnOptions& options);

// ------------------------------------------------------------------------------ metrics

struct NeighbourhoodScores {
  Index rows = 0, topk = 0;
  double mutual_knn = 0;         // mean |N_A(i) & N_B(i)| / topk
  double cycle_knn = 0;          // mean [i in N_A(j) for some j in N_B(i)]
  double lcs_knn = 0;            // mean length of the longest common subsequence of the lists
  double edit_distance_knn = 0;  // 1 - mean Levenshtein distance of the lists / topk
  HsicTerms cknna;               // unbiased HSIC on the joint-neighbour masked kernels
  HsicTerms cknna_biased;        // biased HSIC, neighbourhoods include the row itself
};

// From the neighbours of the images (a) and of the texts (b), same rows and topk. Needs
// rows >= 4 (the unbiased HSIC divides by n (n - 3)). Sums run in a fixed order.
NeighbourhoodScores neighbourhood_scores(const KnnResult& a, const KnnResult& b, int threads);

}  // namespace fastsas
