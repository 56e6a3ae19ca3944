// Exact bidirectional cosine retrieval ranks from tiles of one GEMM (see pairwise.hpp for
// the exactness argument). Both directions are reduced from the same tiles: every worker
// owns a block of image rows (their counts are private to it) and keeps its own counters
// for the text columns, summed at the end (integers: any order gives the same result).
// The in-process `retrieval` and the sharded entry points (thresholds of a query block,
// counts of one block pair) share the threshold, band and tile code below.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#include "fastsas/blas.hpp"
#include "fastsas/pairwise.hpp"
#include "fastsas/parallel.hpp"

namespace fastsas {

namespace detail {

void gemm_nt(Index m, Index n, Index k, const float* a, Index lda, const float* b, Index ldb, float* c,
             Index ldc) {
  scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n),
                    static_cast<int>(k), 1.0f, a, static_cast<int>(lda), b, static_cast<int>(ldb), 0.0f, c,
                    static_cast<int>(ldc));
}

void gemm_nt(Index m, Index n, Index k, const double* a, Index lda, const double* b, Index ldb, double* c,
             Index ldc) {
  scipy_cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n),
                    static_cast<int>(k), 1.0, a, static_cast<int>(lda), b, static_cast<int>(ldb), 0.0, c,
                    static_cast<int>(ldc));
}

namespace {

constexpr Index kPackChunk = 4096;

template <class T>
[[noreturn]] void throw_bad_rows(const MatrixView<T>& v, const char* input, bool normalise) {
  std::vector<Index> rows[3];
  Index total[3] = {0, 0, 0};
  for (Index r = 0; r < v.rows; ++r) {
    bool finite = true;
    double norm = 0.0;
    for (Index j = 0; j < v.cols; ++j) {
      const double e = static_cast<double>(v(r, j));
      finite = finite && std::isfinite(e);
      norm += e * e;
    }
    int kind = -1;
    if (!finite) kind = 0;
    else if (!std::isfinite(norm)) kind = 2;
    else if (normalise && norm == 0.0) kind = 1;
    if (kind < 0) continue;
    if (rows[kind].size() < kBadRowsShown) rows[kind].push_back(r);
    ++total[kind];
  }
  if (total[0]) throw BadRowsError(input, kNonFiniteRows, rows[0], total[0]);
  if (total[2]) throw BadRowsError(input, kTooLargeToNormaliseRows, rows[2], total[2]);
  if (total[1]) throw BadRowsError(input, kZeroNormRows, rows[1], total[1]);
  throw std::logic_error("fastsas: a chunk reported a bad row that a rescan did not find");
}

}  // namespace

template <class T>
std::vector<T> pack_rows(const MatrixView<T>& v, const char* input, bool normalise, int threads) {
  const Index n = v.rows, d = v.cols;
  std::vector<T> out(static_cast<size_t>(n * d));
  const long chunks = static_cast<long>((n + kPackChunk - 1) / kPackChunk);
  std::vector<char> bad(static_cast<size_t>(chunks), 0);
  parallel_for(threads, chunks, [&](long c, int) {
    const Index r0 = c * kPackChunk, r1 = std::min(n, r0 + kPackChunk);
    for (Index r = r0; r < r1; ++r) {
      T* o = out.data() + r * d;
      double norm = 0.0;
      for (Index j = 0; j < d; ++j) {
        const T e = v(r, j);
        o[j] = e;
        norm = std::fma(static_cast<double>(e), static_cast<double>(e), norm);  // see canonical_dot
      }
      // A NaN or Inf anywhere in the row makes its squared norm non-finite.
      if (!std::isfinite(norm) || (normalise && norm == 0.0)) {
        bad[static_cast<size_t>(c)] = 1;
        return;
      }
      if (normalise) {
        const double inv = 1.0 / std::sqrt(norm);
        for (Index j = 0; j < d; ++j) o[j] = static_cast<T>(static_cast<double>(o[j]) * inv);
      }
    }
  });
  for (char b : bad)
    if (b) throw_bad_rows(v, input, normalise);
  return out;
}

template std::vector<float> pack_rows(const MatrixView<float>&, const char*, bool, int);
template std::vector<double> pack_rows(const MatrixView<double>&, const char*, bool, int);

}  // namespace detail

namespace {

// The canonical similarity: float64 fused multiply-adds in a fixed order. One compiled copy
// (never inlined), so equal rows always give equal values. The fma is written out because
// whether `s += a * b` is contracted depends on the compiler, its flags (-march=native or
// not) and even the loop part it vectorises; std::fma is one rounding everywhere, so the
// CPU builds and the GPU kernels (cuda/fastsas_common.cuh) share one definition. For
// float32 rows the product is exact in double, so nothing changes for them.
template <class T>
[[gnu::noinline]] double canonical_dot(const T* a, const T* b, Index d) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  Index k = 0;
  for (; k + 4 <= d; k += 4) {
    s0 = std::fma(static_cast<double>(a[k]), static_cast<double>(b[k]), s0);
    s1 = std::fma(static_cast<double>(a[k + 1]), static_cast<double>(b[k + 1]), s1);
    s2 = std::fma(static_cast<double>(a[k + 2]), static_cast<double>(b[k + 2]), s2);
    s3 = std::fma(static_cast<double>(a[k + 3]), static_cast<double>(b[k + 3]), s3);
  }
  for (; k < d; ++k) s0 = std::fma(static_cast<double>(a[k]), static_cast<double>(b[k]), s0);
  return (s0 + s1) + (s2 + s3);
}

// Largest T <= v and smallest T >= v.
template <class T>
T round_down(double v) {
  T f = static_cast<T>(v);
  if (static_cast<double>(f) > v) f = std::nextafter(f, -std::numeric_limits<T>::infinity());
  return f;
}
template <class T>
T round_up(double v) {
  T f = static_cast<T>(v);
  if (static_cast<double>(f) < v) f = std::nextafter(f, std::numeric_limits<T>::infinity());
  return f;
}

// Rigorous bound on |tile entry - canonical value| for unit rows of dimension d: a T-precision
// dot product in any summation order errs by at most gamma_d * sum |a_k b_k| (Higham), with
// sum |a_k b_k| <= ||a|| ||b|| <= 1.01 for rows normalised then rounded to T; the canonical
// value errs by far less. Twice that, plus a floor, is the band re-decided exactly.
template <class T>
double rounding_band(Index d) {
  const double u = std::ldexp(1.0, -std::numeric_limits<T>::digits);  // unit roundoff
  return 2.0 * static_cast<double>(d + 8) * u + 16.0 * u;
}

// Sorted (best first) fixed-size candidate list: better = larger value, then smaller index.
struct TopK {
  static bool better(double va, std::int64_t ia, double vb, std::int64_t ib) {
    return va > vb || (va == vb && ia < ib);
  }
  static void insert(double* val, std::int64_t* idx, Index k, double v, std::int64_t i) {
    if (!better(v, i, val[k - 1], idx[k - 1])) return;
    Index p = k - 1;
    while (p > 0 && better(v, i, val[p - 1], idx[p - 1])) {
      val[p] = val[p - 1];
      idx[p] = idx[p - 1];
      --p;
    }
    val[p] = v;
    idx[p] = i;
  }
};

struct Groups {
  std::vector<Index> offsets;  // per code
  std::vector<Index> members;
};

Groups group_by_code(const std::int32_t* codes, Index n, Index num_codes) {
  Groups g;
  g.offsets.assign(static_cast<size_t>(num_codes + 1), 0);
  for (Index i = 0; i < n; ++i) ++g.offsets[static_cast<size_t>(codes[i]) + 1];
  for (Index c = 0; c < num_codes; ++c) g.offsets[c + 1] += g.offsets[c];
  g.members.resize(static_cast<size_t>(n));
  std::vector<Index> next(g.offsets.begin(), g.offsets.end() - 1);
  for (Index i = 0; i < n; ++i) g.members[static_cast<size_t>(next[static_cast<size_t>(codes[i])]++)] = i;
  return g;
}

// Per-query threshold: the best canonical similarity among the query's matches (queries on
// side A, matches on side B), +inf for a query without a match.
template <class T>
std::vector<double> best_match(const std::vector<T>& a, const std::vector<T>& b, Index d,
                               const std::int32_t* codes_a, const Groups& groups_b, Index n_a, int threads) {
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> thr(static_cast<size_t>(n_a), inf);
  constexpr Index kChunk = 1024;
  const long chunks = static_cast<long>((n_a + kChunk - 1) / kChunk);
  parallel_for(threads, chunks, [&](long c, int) {
    const Index r1 = std::min(n_a, (c + 1) * kChunk);
    for (Index i = c * kChunk; i < r1; ++i) {
      const size_t code = static_cast<size_t>(codes_a[i]);
      if (code + 1 >= groups_b.offsets.size()) continue;
      const Index m0 = groups_b.offsets[code], m1 = groups_b.offsets[code + 1];
      if (m0 == m1) continue;
      double best = -inf;
      for (Index p = m0; p < m1; ++p)
        best = std::max(best, canonical_dot(a.data() + i * d, b.data() + groups_b.members[p] * d, d));
      thr[i] = best;
    }
  });
  return thr;
}

// The thresholds of one side and the rounding band [lo, hi] in T around each of them; a
// query without a match (+inf) has lo = hi = +inf, so nothing ever counts against it.
template <class T>
struct Bounds {
  std::vector<double> thr;
  std::vector<T> lo, hi;
};

template <class T>
Bounds<T> bounds_of(std::vector<double> thr, double band) {
  Bounds<T> b;
  b.lo.assign(thr.size(), std::numeric_limits<T>::infinity());
  b.hi.assign(thr.size(), std::numeric_limits<T>::infinity());
  for (size_t i = 0; i < thr.size(); ++i)
    if (std::isfinite(thr[i])) {
      b.lo[i] = round_down<T>(thr[i] - band);
      b.hi[i] = round_up<T>(thr[i] + band);
    }
  b.thr = std::move(thr);
  return b;
}

template <class T>
struct Worker {
  std::vector<T> tile;
  std::vector<std::int32_t> text_counts;  // candidates beating each text's threshold
  std::vector<std::int32_t> band;         // columns of one tile row inside a rounding band
  std::vector<double> text_top_val;       // n_texts x topk
  std::vector<std::int64_t> text_top_idx;
  std::int64_t rechecked = 0;
};

// Packed, normalised rows of both sides with their codes and bounds: what the tile loop reads.
template <class T>
struct Sides {
  const T* xn;
  const T* yn;
  Index n, m, d;
  const std::int32_t* ic;
  const std::int32_t* tcodes;
  const Bounds<T>& bi;
  const Bounds<T>& bt;
};

// Streams the (n x m) similarity tiles once and adds to image_counts[i] (text_counts[j]) the
// non-matching texts (images) whose canonical similarity beats image i's (text j's)
// threshold; with topk > 0 also fills res's top-k lists. Every count is a pure function of
// the pair of rows, so any split of the rows into calls gives the same sums.
template <class T>
std::int64_t count_tiles(const Sides<T>& s, Index tr, Index tc, int threads, Index topk,
                         std::int64_t* image_counts, std::int64_t* text_counts, RetrievalResult* res) {
  const Index n = s.n, m = s.m, d = s.d;
  const T* const xn = s.xn;
  const T* const yn = s.yn;
  const std::int32_t* const ic = s.ic;
  const std::vector<double>& thr_i = s.bi.thr;
  const std::vector<double>& thr_t = s.bt.thr;
  const std::vector<T>& lo_i = s.bi.lo;
  const std::vector<T>& hi_i = s.bi.hi;
  if (topk > 0) {
    res->image_topk.assign(static_cast<size_t>(n * topk), std::numeric_limits<std::int64_t>::max());
    res->image_topk_sim.assign(static_cast<size_t>(n * topk), -std::numeric_limits<double>::infinity());
  }
  const int workers = static_cast<int>(std::max<long>(1, std::min<long>(threads, (n + tr - 1) / tr)));
  std::vector<Worker<T>> ws(static_cast<size_t>(workers));
  for (auto& w : ws) {
    w.tile.resize(static_cast<size_t>(std::min(tr, n) * std::min(tc, m)));
    w.text_counts.assign(static_cast<size_t>(m), 0);
    w.band.resize(static_cast<size_t>(std::min(tc, m)));
    if (topk > 0) {
      w.text_top_val.assign(static_cast<size_t>(m * topk), -std::numeric_limits<double>::infinity());
      w.text_top_idx.assign(static_cast<size_t>(m * topk), std::numeric_limits<std::int64_t>::max());
    }
  }

  const long row_blocks = static_cast<long>((n + tr - 1) / tr);
  parallel_for(workers, row_blocks, [&](long ib, int wid) {
    Worker<T>& w = ws[static_cast<size_t>(wid)];
    const Index i0 = ib * tr, rows = std::min(tr, n - i0);
    for (Index j0 = 0; j0 < m; j0 += tc) {
      if (j0 > 0) check_stop();  // a row block spans the whole gallery: stoppable between its tiles
      const Index cols = std::min(tc, m - j0);
      T* const tile = w.tile.data();
      detail::gemm_nt(rows, cols, d, xn + i0 * d, d, yn + j0 * d, d, tile, cols);
      const std::int32_t* __restrict cj = s.tcodes + j0;
      const T* __restrict lc = s.bt.lo.data() + j0;
      const T* __restrict hc = s.bt.hi.data() + j0;
      std::int32_t* __restrict ccount = w.text_counts.data() + j0;
      for (Index r = 0; r < rows; ++r) {
        const Index i = i0 + r;
        const T* __restrict c = tile + r * cols;
        const T lr = lo_i[i], hr = hi_i[i];
        const std::int32_t cr = ic[i];
        std::int32_t count = 0, ambiguous = 0;
        for (Index j = 0; j < cols; ++j) {
          const T v = c[j];
          const std::int32_t other = cr != cj[j];
          count += static_cast<std::int32_t>(v > hr) & other;
          ccount[j] += static_cast<std::int32_t>(v > hc[j]) & other;
          ambiguous |= (static_cast<std::int32_t>(v >= lr) & static_cast<std::int32_t>(v <= hr)) |
                       (static_cast<std::int32_t>(v >= lc[j]) & static_cast<std::int32_t>(v <= hc[j]));
        }
        if (ambiguous) {
          // Entries within the rounding band of a threshold: listed without branches, then
          // decided exactly with the canonical similarity.
          std::int32_t* __restrict listed = w.band.data();
          Index found = 0;
          for (Index j = 0; j < cols; ++j) {
            const T v = c[j];
            listed[found] = static_cast<std::int32_t>(j);
            found += (static_cast<Index>(v >= lr) & static_cast<Index>(v <= hr)) |
                     (static_cast<Index>(v >= lc[j]) & static_cast<Index>(v <= hc[j]));
          }
          const T* xi = xn + i * d;
          for (Index p = 0; p < found; ++p) {
            const Index j = listed[p];
            if (cr == cj[j]) continue;  // a match never counts, in either direction
            const T v = c[j];
            const bool row_band = v >= lr && v <= hr;
            const bool col_band = v >= lc[j] && v <= hc[j];
            const double exact = canonical_dot(xi, yn + (j0 + j) * d, d);
            ++w.rechecked;
            if (row_band && exact > thr_i[i]) ++count;
            if (col_band && exact > thr_t[j0 + j]) ++ccount[j];
          }
        }
        image_counts[i] += count;
        if (topk > 0) {
          double* rv = res->image_topk_sim.data() + i * topk;
          std::int64_t* ri = res->image_topk.data() + i * topk;
          for (Index j = 0; j < cols; ++j) {
            const double v = static_cast<double>(c[j]);
            if (v >= rv[topk - 1]) TopK::insert(rv, ri, topk, v, j0 + j);
            const Index t = j0 + j;
            double* cv = w.text_top_val.data() + t * topk;
            if (v >= cv[topk - 1]) TopK::insert(cv, w.text_top_idx.data() + t * topk, topk, v, i);
          }
        }
      }
    }
  });

  // Merge the workers' text-side state (integers; the top-k order is a total order).
  std::int64_t rechecked = 0;
  for (const auto& w : ws) {
    for (Index j = 0; j < m; ++j) text_counts[j] += w.text_counts[j];
    rechecked += w.rechecked;
  }
  if (topk > 0) {
    res->text_topk = ws[0].text_top_idx;
    res->text_topk_sim = ws[0].text_top_val;
    for (size_t wid = 1; wid < ws.size(); ++wid)
      for (Index j = 0; j < m; ++j)
        for (Index p = 0; p < topk; ++p)
          TopK::insert(res->text_topk_sim.data() + j * topk, res->text_topk.data() + j * topk, topk,
                       ws[wid].text_top_val[j * topk + p], ws[wid].text_top_idx[j * topk + p]);
    const double nan = std::numeric_limits<double>::quiet_NaN();
    auto pad = [&](std::vector<std::int64_t>& idx, std::vector<double>& val) {
      for (size_t p = 0; p < idx.size(); ++p)
        if (idx[p] == std::numeric_limits<std::int64_t>::max()) {
          idx[p] = -1;
          val[p] = nan;
        }
    };
    pad(res->image_topk, res->image_topk_sim);
    pad(res->text_topk, res->text_topk_sim);
  }
  return rechecked;
}

void check_row_limits(Index n, Index m) {
  if (n > std::numeric_limits<std::int32_t>::max() || m > std::numeric_limits<std::int32_t>::max())
    throw std::invalid_argument("at most 2^31 - 1 rows per side");
}

std::int32_t max_code(const std::int32_t* a, Index n, const std::int32_t* b, Index m) {
  std::int32_t top = 0;
  for (Index i = 0; i < n; ++i) top = std::max(top, a[i]);
  for (Index j = 0; j < m; ++j) top = std::max(top, b[j]);
  if ((n > 0 && *std::min_element(a, a + n) < 0) || (m > 0 && *std::min_element(b, b + m) < 0))
    throw std::invalid_argument("id codes must be non-negative");
  return top;
}

}  // namespace

template <class T>
RetrievalResult retrieval(const MatrixView<T>& x, const MatrixView<T>& y, const std::int32_t* image_codes,
                          const std::int32_t* text_codes, const RetrievalOptions& options) {
  const Index n = x.rows, m = y.rows, d = x.cols;
  if (y.cols != d) throw std::invalid_argument("images and texts must have the same number of columns");
  if (n < 1 || m < 1 || d < 1) throw std::invalid_argument("images and texts must be non-empty");
  if ((image_codes == nullptr) != (text_codes == nullptr))
    throw std::invalid_argument("give codes for both images and texts, or for neither");
  check_row_limits(n, m);
  const int threads = std::max(1, options.threads);
  const Index tr = options.tile_rows > 0 ? options.tile_rows : kRetrievalTileRows;
  const Index tc = options.tile_cols > 0 ? options.tile_cols : kRetrievalTileCols;
  const Index topk = std::max<Index>(0, options.topk);
  blas::use_calling_thread_only();

  // Ground truth as codes: equal codes match.
  std::vector<std::int32_t> ic(static_cast<size_t>(n)), tcodes(static_cast<size_t>(m));
  if (image_codes == nullptr) {
    if (n != m) throw std::invalid_argument("without ids, images and texts must have the same number of rows");
    for (Index i = 0; i < n; ++i) ic[i] = tcodes[i] = static_cast<std::int32_t>(i);
  } else {
    std::copy(image_codes, image_codes + n, ic.begin());
    std::copy(text_codes, text_codes + m, tcodes.begin());
  }
  const Index num_codes = static_cast<Index>(max_code(ic.data(), n, tcodes.data(), m)) + 1;

  const std::vector<T> xn = detail::pack_rows(x, "x", true, threads);
  const std::vector<T> yn = detail::pack_rows(y, "y", true, threads);

  const double band = rounding_band<T>(d);
  std::vector<double> thr_i, thr_t;
  {
    const Groups text_groups = group_by_code(tcodes.data(), m, num_codes);
    const Groups image_groups = group_by_code(ic.data(), n, num_codes);
    thr_i = best_match(xn, yn, d, ic.data(), text_groups, n, threads);
    thr_t = best_match(yn, xn, d, tcodes.data(), image_groups, m, threads);
  }
  const Bounds<T> bi = bounds_of<T>(std::move(thr_i), band), bt = bounds_of<T>(std::move(thr_t), band);

  RetrievalResult res;
  res.topk = topk;
  std::vector<std::int64_t> image_counts(static_cast<size_t>(n), 0), text_counts(static_cast<size_t>(m), 0);
  const Sides<T> sides{xn.data(), yn.data(), n, m, d, ic.data(), tcodes.data(), bi, bt};
  res.rechecked = count_tiles(sides, tr, tc, threads, topk, image_counts.data(), text_counts.data(), &res);

  res.image_ranks.assign(static_cast<size_t>(n), 0);
  res.text_ranks.assign(static_cast<size_t>(m), 0);
  for (Index i = 0; i < n; ++i)
    if (std::isfinite(bi.thr[i])) res.image_ranks[i] = 1 + image_counts[i];
  for (Index j = 0; j < m; ++j)
    if (std::isfinite(bt.thr[j])) res.text_ranks[j] = 1 + text_counts[j];
  return res;
}

template RetrievalResult retrieval(const MatrixView<float>&, const MatrixView<float>&, const std::int32_t*,
                                   const std::int32_t*, const RetrievalOptions&);
template RetrievalResult retrieval(const MatrixView<double>&, const MatrixView<double>&, const std::int32_t*,
                                   const std::int32_t*, const RetrievalOptions&);

template <class T>
std::vector<double> retrieval_thresholds(const MatrixView<T>& queries, const MatrixView<T>& candidates,
                                         const std::int32_t* query_codes, const std::int32_t* candidate_codes,
                                         const char* query_input, const char* candidate_input, int threads) {
  const Index n = queries.rows, m = candidates.rows, d = queries.cols;
  if (candidates.cols != d) throw std::invalid_argument("queries and candidates must have the same number of columns");
  if (d < 1) throw std::invalid_argument("queries and candidates must have at least one column");
  check_row_limits(n, m);
  threads = std::max(1, threads);
  const Index num_codes = static_cast<Index>(max_code(query_codes, n, candidate_codes, m)) + 1;
  const std::vector<T> qn = detail::pack_rows(queries, query_input, true, threads);
  const std::vector<T> cn = detail::pack_rows(candidates, candidate_input, true, threads);
  return best_match(qn, cn, d, query_codes, group_by_code(candidate_codes, m, num_codes), n, threads);
}

template std::vector<double> retrieval_thresholds(const MatrixView<float>&, const MatrixView<float>&,
                                                  const std::int32_t*, const std::int32_t*, const char*,
                                                  const char*, int);
template std::vector<double> retrieval_thresholds(const MatrixView<double>&, const MatrixView<double>&,
                                                  const std::int32_t*, const std::int32_t*, const char*,
                                                  const char*, int);

template <class T>
RetrievalCounts retrieval_counts(const MatrixView<T>& x, const MatrixView<T>& y, const std::int32_t* image_codes,
                                 const std::int32_t* text_codes, const double* image_thresholds,
                                 const double* text_thresholds, const RetrievalOptions& options) {
  const Index n = x.rows, m = y.rows, d = x.cols;
  if (y.cols != d) throw std::invalid_argument("images and texts must have the same number of columns");
  if (n < 1 || m < 1 || d < 1) throw std::invalid_argument("images and texts must be non-empty");
  check_row_limits(n, m);
  for (Index i = 0; i < n; ++i)
    if (std::isnan(image_thresholds[i])) throw std::invalid_argument("image thresholds must not be NaN");
  for (Index j = 0; j < m; ++j)
    if (std::isnan(text_thresholds[j])) throw std::invalid_argument("text thresholds must not be NaN");
  const int threads = std::max(1, options.threads);
  const Index tr = options.tile_rows > 0 ? options.tile_rows : kRetrievalTileRows;
  const Index tc = options.tile_cols > 0 ? options.tile_cols : kRetrievalTileCols;
  blas::use_calling_thread_only();

  const std::vector<T> xn = detail::pack_rows(x, "x", true, threads);
  const std::vector<T> yn = detail::pack_rows(y, "y", true, threads);
  const double band = rounding_band<T>(d);
  const Bounds<T> bi = bounds_of<T>(std::vector<double>(image_thresholds, image_thresholds + n), band);
  const Bounds<T> bt = bounds_of<T>(std::vector<double>(text_thresholds, text_thresholds + m), band);

  RetrievalCounts out;
  out.image_counts.assign(static_cast<size_t>(n), 0);
  out.text_counts.assign(static_cast<size_t>(m), 0);
  const Sides<T> sides{xn.data(), yn.data(), n, m, d, image_codes, text_codes, bi, bt};
  out.rechecked = count_tiles(sides, tr, tc, threads, 0, out.image_counts.data(), out.text_counts.data(), nullptr);
  return out;
}

template RetrievalCounts retrieval_counts(const MatrixView<float>&, const MatrixView<float>&, const std::int32_t*,
                                          const std::int32_t*, const double*, const double*,
                                          const RetrievalOptions&);
template RetrievalCounts retrieval_counts(const MatrixView<double>&, const MatrixView<double>&, const std::int32_t*,
                                          const std::int32_t*, const double*, const double*,
                                          const RetrievalOptions&);

}  // namespace fastsas
