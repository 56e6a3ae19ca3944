// Exact bidirectional cosine retrieval ranks from tiles of one GEMM (see pairwise.hpp for
// the exactness argument). Both directions are reduced from the same tiles: every worker
// owns a block of image rows (their counts are private to it) and keeps its own counters
// for the text columns, summed at the end (integers: any order gives the same result).
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
const char* const kNonFinite = "non-finite values (NaN or Inf)";
const char* const kZeroNorm = "zero-norm rows (no direction to normalise)";

template <class T>
[[noreturn]] void throw_bad_rows(const MatrixView<T>& v, const char* input, bool normalise) {
  constexpr size_t kShown = 10;
  std::vector<Index> rows[2];
  Index total[2] = {0, 0};
  for (Index r = 0; r < v.rows; ++r) {
    bool finite = true;
    double norm = 0.0;
    for (Index j = 0; j < v.cols; ++j) {
      const double e = static_cast<double>(v(r, j));
      finite = finite && std::isfinite(e);
      norm += e * e;
    }
    int kind = -1;
    if (!finite || !std::isfinite(norm)) kind = 0;  // overflow is refused as non-finite
    else if (normalise && norm == 0.0) kind = 1;
    if (kind < 0) continue;
    if (rows[kind].size() < kShown) rows[kind].push_back(r);
    ++total[kind];
  }
  if (total[0]) throw BadRowsError(input, kNonFinite, rows[0], total[0]);
  if (total[1]) throw BadRowsError(input, kZeroNorm, rows[1], total[1]);
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
        norm += static_cast<double>(e) * static_cast<double>(e);
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

// The canonical similarity: exact products, float64 sums in a fixed order. One compiled
// copy (never inlined), so equal rows always give equal values.
template <class T>
[[gnu::noinline]] double canonical_dot(const T* a, const T* b, Index d) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  Index k = 0;
  for (; k + 4 <= d; k += 4) {
    s0 += static_cast<double>(a[k]) * static_cast<double>(b[k]);
    s1 += static_cast<double>(a[k + 1]) * static_cast<double>(b[k + 1]);
    s2 += static_cast<double>(a[k + 2]) * static_cast<double>(b[k + 2]);
    s3 += static_cast<double>(a[k + 3]) * static_cast<double>(b[k + 3]);
  }
  for (; k < d; ++k) s0 += static_cast<double>(a[k]) * static_cast<double>(b[k]);
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

// Per-query thresholds: the best canonical similarity among the query's matches (queries
// on side A, matches on side B), and the band [lo, hi] in T around it; +inf for no match.
template <class T>
void thresholds(const std::vector<T>& a, const std::vector<T>& b, Index d, const std::int32_t* codes_a,
                const Groups& groups_b, Index n_a, double band, int threads, std::vector<double>& thr,
                std::vector<T>& lo, std::vector<T>& hi) {
  const double inf = std::numeric_limits<double>::infinity();
  thr.assign(static_cast<size_t>(n_a), inf);
  lo.assign(static_cast<size_t>(n_a), std::numeric_limits<T>::infinity());
  hi.assign(static_cast<size_t>(n_a), std::numeric_limits<T>::infinity());
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
      lo[i] = round_down<T>(best - band);
      hi[i] = round_up<T>(best + band);
    }
  });
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

}  // namespace

template <class T>
RetrievalResult retrieval(const MatrixView<T>& x, const MatrixView<T>& y, const std::int32_t* image_codes,
                          const std::int32_t* text_codes, const RetrievalOptions& options) {
  const Index n = x.rows, m = y.rows, d = x.cols;
  if (y.cols != d) throw std::invalid_argument("images and texts must have the same number of columns");
  if (n < 1 || m < 1 || d < 1) throw std::invalid_argument("images and texts must be non-empty");
  if ((image_codes == nullptr) != (text_codes == nullptr))
    throw std::invalid_argument("give codes for both images and texts, or for neither");
  if (n > std::numeric_limits<std::int32_t>::max() || m > std::numeric_limits<std::int32_t>::max())
    throw std::invalid_argument("at most 2^31 - 1 rows per side");
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
  std::int32_t max_code = 0;
  for (auto c : ic) max_code = std::max(max_code, c);
  for (auto c : tcodes) max_code = std::max(max_code, c);
  if (*std::min_element(ic.begin(), ic.end()) < 0 || *std::min_element(tcodes.begin(), tcodes.end()) < 0)
    throw std::invalid_argument("id codes must be non-negative");
  const Index num_codes = static_cast<Index>(max_code) + 1;

  const std::vector<T> xn = detail::pack_rows(x, "x", true, threads);
  const std::vector<T> yn = detail::pack_rows(y, "y", true, threads);

  const double band = rounding_band<T>(d);
  std::vector<double> thr_i, thr_t;
  std::vector<T> lo_i, hi_i, lo_t, hi_t;
  {
    const Groups text_groups = group_by_code(tcodes.data(), m, num_codes);
    const Groups image_groups = group_by_code(ic.data(), n, num_codes);
    thresholds(xn, yn, d, ic.data(), text_groups, n, band, threads, thr_i, lo_i, hi_i);
    thresholds(yn, xn, d, tcodes.data(), image_groups, m, band, threads, thr_t, lo_t, hi_t);
  }

  RetrievalResult res;
  res.topk = topk;
  std::vector<std::int64_t> image_counts(static_cast<size_t>(n), 0);
  if (topk > 0) {
    res.image_topk.assign(static_cast<size_t>(n * topk), std::numeric_limits<std::int64_t>::max());
    res.image_topk_sim.assign(static_cast<size_t>(n * topk), -std::numeric_limits<double>::infinity());
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
      const Index cols = std::min(tc, m - j0);
      T* const tile = w.tile.data();
      detail::gemm_nt(rows, cols, d, xn.data() + i0 * d, d, yn.data() + j0 * d, d, tile, cols);
      const std::int32_t* __restrict cj = tcodes.data() + j0;
      const T* __restrict lc = lo_t.data() + j0;
      const T* __restrict hc = hi_t.data() + j0;
      std::int32_t* __restrict ccount = w.text_counts.data() + j0;
      for (Index r = 0; r < rows; ++r) {
        const Index i = i0 + r;
        const T* __restrict c = tile + r * cols;
        const T lr = lo_i[i], hr = hi_i[i];
        const std::int32_t cr = ic[i];
        std::int32_t count = 0, ambiguous = 0;
        for (Index j = 0; j < cols; ++j) {
          const T s = c[j];
          const std::int32_t other = cr != cj[j];
          count += static_cast<std::int32_t>(s > hr) & other;
          ccount[j] += static_cast<std::int32_t>(s > hc[j]) & other;
          ambiguous |= (static_cast<std::int32_t>(s >= lr) & static_cast<std::int32_t>(s <= hr)) |
                       (static_cast<std::int32_t>(s >= lc[j]) & static_cast<std::int32_t>(s <= hc[j]));
        }
        if (ambiguous) {
          // Entries within the rounding band of a threshold: listed without branches, then
          // decided exactly with the canonical similarity.
          std::int32_t* __restrict listed = w.band.data();
          Index found = 0;
          for (Index j = 0; j < cols; ++j) {
            const T s = c[j];
            listed[found] = static_cast<std::int32_t>(j);
            found += (static_cast<Index>(s >= lr) & static_cast<Index>(s <= hr)) |
                     (static_cast<Index>(s >= lc[j]) & static_cast<Index>(s <= hc[j]));
          }
          const T* xi = xn.data() + i * d;
          for (Index p = 0; p < found; ++p) {
            const Index j = listed[p];
            if (cr == cj[j]) continue;  // a match never counts, in either direction
            const T s = c[j];
            const bool row_band = s >= lr && s <= hr;
            const bool col_band = s >= lc[j] && s <= hc[j];
            const double v = canonical_dot(xi, yn.data() + (j0 + j) * d, d);
            ++w.rechecked;
            if (row_band && v > thr_i[i]) ++count;
            if (col_band && v > thr_t[j0 + j]) ++ccount[j];
          }
        }
        image_counts[i] += count;
        if (topk > 0) {
          double* rv = res.image_topk_sim.data() + i * topk;
          std::int64_t* ri = res.image_topk.data() + i * topk;
          for (Index j = 0; j < cols; ++j) {
            const double s = static_cast<double>(c[j]);
            if (s >= rv[topk - 1]) TopK::insert(rv, ri, topk, s, j0 + j);
            const Index t = j0 + j;
            double* cv = w.text_top_val.data() + t * topk;
            if (s >= cv[topk - 1]) TopK::insert(cv, w.text_top_idx.data() + t * topk, topk, s, i);
          }
        }
      }
    }
  });

  // Merge the workers' text-side state (integers; the top-k order is a total order).
  std::vector<std::int64_t> text_counts(static_cast<size_t>(m), 0);
  for (const auto& w : ws) {
    for (Index j = 0; j < m; ++j) text_counts[j] += w.text_counts[j];
    res.rechecked += w.rechecked;
  }
  if (topk > 0) {
    res.text_topk = ws[0].text_top_idx;
    res.text_topk_sim = ws[0].text_top_val;
    for (size_t wid = 1; wid < ws.size(); ++wid)
      for (Index j = 0; j < m; ++j)
        for (Index p = 0; p < topk; ++p)
          TopK::insert(res.text_topk_sim.data() + j * topk, res.text_topk.data() + j * topk, topk,
                       ws[wid].text_top_val[j * topk + p], ws[wid].text_top_idx[j * topk + p]);
    const double nan = std::numeric_limits<double>::quiet_NaN();
    auto pad = [&](std::vector<std::int64_t>& idx, std::vector<double>& val) {
      for (size_t p = 0; p < idx.size(); ++p)
        if (idx[p] == std::numeric_limits<std::int64_t>::max()) {
          idx[p] = -1;
          val[p] = nan;
        }
    };
    pad(res.image_topk, res.image_topk_sim);
    pad(res.text_topk, res.text_topk_sim);
  }

  res.image_ranks.assign(static_cast<size_t>(n), 0);
  res.text_ranks.assign(static_cast<size_t>(m), 0);
  for (Index i = 0; i < n; ++i)
    if (std::isfinite(thr_i[i])) res.image_ranks[i] = 1 + image_counts[i];
  for (Index j = 0; j < m; ++j)
    if (std::isfinite(thr_t[j])) res.text_ranks[j] = 1 + text_counts[j];
  return res;
}

template RetrievalResult retrieval(const MatrixView<float>&, const MatrixView<float>&, const std::int32_t*,
                                   const std::int32_t*, const RetrievalOptions&);
template RetrievalResult retrieval(const MatrixView<double>&, const MatrixView<double>&, const std::int32_t*,
                                   const std::int32_t*, const RetrievalOptions&);

}  // namespace fastsas
