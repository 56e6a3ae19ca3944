// Exact within-set neighbours from symmetric tiles of one GEMM, and the neighbourhood metrics
// (see neighbours.hpp for the exactness argument and the definitions).
#include "fastsas/neighbours.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>

#include "fastsas/blas.hpp"
#include "fastsas/exact.hpp"
#include "fastsas/pairwise.hpp"
#include "fastsas/parallel.hpp"

namespace fastsas {

namespace {

constexpr std::int64_t kNoIndex = std::numeric_limits<std::int64_t>::max();

// The order of the lists: larger similarity first, equal similarities by the smaller index.
inline bool ranks_before(double value_a, std::int64_t index_a, double value_b, std::int64_t index_b) {
  return value_a > value_b || (value_a == value_b && index_a < index_b);
}

template <class T>
struct Candidate {
  std::int64_t index;
  T tile_value;
};

// Per-worker buffers, reused across tiles.
template <class T>
struct KnnWorker {
  std::vector<T> tile;
  std::vector<T> row_floor, col_floor;  // threshold snapshots of the tile's rows and columns
  std::vector<Candidate<T>> row_hits, col_hits;
  std::vector<Index> row_start, col_start, col_fill;
  std::vector<std::int32_t> col_of_hit, row_of_hit;
  std::vector<T> kept;  // the k largest tile values seen (descending), for the band cut
  std::vector<std::int64_t> first, second;  // selected (query, candidate) pairs of one tile side
  std::vector<double> exact_value;
  std::int64_t rechecked = 0;
};

// The k-th largest tile value of the candidates (count > k): one pass keeping the k largest
// in a sorted buffer; after the first few, most values fall below its last entry at once.
template <class T>
T kth_largest(const Candidate<T>* cand, Index count, Index k, std::vector<T>& kept) {
  kept.assign(static_cast<size_t>(k), -std::numeric_limits<T>::infinity());
  T last = kept[k - 1];
  for (Index p = 0; p < count; ++p) {
    const T v = cand[p].tile_value;
    if (!(v > last)) continue;
    Index pos = k - 1;
    while (pos > 0 && kept[pos - 1] < v) {
      kept[pos] = kept[pos - 1];
      --pos;
    }
    kept[pos] = v;
    last = kept[k - 1];
  }
  return last;
}

template <class T>
class KnnEngine {
 public:
  // `screen`: the rows packed for both sides of the screen kernels (nullptr: T-precision GEMM
  // tiles), with `band` their proven pair bound.
  KnnEngine(const T* rows, Index n, Index d, Index topk, Index block, const ScreenPack* screen_a = nullptr,
            const ScreenPack* screen_b = nullptr, double band = 0.0)
      : rows_(rows),
        n_(n),
        d_(d),
        k_(topk),
        block_(block),
        blocks_((n + block - 1) / block),
        screen_a_(screen_a),
        screen_b_(screen_b),
        band_(screen_a != nullptr ? band : exact::tile_error_bound<T>(d)),
        value_(static_cast<size_t>(n * topk), -std::numeric_limits<double>::infinity()),
        index_(static_cast<size_t>(n * topk), kNoIndex),
        floor_(new std::atomic<T>[static_cast<size_t>(n)]),
        locks_(static_cast<size_t>(blocks_)) {
    for (Index i = 0; i < n; ++i) floor_[i].store(-std::numeric_limits<T>::infinity(), std::memory_order_relaxed);
  }

  KnnResult run(int threads) {
    const int workers = static_cast<int>(std::max<Index>(1, std::min<Index>(threads, blocks_)));
    std::vector<KnnWorker<T>> ws(static_cast<size_t>(workers));
    for (auto& w : ws) w.tile.resize(static_cast<size_t>(std::min(block_, n_) * std::min(block_, n_)));
    // Every block's own tile first, so every query starts from a threshold drawn from a
    // whole block of candidates; then every pair of distinct blocks once.
    parallel_for(workers, static_cast<long>(blocks_), [&](long ib, int wid) { diagonal_tile(ib, ws[wid]); });
    parallel_for(workers, static_cast<long>(blocks_), [&](long ib, int wid) {
      for (Index jb = ib + 1; jb < blocks_; ++jb) off_diagonal_tile(ib, jb, ws[wid]);
    });
    KnnResult out;
    out.rows = n_;
    out.topk = k_;
    out.index = std::move(index_);
    out.similarity = std::move(value_);
    out.precision = screen_a_ != nullptr ? screen_a_->precision : ScreenPrecision::kNone;
    out.band = band_;
    for (const auto& w : ws) out.rechecked += w.rechecked;
    return out;
  }

 private:
  Index block_rows(Index b) const { return std::min(block_, n_ - b * block_); }

  // The tile of rows [i0, i0 + rows) against rows [j0, j0 + cols) into `tile` (row-major,
  // `cols` per row): one T-precision GEMM, or the screen kernels (block_ is a multiple of
  // both panel heights, so the blocks start on panel boundaries).
  void compute_tile(Index i0, Index rows, Index j0, Index cols, T* tile) const {
    if (screen_a_ == nullptr) {
      detail::gemm_nt(rows, cols, d_, rows_ + i0 * d_, d_, rows_ + j0 * d_, d_, tile, cols);
      return;
    }
    struct Copy {
      T* tile;
      Index i0, j0, cols;
      void operator()(Index row0, Index col0, const float* values, int r_count, int c_count) const {
        for (int r = 0; r < r_count; ++r) {
          T* out = tile + (row0 - i0 + r) * cols + (col0 - j0);
          const float* in = values + r * kScreenCols;
          for (int c = 0; c < c_count; ++c) out[c] = static_cast<T>(in[c]);
        }
      }
    } copy{tile, i0, j0, cols};
    screen_tiles(*screen_a_, i0 / kScreenRows, (i0 + rows + kScreenRows - 1) / kScreenRows, *screen_b_,
                 j0 / kScreenCols, (j0 + cols + kScreenCols - 1) / kScreenCols, copy);
  }

  void diagonal_tile(Index ib, KnnWorker<T>& w) {
    const Index i0 = ib * block_, rows = block_rows(ib);
    compute_tile(i0, rows, i0, rows, w.tile.data());
    w.first.clear();
    w.second.clear();
    for (Index r = 0; r < rows; ++r) {
      w.row_hits.clear();
      const T* c = w.tile.data() + r * rows;
      for (Index j = 0; j < rows; ++j)
        if (j != r) w.row_hits.push_back({i0 + j, c[j]});
      select(i0 + r, w.row_hits.data(), static_cast<Index>(w.row_hits.size()), w);
    }
    decide(ib, w);
  }

  void off_diagonal_tile(Index ib, Index jb, KnnWorker<T>& w) {
    const Index i0 = ib * block_, rows = block_rows(ib);
    const Index j0 = jb * block_, cols = block_rows(jb);
    T* const tile = w.tile.data();
    compute_tile(i0, rows, j0, cols, tile);
    w.row_floor.resize(static_cast<size_t>(rows));
    w.col_floor.resize(static_cast<size_t>(cols));
    for (Index r = 0; r < rows; ++r) w.row_floor[r] = floor_[i0 + r].load(std::memory_order_relaxed);
    for (Index c = 0; c < cols; ++c) w.col_floor[c] = floor_[j0 + c].load(std::memory_order_relaxed);

    // One pass over the tile marks the rows with any entry at or above a threshold (theirs
    // or their column's); only those rows are listed.
    w.row_hits.clear();
    w.row_start.assign(static_cast<size_t>(rows) + 1, 0);
    w.col_of_hit.clear();
    w.row_of_hit.clear();
    const T* __restrict cf = w.col_floor.data();
    for (Index r = 0; r < rows; ++r) {
      const T* __restrict c = tile + r * cols;
      const T rf = w.row_floor[r];
      std::int32_t any = 0;
      for (Index j = 0; j < cols; ++j)
        any |= static_cast<std::int32_t>(c[j] >= rf) | static_cast<std::int32_t>(c[j] >= cf[j]);
      if (any) {
        for (Index j = 0; j < cols; ++j) {
          if (c[j] >= rf) w.row_hits.push_back({j0 + j, c[j]});
          if (c[j] >= cf[j]) {
            w.col_of_hit.push_back(static_cast<std::int32_t>(j));
            w.row_of_hit.push_back(static_cast<std::int32_t>(r));
          }
        }
      }
      w.row_start[r + 1] = static_cast<Index>(w.row_hits.size());
    }
    if (!w.row_hits.empty()) {
      w.first.clear();
      w.second.clear();
      for (Index r = 0; r < rows; ++r) {
        const Index a = w.row_start[r], b = w.row_start[r + 1];
        if (b > a) select(i0 + r, w.row_hits.data() + a, b - a, w);
      }
      decide(ib, w);
    }
    if (!w.col_of_hit.empty()) {
      // Group the column hits by column (counting sort; rows stay ascending in a column).
      w.col_start.assign(static_cast<size_t>(cols) + 1, 0);
      for (std::int32_t j : w.col_of_hit) ++w.col_start[static_cast<size_t>(j) + 1];
      for (Index j = 0; j < cols; ++j) w.col_start[j + 1] += w.col_start[j];
      w.col_hits.resize(w.col_of_hit.size());
      w.col_fill.assign(w.col_start.begin(), w.col_start.end() - 1);
      for (size_t h = 0; h < w.col_of_hit.size(); ++h) {
        const Index j = w.col_of_hit[h], r = w.row_of_hit[h];
        w.col_hits[static_cast<size_t>(w.col_fill[j]++)] = {i0 + r, tile[r * cols + j]};
      }
      w.first.clear();
      w.second.clear();
      for (Index j = 0; j < cols; ++j) {
        const Index a = w.col_start[j], b = w.col_start[j + 1];
        if (b > a) select(j0 + j, w.col_hits.data() + a, b - a, w);
      }
      decide(jb, w);
    }
  }

  // Lists the candidates of query q (tile entries at or above the threshold it was scanned
  // with) that can still enter its final list, as pairs (q, candidate) for decide().
  void select(Index q, const Candidate<T>* cand, Index count, KnnWorker<T>& w) {
    if (count > 2 * k_) {
      // k of these have canonical similarity >= V - band (V: their k-th largest tile value),
      // so the final k-th similarity is at least that, and a candidate whose tile value is
      // below V - 2 band has a canonical similarity below it.
      const T keep = exact::round_down<T>(static_cast<double>(kth_largest(cand, count, k_, w.kept)) - 2.0 * band_);
      for (Index p = 0; p < count; ++p)
        if (cand[p].tile_value >= keep) {
          w.first.push_back(q);
          w.second.push_back(cand[p].index);
        }
      return;
    }
    for (Index p = 0; p < count; ++p) {
      w.first.push_back(q);
      w.second.push_back(cand[p].index);
    }
  }

  // Computes the canonical similarity of every selected pair (outside any lock), then enters
  // them into their queries' lists under the lock of block `b`, which holds every query.
  void decide(Index b, KnnWorker<T>& w) {
    const Index m = static_cast<Index>(w.first.size());
    if (m == 0) return;
    w.exact_value.resize(static_cast<size_t>(m));
    exact::canonical_pairs(rows_, w.first.data(), w.second.data(), m, d_, w.exact_value.data());
    w.rechecked += m;
    std::lock_guard<std::mutex> hold(locks_[static_cast<size_t>(b)]);
    for (Index p = 0; p < m; ++p) {
      const Index q = w.first[p];
      const std::int64_t j = w.second[p];
      const double s = w.exact_value[p];
      double* value = value_.data() + q * k_;
      std::int64_t* index = index_.data() + q * k_;
      if (!ranks_before(s, j, value[k_ - 1], index[k_ - 1])) continue;
      Index pos = k_ - 1;
      while (pos > 0 && ranks_before(s, j, value[pos - 1], index[pos - 1])) {
        value[pos] = value[pos - 1];
        index[pos] = index[pos - 1];
        --pos;
      }
      value[pos] = s;
      index[pos] = j;
      if (std::isfinite(value[k_ - 1]))
        floor_[q].store(exact::round_down<T>(value[k_ - 1] - band_), std::memory_order_relaxed);
    }
  }

  const T* rows_;
  Index n_, d_, k_, block_, blocks_;
  const ScreenPack* screen_a_;
  const ScreenPack* screen_b_;
  double band_;
  std::vector<double> value_;
  std::vector<std::int64_t> index_;
  std::unique_ptr<std::atomic<T>[]> floor_;
  std::vector<std::mutex> locks_;
};

// Relative costs in the k-NN engine (measured at 30,000 x 768 on AVX-512, 2 cores, with ~10
// re-checks per row: int8 2.7, bfloat16 2.6, float32 8.8 ns per pair of the triangle, and
// ~70 ns per canonical re-check). The int8 kernels' faster products do not show here: the
// tile's conversion and threshold scans cost as much as the products.
constexpr double kKnnCostScreenTile = 1.0, kKnnCostGemmTile = 3.3, kKnnCostRecheck = 27.0;
constexpr Index kKnnSampleGallery = 4096;  // rows packed for the screens' error maxima
constexpr Index kKnnSampleTile = 4096;     // columns per sample tile

// Per sampled query, every similarity at or above its running k-th largest minus `margin`
// (so every value that matters for a band of up to margin / 2), self excluded, cut to the
// `keep` largest at each pruning (n / 16 in use; between prunings a list grows to at most
// twice its pruned size plus one tile): on near-duplicate rows a query could otherwise keep
// most of the rows. More than n / 16 re-checks per query cost a screen 27 n / 16, more
// than the 1.15 n its tiles save against the GEMM, so the cut only lowers an estimate that
// already counts against the screen.
template <class T>
struct SampleCandidates {
  Index k, keep;
  T margin;
  std::vector<std::vector<T>> kept;  // per query
  std::vector<T> floor;              // per query: values below it cannot matter
  std::vector<size_t> pruned_at;     // per query: size after the last pruning

  SampleCandidates(Index queries, Index topk, Index keep_, double margin_)
      : k(topk),
        keep(std::max(topk, keep_)),
        margin(static_cast<T>(margin_)),
        kept(static_cast<size_t>(queries)),
        floor(static_cast<size_t>(queries), -std::numeric_limits<T>::infinity()),
        pruned_at(static_cast<size_t>(queries), 0) {}

  // The m-th largest value (1-based) of v, m <= v.size(); reorders v.
  static T largest(std::vector<T>& v, Index m) {
    std::nth_element(v.begin(), v.begin() + (m - 1), v.end(), std::greater<T>());
    return v[static_cast<size_t>(m - 1)];
  }
  T kth(std::vector<T>& v) const { return largest(v, k); }

  void add(Index s, Index self, Index j0, const T* values, Index cols) {
    std::vector<T>& v = kept[static_cast<size_t>(s)];
    T& f = floor[static_cast<size_t>(s)];
    for (Index j = 0; j < cols; ++j)
      if (values[j] >= f && j0 + j != self) v.push_back(values[j]);
    if (static_cast<Index>(v.size()) > k && v.size() > 2 * pruned_at[static_cast<size_t>(s)] + 64) {
      // One step down from the rounded difference: the floor never rises above kth - margin.
      f = std::nextafter(static_cast<T>(kth(v) - margin), -std::numeric_limits<T>::infinity());
      if (static_cast<Index>(v.size()) > keep) f = std::max(f, largest(v, keep));
      v.erase(std::remove_if(v.begin(), v.end(), [&](T x) { return x < f; }), v.end());
      pruned_at[static_cast<size_t>(s)] = v.size();
    }
  }
};

}  // namespace

template <class T>
KnnTileChoice knn_tile_choice(const T* rows, Index n, Index d, Index topk, int threads) {
  KnnTileChoice out;
  const bool has8 = screen_supported(ScreenPrecision::kInt8) && d <= kScreenInt8MaxDim;
  const bool has16 = screen_supported(ScreenPrecision::kBFloat16);
  out.precision = ScreenPrecision::kNone;
  if (!has8 && !has16) return out;
  if (n < kKnnChoiceMinRows) {
    out.precision = has16 ? ScreenPrecision::kBFloat16 : ScreenPrecision::kInt8;
    return out;
  }
  // Sample: evenly spaced queries, 1/64 of the rows up to 256 (the measurement costs at most
  // 1/32 of the tiles' work), and evenly spaced rows for the bands' error maxima.
  out.queries = std::min<Index>(256, n / 64);
  const Index queries = out.queries, gallery = std::min(n, kKnnSampleGallery);
  std::vector<T> qs(static_cast<size_t>(queries * d)), gs(static_cast<size_t>(gallery * d));
  std::vector<Index> self(static_cast<size_t>(queries));
  for (Index s = 0; s < queries; ++s) {
    self[static_cast<size_t>(s)] = n * s / queries;
    std::copy(rows + self[static_cast<size_t>(s)] * d, rows + (self[static_cast<size_t>(s)] + 1) * d,
              qs.begin() + s * d);
  }
  for (Index g = 0; g < gallery; ++g)
    std::copy(rows + (n * g / gallery) * d, rows + (n * g / gallery + 1) * d, gs.begin() + g * d);
  const auto band_of = [&](ScreenPrecision p) {
    const ScreenPack a = pack_screen_rows(qs.data(), queries, d, p, ScreenSide::kA, 1);
    const ScreenPack b = pack_screen_rows(gs.data(), gallery, d, p, ScreenSide::kB, 1);
    return pair_error_bound(p, d, std::max(a.max_norm, b.max_norm), std::max(a.max_qnorm, b.max_qnorm),
                            std::max(a.max_err, b.max_err), b.max_norm, b.max_qnorm, b.max_err);
  };
  out.band_int8 = has8 ? band_of(ScreenPrecision::kInt8) : 0.0;
  out.band_bfloat16 = has16 ? band_of(ScreenPrecision::kBFloat16) : 0.0;
  out.band_gemm = exact::tile_error_bound<T>(d);
  const double widest = std::max({out.band_int8, out.band_bfloat16, out.band_gemm});

  const Index tiles = (n + kKnnSampleTile - 1) / kKnnSampleTile;
  const int workers = static_cast<int>(std::max<Index>(1, std::min<Index>(threads, tiles)));
  const SampleCandidates<T> empty(queries, topk, n / 16, 2.0 * widest);
  std::vector<SampleCandidates<T>> parts(static_cast<size_t>(workers), empty);
  std::vector<std::vector<T>> tile(static_cast<size_t>(workers));
  parallel_for(workers, static_cast<long>(tiles), [&](long t, int wid) {
    const Index j0 = t * kKnnSampleTile, cols = std::min(kKnnSampleTile, n - j0);
    std::vector<T>& values = tile[static_cast<size_t>(wid)];
    values.resize(static_cast<size_t>(queries * cols));
    detail::gemm_nt(queries, cols, d, qs.data(), d, rows + j0 * d, d, values.data(), cols);
    for (Index s = 0; s < queries; ++s)
      parts[static_cast<size_t>(wid)].add(s, self[static_cast<size_t>(s)], j0, values.data() + s * cols, cols);
  });
  // Each worker kept every value within the margin of its own k-th largest, which is at most
  // the query's: together they hold every value that counts.
  double inside8 = 0, inside16 = 0, inside_gemm = 0;
  for (Index s = 0; s < queries; ++s) {
    std::vector<T> all;
    for (auto& part : parts)
      all.insert(all.end(), part.kept[static_cast<size_t>(s)].begin(), part.kept[static_cast<size_t>(s)].end());
    const double kth = static_cast<double>(parts[0].kth(all));
    for (T v : all) {
      inside8 += static_cast<double>(v) >= kth - 2.0 * out.band_int8;
      inside16 += static_cast<double>(v) >= kth - 2.0 * out.band_bfloat16;
      inside_gemm += static_cast<double>(v) >= kth - 2.0 * out.band_gemm;
    }
  }
  const double per = 1.0 / static_cast<double>(queries);
  out.rechecks_int8 = inside8 * per;
  out.rechecks_bfloat16 = inside16 * per;
  out.rechecks_gemm = inside_gemm * per;
  // Per query: its share of the tiles (n / 2 pairs: each tile serves both its sides) at the
  // path's rate, plus its re-checks.
  const double half = 0.5 * static_cast<double>(n);
  const double inf = std::numeric_limits<double>::infinity();
  out.cost_int8 = has8 ? kKnnCostScreenTile * half + kKnnCostRecheck * out.rechecks_int8 : inf;
  out.cost_bfloat16 = has16 ? kKnnCostScreenTile * half + kKnnCostRecheck * out.rechecks_bfloat16 : inf;
  out.cost_gemm = kKnnCostGemmTile * (sizeof(T) == 8 ? 2.0 : 1.0) * half + kKnnCostRecheck * out.rechecks_gemm;
  if (out.cost_bfloat16 <= out.cost_gemm && out.cost_bfloat16 <= out.cost_int8)
    out.precision = ScreenPrecision::kBFloat16;
  else if (out.cost_int8 <= out.cost_gemm)
    out.precision = ScreenPrecision::kInt8;
  return out;
}

template <class T>
KnnResult knn_packed(const T* rows, Index n, Index d, Index topk, const KnnOptions& options) {
  if (d < 1) throw std::invalid_argument("rows must have at least one column");
  if (n > std::numeric_limits<std::int32_t>::max()) throw std::invalid_argument("at most 2^31 - 1 rows");
  if (topk < 1 || topk > n - 1)
    throw std::invalid_argument("topk must be in [1, n - 1] = [1, " + std::to_string(n - 1) + "], got " +
                                std::to_string(topk));
  Index block = options.tile > 0 ? options.tile : kKnnTile;
  const int threads = std::max(1, options.threads);
  ScreenPrecision precision = knn_precision(options.precision, d);
  blas::use_calling_thread_only();
  KnnTileChoice choice;
  if (precision == ScreenPrecision::kAuto) precision = (choice = knn_tile_choice(rows, n, d, topk, threads)).precision;
  KnnResult out;
  if (precision == ScreenPrecision::kNone) {
    KnnEngine<T> engine(rows, n, d, topk, block);
    out = engine.run(threads);
  } else {
    static_assert(kScreenCols % kScreenRows == 0, "blocks must start on the panels of both sides");
    block = (block + kScreenCols - 1) / kScreenCols * kScreenCols;
    const ScreenPack a = pack_screen_rows(rows, n, d, precision, ScreenSide::kA, threads);
    const ScreenPack b = pack_screen_rows(rows, n, d, precision, ScreenSide::kB, threads);
    // Monotone in every argument: the packs' maxima bound every pair (screen.hpp).
    const double band = pair_error_bound(precision, d, a.max_norm, a.max_qnorm, a.max_err, b.max_norm, b.max_qnorm,
                                         b.max_err);
    KnnEngine<T> engine(rows, n, d, topk, block, &a, &b, band);
    out = engine.run(threads);
  }
  out.choice = choice;
  return out;
}

ScreenPrecision knn_precision(ScreenPrecision requested, Index d) {
  if (requested == ScreenPrecision::kAuto) {
    const bool any = (screen_supported(ScreenPrecision::kInt8) && d <= kScreenInt8MaxDim) ||
                     screen_supported(ScreenPrecision::kBFloat16);
    return any ? ScreenPrecision::kAuto : ScreenPrecision::kNone;
  }
  require_screen(requested, d);
  return requested;
}

template <class T>
KnnResult knn(const MatrixView<T>& x, Index topk, const KnnOptions& options, const char* input) {
  if (x.rows < 2) throw std::invalid_argument("neighbours need at least 2 rows");
  if (topk < 1 || topk > x.rows - 1)
    throw std::invalid_argument("topk must be in [1, n - 1] = [1, " + std::to_string(x.rows - 1) + "], got " +
                                std::to_string(topk));
  const std::vector<T> packed = detail::pack_rows(x, input, true, std::max(1, options.threads));
  return knn_packed(packed.data(), x.rows, x.cols, topk, options);
}

template KnnResult knn(const MatrixView<float>&, Index, const KnnOptions&, const char*);
template KnnResult knn(const MatrixView<double>&, Index, const KnnOptions&, const char*);
template KnnResult knn_packed(const float*, Index, Index, Index, const KnnOptions&);
template KnnResult knn_packed(const double*, Index, Index, Index, const KnnOptions&);
template KnnTileChoice knn_tile_choice(const float*, Index, Index, Index, int);
template KnnTileChoice knn_tile_choice(const double*, Index, Index, Index, int);

// ------------------------------------------------------------------------------ metrics

namespace {

// A sparse n x n matrix pair on one mask: row i holds columns cols[start[i] .. start[i+1])
// in ascending order, with the entries p (of P) and q (of Q) there.
struct MaskedPair {
  std::vector<Index> start;
  std::vector<std::int64_t> cols;
  std::vector<double> p, q;
};

// One neighbourhood of row i: its listed neighbours (sorted by index) with their similarity.
struct Neighbour {
  std::int64_t index;
  double similarity;
};

class Lists {
 public:
  // `with_self`: the neighbourhood is i itself (similarity 1) and the first topk - 1 listed.
  Lists(const KnnResult& r, bool with_self) : n_(r.rows), k_(r.topk), sorted_(static_cast<size_t>(n_ * k_)) {
    for (Index i = 0; i < n_; ++i) {
      Neighbour* out = sorted_.data() + i * k_;
      Index listed = 0;
      if (with_self) out[listed++] = {i, 1.0};
      for (Index p = 0; listed < k_; ++p, ++listed)
        out[listed] = {r.index[i * k_ + p], r.similarity[i * k_ + p]};
      std::sort(out, out + k_, [](const Neighbour& a, const Neighbour& b) { return a.index < b.index; });
    }
  }
  const Neighbour* row(Index i) const { return sorted_.data() + i * k_; }
  Index topk() const { return k_; }

 private:
  Index n_, k_;
  std::vector<Neighbour> sorted_;
};

// P = mask o K, Q = mask o L for the mask "j in both neighbourhoods of i" (a = b: one list).
MaskedPair masked(const Lists& a, const Lists& b, Index n) {
  MaskedPair m;
  m.start.assign(static_cast<size_t>(n) + 1, 0);
  const Index k = a.topk();
  for (Index i = 0; i < n; ++i) {
    const Neighbour* x = a.row(i);
    const Neighbour* y = b.row(i);
    Index p = 0, q = 0;
    while (p < k && q < k) {
      if (x[p].index < y[q].index) ++p;
      else if (y[q].index < x[p].index) ++q;
      else {
        m.cols.push_back(x[p].index);
        m.p.push_back(x[p].similarity);
        m.q.push_back(y[q].similarity);
        ++p;
        ++q;
      }
    }
    m.start[i + 1] = static_cast<Index>(m.cols.size());
  }
  return m;
}

// The sums of the HSIC estimators for a masked pair (P, Q); neither is symmetric in general,
// and their diagonals are zero for the unbiased variant (self is not a neighbour there).
HsicSums masked_sums(const MaskedPair& m, Index n) {
  HsicSums t;
  std::vector<double> row_p(static_cast<size_t>(n), 0.0), row_q(static_cast<size_t>(n), 0.0);
  std::vector<double> col_p(static_cast<size_t>(n), 0.0), col_q(static_cast<size_t>(n), 0.0);
  for (Index i = 0; i < n; ++i) {
    for (Index e = m.start[i]; e < m.start[i + 1]; ++e) {
      const std::int64_t j = m.cols[e];
      row_p[i] += m.p[e];
      row_q[i] += m.q[e];
      col_p[j] += m.p[e];
      col_q[j] += m.q[e];
      // tr(P Q) takes P_ij Q_ji: is i in row j of the mask?
      const auto first = m.cols.begin() + m.start[j], last = m.cols.begin() + m.start[j + 1];
      const auto found = std::lower_bound(first, last, static_cast<std::int64_t>(i));
      if (found != last && *found == i) t.trace += m.p[e] * m.q[static_cast<size_t>(found - m.cols.begin())];
    }
  }
  for (Index i = 0; i < n; ++i) {
    t.sum_k += row_p[i];
    t.sum_l += row_q[i];
    t.col_k_row_l += col_p[i] * row_q[i];
    t.col_l_row_k += col_q[i] * row_p[i];
  }
  return t;
}

HsicTerms cknna_of(const KnnResult& a, const KnnResult& b, bool biased) {
  const Index n = a.rows;
  const Lists la(a, biased), lb(b, biased);
  const auto hsic = [&](const Lists& x, const Lists& y) {
    const HsicSums t = masked_sums(masked(x, y, n), n);
    return biased ? hsic_biased(t, n) : hsic_unbiased(t, n);
  };
  return hsic_terms(hsic(la, lb), hsic(la, la), hsic(lb, lb));
}

// Longest common subsequence of two lists of distinct indices: the longest increasing run of
// the positions in `a` of b's elements that `a` holds (patience sorting).
Index lcs_length(const std::int64_t* a, const std::int64_t* b, Index k, std::vector<std::pair<std::int64_t, Index>>& pos,
                 std::vector<Index>& tails) {
  pos.resize(static_cast<size_t>(k));
  for (Index p = 0; p < k; ++p) pos[p] = {a[p], p};
  std::sort(pos.begin(), pos.end());
  tails.clear();
  for (Index q = 0; q < k; ++q) {
    const auto it = std::lower_bound(pos.begin(), pos.end(), std::make_pair(b[q], Index{0}));
    if (it == pos.end() || it->first != b[q]) continue;
    const Index where = it->second;
    const auto t = std::lower_bound(tails.begin(), tails.end(), where);
    if (t == tails.end()) tails.push_back(where);
    else *t = where;
  }
  return static_cast<Index>(tails.size());
}

// Levenshtein distance (unit insertions, deletions, substitutions) of two length-k lists.
Index edit_distance(const std::int64_t* a, const std::int64_t* b, Index k, std::vector<Index>& row) {
  row.resize(static_cast<size_t>(k) + 1);
  for (Index j = 0; j <= k; ++j) row[j] = j;
  for (Index i = 1; i <= k; ++i) {
    Index diagonal = row[0];
    row[0] = i;
    for (Index j = 1; j <= k; ++j) {
      const Index above = row[j];
      row[j] = std::min({above + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[k];
}

}  // namespace

NeighbourhoodScores neighbourhood_scores(const KnnResult& a, const KnnResult& b, int threads) {
  if (a.rows != b.rows || a.topk != b.topk)
    throw std::invalid_argument("the two neighbour lists must have the same rows and topk");
  const Index n = a.rows, k = a.topk;
  if (n < 4) throw std::invalid_argument("neighbourhood metrics need at least 4 rows, got " + std::to_string(n));
  if (k < 1) throw std::invalid_argument("neighbourhood metrics need topk >= 1");

  // Per-row integer counts (any order of summation gives the same totals).
  std::vector<std::int64_t> mutual(static_cast<size_t>(n)), cycle(static_cast<size_t>(n)),
      lcs(static_cast<size_t>(n)), edit(static_cast<size_t>(n));
  constexpr Index kChunk = 4096;
  const long chunks = static_cast<long>((n + kChunk - 1) / kChunk);
  const Lists sorted_a(a, false), sorted_b(b, false);
  parallel_for(std::max(1, threads), chunks, [&](long c, int) {
    std::vector<std::pair<std::int64_t, Index>> pos;
    std::vector<Index> tails, row;
    const Index i1 = std::min(n, (c + 1) * kChunk);
    for (Index i = c * kChunk; i < i1; ++i) {
      const std::int64_t* la = a.index.data() + i * k;
      const std::int64_t* lb = b.index.data() + i * k;
      const Neighbour* sa = sorted_a.row(i);
      const Neighbour* sb = sorted_b.row(i);
      Index common = 0;
      for (Index p = 0, q = 0; p < k && q < k;) {
        if (sa[p].index < sb[q].index) ++p;
        else if (sb[q].index < sa[p].index) ++q;
        else {
          ++common;
          ++p;
          ++q;
        }
      }
      mutual[i] = common;
      // Cycle: does any text-side neighbour j of i have i among its image-side neighbours?
      bool back = false;
      for (Index q = 0; q < k && !back; ++q) {
        const Neighbour* sj = sorted_a.row(lb[q]);
        back = std::binary_search(sj, sj + k, Neighbour{i, 0.0},
                                  [](const Neighbour& x, const Neighbour& y) { return x.index < y.index; });
      }
      cycle[i] = back ? 1 : 0;
      lcs[i] = lcs_length(la, lb, k, pos, tails);
      edit[i] = edit_distance(la, lb, k, row);
    }
  });
  std::int64_t total_mutual = 0, total_cycle = 0, total_lcs = 0, total_edit = 0;
  for (Index i = 0; i < n; ++i) {
    total_mutual += mutual[i];
    total_cycle += cycle[i];
    total_lcs += lcs[i];
    total_edit += edit[i];
  }
  const double nd = static_cast<double>(n), kd = static_cast<double>(k);
  NeighbourhoodScores out;
  out.rows = n;
  out.topk = k;
  out.mutual_knn = static_cast<double>(total_mutual) / (nd * kd);
  out.cycle_knn = static_cast<double>(total_cycle) / nd;
  out.lcs_knn = static_cast<double>(total_lcs) / nd;
  out.edit_distance_knn = 1.0 - static_cast<double>(total_edit) / (nd * kd);
  out.cknna = cknna_of(a, b, false);
  out.cknna_biased = cknna_of(a, b, true);
  return out;
}

}  // namespace fastsas
