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
#include "fastsas/exact.hpp"
#include "fastsas/pairwise.hpp"
#include "fastsas/parallel.hpp"
#include "fastsas/screen.hpp"

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

// ------------------------------------------------------------------ exact ties of integer rows
//
// Rows whose coordinates are all integers (sign- or int8-quantised embeddings, binary codes,
// bool / int8 / uint8 input) have rational squared cosines, and mathematically equal cosines
// must tie: a canonical value of normalised, rounded rows would break such ties by rounding.
// For a query row x, a candidate y and the query's best match m, all integer rows, the
// comparison cos(x, y) > cos(x, m) is decided exactly whenever the canonical values lie
// within tie_band of each other (outside it the canonical order is the exact order):
//   p = x.y, q = x.m (exact int64), Y = |y|^2, M = |m|^2;
//   signs first (p >= 0 > q: y wins; p < 0 <= q: m wins), then p^2 M against q^2 Y in 128-bit
//   integers (reversed for negative p and q).
// An integer row has |x|^2 <= 2^40 (kIntegerRowNorm2Max), so |p|, |q| <= 2^40 and p^2 M < 2^120. Rows that are not
// all integers compare by their canonical values, exactly as before.
__extension__ typedef __int128 Int128;

template <class T>
struct IntRows {
  const MatrixView<T>* v = nullptr;
  std::vector<std::int64_t> norm2;  // |row|^2 of an integer row, 0 for any other row
  bool any = false;

  bool is(Index r) const { return any && norm2[static_cast<size_t>(r)] != 0; }
  std::int64_t dot(Index r, const IntRows& other, Index c) const {
    std::int64_t acc = 0;
    for (Index k = 0; k < v->cols; ++k)
      acc += static_cast<std::int64_t>((*v)(r, k)) * static_cast<std::int64_t>((*other.v)(c, k));
    return acc;
  }
};

// Which rows of v hold only integers (with |row|^2 <= 2^40); a float row stops at its first
// fractional coordinate, so ordinary embeddings cost one comparison per row.
template <class T>
IntRows<T> integer_rows(const MatrixView<T>& v, int threads) {
  IntRows<T> out;
  out.v = &v;
  out.norm2.assign(static_cast<size_t>(v.rows), 0);
  std::vector<char> found(static_cast<size_t>(std::max(1, threads)), 0);
  parallel_for(threads, static_cast<long>((v.rows + 4095) / 4096), [&](long c, int wid) {
    for (Index r = c * 4096; r < std::min(v.rows, (c + 1) * 4096); ++r) {
      double sum = 0.0;
      bool integer = true;
      for (Index k = 0; k < v.cols && integer; ++k) {
        const double e = static_cast<double>(v(r, k));
        sum += e * e;  // exact: integers below 2^20, sums below 2^41
        integer = e == std::nearbyint(e) && sum <= kIntegerRowNorm2Max;
      }
      if (integer && sum > 0) {
        out.norm2[static_cast<size_t>(r)] = static_cast<std::int64_t>(sum);
        found[static_cast<size_t>(wid)] = 1;
      }
    }
  });
  for (char f : found) out.any = out.any || f;
  return out;
}

// Sign of cos(x, y) - cos(x, m) for p = x.y, Y = |y|^2, q = x.m, M = |m|^2 (Y, M > 0).
int compare_cosines(std::int64_t p, std::int64_t Y, std::int64_t q, std::int64_t M) {
  if ((p >= 0) != (q >= 0)) return p >= 0 ? 1 : -1;
  const Int128 lhs = static_cast<Int128>(p) * p * M, rhs = static_cast<Int128>(q) * q * Y;
  const int c = lhs > rhs ? 1 : (lhs < rhs ? -1 : 0);
  return p >= 0 ? c : -c;
}

// Twice a bound on |canonical value - exact cosine of the input rows|: normalisation in
// float64 (a square root, a division, a product: relative 5 * 2^-53 per coordinate) and the
// rounding to T (u_T) perturb each coordinate by a relative e = u_T + 5 * 2^-53, so the
// stored rows' dot product errs by <= (2e + e^2) <= 2.01 e; the canonical sum adds
// gamma_{d+3} |a| |b| <= 1.01 gamma_{d+3}. Two canonical values further apart than this are
// in the order of the exact cosines.
template <class T>
double tie_band(Index d) {
  const double e = std::ldexp(1.0, -std::numeric_limits<T>::digits) + 5.0 * 0x1p-53;
  const double n = static_cast<double>(d + 3) * 0x1p-53;
  return 2.0 * 1.01 * (2.01 * e + 1.01 * n / (1.0 - n));
}

}  // namespace

double retrieval_tie_band(Index d, bool float64_rows) {
  return float64_rows ? tie_band<double>(d) : tie_band<float>(d);
}

namespace {

// The integer rows of both sides and the tie band: what the exact decisions read.
template <class T>
struct Ties {
  const IntRows<T>& a;  // query side
  const IntRows<T>& b;  // candidate side
  double band;
};

// Among candidates of query i with canonical values within tie_band of the best value t (all
// integer rows, like the query), the exact best; its (x.m, |m|^2) become the query's exact
// threshold. Leaves `out` empty when the query or any such candidate is not an integer row.
template <class T, class Candidates>
void exact_best(const Ties<T>& ties, Index i, double t, const Candidates& each_candidate, ExactThreshold* out) {
  *out = ExactThreshold{};
  if (!ties.a.is(i)) return;
  bool mixed = false;
  std::int64_t q = 0, M = 0;
  each_candidate([&](Index j, double v) {
    if (mixed || v < t - ties.band) return;
    if (!ties.b.is(j)) {
      mixed = true;
      return;
    }
    const std::int64_t p = ties.a.dot(i, ties.b, j), Y = ties.b.norm2[static_cast<size_t>(j)];
    if (M == 0 || compare_cosines(p, Y, q, M) > 0) {
      q = p;
      M = Y;
    }
  });
  if (!mixed && M != 0) *out = ExactThreshold{q, M};
}

// Whether a candidate with canonical value v beats the threshold t of a query whose exact
// threshold is e; cand: the candidate's row, p its exact dot product with the query (called
// only when needed).
template <class T, class Dot>
bool beats(double v, double t, const ExactThreshold& e, const IntRows<T>& cands, Index cand, double band,
           const Dot& dot) {
  if (e.norm2 == 0 || !cands.is(cand) || std::fabs(v - t) > band) return v > t;
  return compare_cosines(dot(), cands.norm2[static_cast<size_t>(cand)], e.dot, e.norm2) > 0;
}

// Per-query threshold: the best canonical similarity among the query's matches (queries on
// side A, matches on side B), +inf for a query without a match.
//
// Fine ids (few matches per query) take one canonical dot product per (query, match) pair.
// A coarse id (a code with many (query, match) pairs: classes, sites, several thousand
// captions of one image) would make that scalar work grow as |queries| x |matches| x d, so
// its pairs go through tiles of one GEMM in T instead: per query the running maximum M of
// its tile values, and every match whose tile value is >= M - 2 band. The best canonical
// match is always among those (its tile value is >= s* - band >= M - 2 band, band being
// rounding_band<T>'s bound on |tile - canonical|), and the threshold is the canonical
// maximum over them: the same value as the scalar loop.
constexpr Index kCoarseMatches = 32;       // a code is coarse with at least this many matches ...
constexpr Index kCoarsePairs = 16384;      // ... and this many (query, match) pairs
constexpr Index kCoarseQueryRows = 256;    // query rows per work item of a coarse code
constexpr Index kCoarseMatchRows = 1024;   // match rows per tile

template <class T>
void coarse_best_match(const std::vector<T>& a, const std::vector<T>& b, Index d, const Groups& groups_a,
                       const Groups& groups_b, const std::vector<Index>& coarse, int threads, double* thr,
                       const Ties<T>& ties, ExactThreshold* exact) {
  struct Item {
    Index code, q0, q1;  // positions in groups_a.members
  };
  std::vector<Item> items;
  for (Index c : coarse)
    for (Index q = groups_a.offsets[c]; q < groups_a.offsets[c + 1]; q += kCoarseQueryRows)
      items.push_back({c, q, std::min(groups_a.offsets[c + 1], q + kCoarseQueryRows)});
  const double band = rounding_band<T>(d);
  parallel_for(threads, static_cast<long>(items.size()), [&](long it, int) {
    const Item item = items[static_cast<size_t>(it)];
    const Index rows = item.q1 - item.q0;
    std::vector<T> qa(static_cast<size_t>(rows * d)), mb(static_cast<size_t>(kCoarseMatchRows * d)),
        tile(static_cast<size_t>(rows * kCoarseMatchRows));
    for (Index r = 0; r < rows; ++r)
      std::memcpy(qa.data() + r * d, a.data() + groups_a.members[item.q0 + r] * d, sizeof(T) * d);
    std::vector<double> top(static_cast<size_t>(rows), -std::numeric_limits<double>::infinity());
    std::vector<std::vector<std::pair<double, Index>>> near(static_cast<size_t>(rows));
    const Index m0 = groups_b.offsets[item.code], m1 = groups_b.offsets[item.code + 1];
    for (Index j0 = m0; j0 < m1; j0 += kCoarseMatchRows) {
      if (j0 > m0) check_stop();  // a coarse code may have millions of matches: stoppable between its tiles
      const Index cols = std::min(kCoarseMatchRows, m1 - j0);
      for (Index c = 0; c < cols; ++c)
        std::memcpy(mb.data() + c * d, b.data() + groups_b.members[j0 + c] * d, sizeof(T) * d);
      detail::gemm_nt(rows, cols, d, qa.data(), d, mb.data(), d, tile.data(), cols);
      for (Index r = 0; r < rows; ++r) {
        const T* v = tile.data() + r * cols;
        T row_max = v[0];
        for (Index c = 1; c < cols; ++c) row_max = std::max(row_max, v[c]);
        double& m = top[static_cast<size_t>(r)];
        m = std::max(m, static_cast<double>(row_max));
        const double floor = m - 2.0 * band;
        auto& list = near[static_cast<size_t>(r)];
        for (Index c = 0; c < cols; ++c)
          if (static_cast<double>(v[c]) >= floor) list.emplace_back(static_cast<double>(v[c]), j0 + c);
        if (list.size() > 256) {  // drop what a later, larger maximum has left behind
          list.erase(std::remove_if(list.begin(), list.end(), [&](const auto& e) { return e.first < floor; }),
                     list.end());
        }
      }
    }
    for (Index r = 0; r < rows; ++r) {
      const double floor = top[static_cast<size_t>(r)] - 2.0 * band;
      const Index i = groups_a.members[item.q0 + r];
      double best = -std::numeric_limits<double>::infinity();
      const auto& list = near[static_cast<size_t>(r)];
      for (const auto& e : list)
        if (e.first >= floor)
          best = std::max(best, canonical_dot(a.data() + i * d, b.data() + groups_b.members[e.second] * d, d));
      thr[i] = best;
      exact_best(ties, i, best, [&](const auto& visit) {
        for (const auto& e : list)
          if (e.first >= floor) {
            const Index j = groups_b.members[e.second];
            visit(j, canonical_dot(a.data() + i * d, b.data() + j * d, d));
          }
      }, exact + i);
    }
  });
}

template <class T>
std::vector<double> best_match(const std::vector<T>& a, const std::vector<T>& b, Index d,
                               const std::int32_t* codes_a, const Groups& groups_b, Index n_a, int threads,
                               const Ties<T>& ties, std::vector<ExactThreshold>* exact) {
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> thr(static_cast<size_t>(n_a), inf);
  exact->assign(static_cast<size_t>(n_a), ExactThreshold{});
  const Index num_codes = static_cast<Index>(groups_b.offsets.size()) - 1;
  const Groups groups_a = group_by_code(codes_a, n_a, num_codes);
  std::vector<char> is_coarse(static_cast<size_t>(num_codes), 0);
  std::vector<Index> coarse;
  for (Index c = 0; c < num_codes; ++c) {
    const Index queries = groups_a.offsets[c + 1] - groups_a.offsets[c];
    const Index matches = groups_b.offsets[c + 1] - groups_b.offsets[c];
    if (queries > 0 && matches >= kCoarseMatches && queries * matches >= kCoarsePairs) {
      is_coarse[static_cast<size_t>(c)] = 1;
      coarse.push_back(c);
    }
  }
  if (!coarse.empty())
    coarse_best_match(a, b, d, groups_a, groups_b, coarse, threads, thr.data(), ties, exact->data());
  constexpr Index kChunk = 1024;
  const long chunks = static_cast<long>((n_a + kChunk - 1) / kChunk);
  parallel_for(threads, chunks, [&](long c, int) {
    const Index r1 = std::min(n_a, (c + 1) * kChunk);
    for (Index i = c * kChunk; i < r1; ++i) {
      const size_t code = static_cast<size_t>(codes_a[i]);
      if (code + 1 >= groups_b.offsets.size() || is_coarse[code]) continue;
      const Index m0 = groups_b.offsets[code], m1 = groups_b.offsets[code + 1];
      if (m0 == m1) continue;
      double best = -inf;
      for (Index p = m0; p < m1; ++p)
        best = std::max(best, canonical_dot(a.data() + i * d, b.data() + groups_b.members[p] * d, d));
      thr[i] = best;
      exact_best(ties, i, best, [&](const auto& visit) {
        for (Index p = m0; p < m1; ++p) {
          const Index j = groups_b.members[p];
          visit(j, canonical_dot(a.data() + i * d, b.data() + j * d, d));
        }
      }, exact->data() + i);
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

// A query with an exact threshold (integer rows) widens its band by the tie band, so that
// every candidate the exact comparison may decide differently is re-checked.
template <class T>
Bounds<T> bounds_of(std::vector<double> thr, double band, const ExactThreshold* exact, double tie) {
  Bounds<T> b;
  b.lo.assign(thr.size(), std::numeric_limits<T>::infinity());
  b.hi.assign(thr.size(), std::numeric_limits<T>::infinity());
  for (size_t i = 0; i < thr.size(); ++i)
    if (std::isfinite(thr[i])) {
      const double w = band + (exact != nullptr && exact[i].norm2 != 0 ? tie : 0.0);
      b.lo[i] = exact::round_down<T>(thr[i] - w);
      b.hi[i] = exact::round_up<T>(thr[i] + w);
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

// Packed, normalised rows of both sides with their codes: what the tile loops read.
template <class T>
struct Rows {
  const T* xn;
  const T* yn;
  Index n, m, d;
  const std::int32_t* ic;
  const std::int32_t* tcodes;
  // Exact ties: the integer rows of both sides, both sides' exact thresholds (null: none) and
  // the tie band.
  const IntRows<T>& xi;
  const IntRows<T>& yi;
  const ExactThreshold* ex_i;
  const ExactThreshold* ex_t;
  double tie;

  // Whether text j beats image i's threshold t (canonical value v), and image i text j's.
  bool image_beats(Index i, Index j, double v, double t) const {
    if (ex_i == nullptr) return v > t;
    return beats(v, t, ex_i[i], yi, j, tie, [&] { return xi.dot(i, yi, j); });
  }
  bool text_beats(Index j, Index i, double v, double t) const {
    if (ex_t == nullptr) return v > t;
    return beats(v, t, ex_t[j], xi, i, tie, [&] { return xi.dot(i, yi, j); });
  }
};

// ... with the bounds of the tile precision T.
template <class T>
struct Sides : Rows<T> {
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
            if (row_band && s.image_beats(i, j0 + j, exact, thr_i[i])) ++count;
            if (col_band && s.text_beats(j0 + j, i, exact, thr_t[j0 + j])) ++ccount[j];
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

// ------------------------------------------------------------------ the reduced-precision screen
//
// The same counts as count_tiles, from tiles screened in bfloat16 or int8 (screen.hpp). The
// decision rule is unchanged; only the band differs: pair_error_bound gives, for every pair
// (i, j), a proven bound E_ij >= |v_ij - s_ij| between the screened value and the canonical
// similarity. Query i's band uses the maxima of the norms and error norms over the gallery
// rows of this call (so it bounds E_ij for every j), query j's those over the image rows:
//   v > hi = up(t + band)     implies s > t (counts),
//   v < lo = down(t - band)   implies s < t (does not),
// and every pair with lo <= v <= hi (on either side) is re-decided with canonical_dot. A
// match is skipped before any of this. So the counts are those of the canonical values,
// whatever the data, the precision, the tile or the thread count.

template <class T>
Bounds<float> screen_bounds(std::vector<double> thr, const ScreenPack& own, const ScreenPack& other,
                            ScreenPrecision precision, const ExactThreshold* exact, double tie) {
  Bounds<float> b;
  const size_t n = thr.size();
  const size_t padded = static_cast<size_t>(own.panels * own.panel_rows);
  b.lo.assign(padded, std::numeric_limits<float>::infinity());  // padding never counts
  b.hi.assign(padded, std::numeric_limits<float>::infinity());
  for (size_t i = 0; i < n; ++i)
    if (std::isfinite(thr[i])) {
      const double band = pair_error_bound(precision, own.d, own.norm[i], own.qnorm[i], own.err[i], other.max_norm,
                                           other.max_qnorm, other.max_err) +
                          (exact != nullptr && exact[i].norm2 != 0 ? tie : 0.0);
      b.lo[i] = exact::round_down<float>(thr[i] - band);
      b.hi[i] = exact::round_up<float>(thr[i] + band);
    }
  b.thr = std::move(thr);
  return b;
}

// One pair inside a band: decided after the tile, in batches of four canonical dots.
struct Pending {
  std::int32_t i, j;  // image row, text row
  std::int32_t flags;  // 1: inside the image query's band, 2: inside the text query's band
};

template <class T>
struct ScreenWorker {
  std::vector<std::int32_t> text_counts;  // padded to whole panels
  std::vector<Pending> pending;
  std::int64_t rechecked = 0;
};

// Fused with the kernel: compares every value of a micro-tile against both queries' bounds
// (AVX-512 masks; it runs only inside the screen kernels, which need AVX-512 anyway). Padded
// columns are masked out: their value 0 could beat a negative threshold.
struct CountEpilogue {
  const float* lo_i;
  const float* hi_i;
  const std::int32_t* ci;
  const float* lo_t;  // padded to whole B panels
  const float* hi_t;
  const std::int32_t* ct;
  std::int64_t* image_counts;
  std::int32_t* text_counts;  // padded
  std::vector<Pending>* pending;

  FASTSAS_SCREEN_TARGET void operator()(Index row0, Index col0, const float* values, int rows, int cols) {
    const std::uint32_t valid = cols >= 32 ? 0xffffffffu : (1u << cols) - 1u;
    const __mmask16 valid0 = static_cast<__mmask16>(valid & 0xffffu), valid1 = static_cast<__mmask16>(valid >> 16);
    const __m512 lc0 = _mm512_loadu_ps(lo_t + col0), lc1 = _mm512_loadu_ps(lo_t + col0 + 16);
    const __m512 hc0 = _mm512_loadu_ps(hi_t + col0), hc1 = _mm512_loadu_ps(hi_t + col0 + 16);
    const __m512i cj0 = _mm512_loadu_si512(ct + col0), cj1 = _mm512_loadu_si512(ct + col0 + 16);
    __m512i cc0 = _mm512_loadu_si512(text_counts + col0), cc1 = _mm512_loadu_si512(text_counts + col0 + 16);
    const __m512i one = _mm512_set1_epi32(1);
    for (int r = 0; r < rows; ++r) {
      const Index i = row0 + r;
      const __m512 v0 = _mm512_load_ps(values + r * kScreenCols), v1 = _mm512_load_ps(values + r * kScreenCols + 16);
      const __m512i cr = _mm512_set1_epi32(ci[i]);
      const __m512 lr = _mm512_set1_ps(lo_i[i]), hr = _mm512_set1_ps(hi_i[i]);
      const __mmask16 o0 = _mm512_mask_cmpneq_epi32_mask(valid0, cj0, cr);
      const __mmask16 o1 = _mm512_mask_cmpneq_epi32_mask(valid1, cj1, cr);
      const __mmask16 above0 = _mm512_mask_cmp_ps_mask(o0, v0, hr, _CMP_GT_OQ);
      const __mmask16 above1 = _mm512_mask_cmp_ps_mask(o1, v1, hr, _CMP_GT_OQ);
      image_counts[i] += __builtin_popcount(static_cast<unsigned>(above0)) +
                         __builtin_popcount(static_cast<unsigned>(above1));
      cc0 = _mm512_mask_add_epi32(cc0, _mm512_mask_cmp_ps_mask(o0, v0, hc0, _CMP_GT_OQ), cc0, one);
      cc1 = _mm512_mask_add_epi32(cc1, _mm512_mask_cmp_ps_mask(o1, v1, hc1, _CMP_GT_OQ), cc1, one);
      const __mmask16 rb0 = _mm512_mask_cmp_ps_mask(_mm512_mask_cmp_ps_mask(o0, v0, lr, _CMP_GE_OQ), v0, hr, _CMP_LE_OQ);
      const __mmask16 rb1 = _mm512_mask_cmp_ps_mask(_mm512_mask_cmp_ps_mask(o1, v1, lr, _CMP_GE_OQ), v1, hr, _CMP_LE_OQ);
      const __mmask16 cb0 = _mm512_mask_cmp_ps_mask(_mm512_mask_cmp_ps_mask(o0, v0, lc0, _CMP_GE_OQ), v0, hc0, _CMP_LE_OQ);
      const __mmask16 cb1 = _mm512_mask_cmp_ps_mask(_mm512_mask_cmp_ps_mask(o1, v1, lc1, _CMP_GE_OQ), v1, hc1, _CMP_LE_OQ);
      const std::uint32_t row_bits = static_cast<std::uint32_t>(rb0) | (static_cast<std::uint32_t>(rb1) << 16);
      const std::uint32_t col_bits = static_cast<std::uint32_t>(cb0) | (static_cast<std::uint32_t>(cb1) << 16);
      for (std::uint32_t bits = row_bits | col_bits; bits; bits &= bits - 1) {
        const int j = __builtin_ctz(bits);
        const std::int32_t flags = static_cast<std::int32_t>((row_bits >> j) & 1u) |
                                   static_cast<std::int32_t>(((col_bits >> j) & 1u) << 1);
        pending->push_back({static_cast<std::int32_t>(i), static_cast<std::int32_t>(col0 + j), flags});
      }
    }
    _mm512_storeu_si512(text_counts + col0, cc0);
    _mm512_storeu_si512(text_counts + col0 + 16, cc1);
  }
};

template <class T>
void decide_pending(const Rows<T>& s, const Bounds<float>& bi, const Bounds<float>& bt, ScreenWorker<T>& w,
                    std::int64_t* image_counts) {
  const Index d = s.d;
  auto apply = [&](const Pending& p, double exact) {
    if ((p.flags & 1) && s.image_beats(p.i, p.j, exact, bi.thr[static_cast<size_t>(p.i)])) ++image_counts[p.i];
    if ((p.flags & 2) && s.text_beats(p.j, p.i, exact, bt.thr[static_cast<size_t>(p.j)]))
      ++w.text_counts[static_cast<size_t>(p.j)];
  };
  const size_t n = w.pending.size();
  size_t q = 0;
  for (; q + 4 <= n; q += 4) {
    const T* a[4];
    const T* b[4];
    for (int k = 0; k < 4; ++k) {
      a[k] = s.xn + static_cast<Index>(w.pending[q + k].i) * d;
      b[k] = s.yn + static_cast<Index>(w.pending[q + k].j) * d;
    }
    double exact[4];
    canonical_dot4(a, b, d, exact);
    for (int k = 0; k < 4; ++k) apply(w.pending[q + k], exact[k]);
  }
  for (; q < n; ++q) {
    const Pending& p = w.pending[q];
    apply(p, canonical_dot(s.xn + static_cast<Index>(p.i) * d, s.yn + static_cast<Index>(p.j) * d, d));
  }
  w.rechecked += static_cast<std::int64_t>(n);
  w.pending.clear();
}

// Default screen tiles: image rows per work item, and text rows per column block sized so
// that the block's packed rows (4 bytes per k-group) stay in a 1 MB L2 with room to spare.
constexpr Index kScreenTileRows = 256;
constexpr Index kScreenBlockBytes = 512 * 1024;

Index round_up_to(Index v, Index step) { return (v + step - 1) / step * step; }

template <class T>
std::int64_t count_tiles_screened(const Rows<T>& s, ScreenPrecision precision, const std::vector<double>& thr_i,
                                  const std::vector<double>& thr_t, Index tile_rows, Index tile_cols, int threads,
                                  std::int64_t* image_counts, std::int64_t* text_counts, ScreenPack* prebuilt_b) {
  const Index n = s.n, m = s.m, d = s.d;
  const ScreenPack pa = pack_screen_rows(s.xn, n, d, precision, ScreenSide::kA, threads);
  const ScreenPack pb = prebuilt_b != nullptr && prebuilt_b->precision == precision
                            ? std::move(*prebuilt_b)
                            : pack_screen_rows(s.yn, m, d, precision, ScreenSide::kB, threads);
  const Bounds<float> bi = screen_bounds<T>(thr_i, pa, pb, precision, s.ex_i, s.tie);
  const Bounds<float> bt = screen_bounds<T>(thr_t, pb, pa, precision, s.ex_t, s.tie);
  std::vector<std::int32_t> ct(static_cast<size_t>(pb.panels * kScreenCols), -1);
  std::copy(s.tcodes, s.tcodes + m, ct.begin());

  const Index tr = round_up_to(tile_rows > 0 ? tile_rows : kScreenTileRows, kScreenRows);
  const Index tc = round_up_to(
      tile_cols > 0 ? tile_cols : std::max<Index>(kScreenCols, kScreenBlockBytes / (4 * pb.groups)), kScreenCols);
  const Index a_per_block = tr / kScreenRows, b_per_block = tc / kScreenCols;
  const long row_blocks = static_cast<long>((pa.panels + a_per_block - 1) / a_per_block);
  const int workers = static_cast<int>(std::max<long>(1, std::min<long>(threads, row_blocks)));
  std::vector<ScreenWorker<T>> ws(static_cast<size_t>(workers));
  for (auto& w : ws) w.text_counts.assign(ct.size(), 0);
  constexpr size_t kPendingBatch = 4096;

  parallel_for(workers, row_blocks, [&](long ib, int wid) {
    ScreenWorker<T>& w = ws[static_cast<size_t>(wid)];
    const Index p0 = ib * a_per_block, p1 = std::min(pa.panels, p0 + a_per_block);
    CountEpilogue ep{bi.lo.data(), bi.hi.data(), s.ic, bt.lo.data(), bt.hi.data(), ct.data(),
                     image_counts, w.text_counts.data(), &w.pending};
    for (Index q0 = 0; q0 < pb.panels; q0 += b_per_block) {
      if (q0 > 0) check_stop();  // a row block spans the whole gallery: stoppable between its column blocks
      screen_tiles(pa, p0, p1, pb, q0, std::min(pb.panels, q0 + b_per_block), ep);
      if (w.pending.size() >= kPendingBatch) decide_pending(s, bi, bt, w, image_counts);
    }
    decide_pending(s, bi, bt, w, image_counts);
  });

  std::int64_t rechecked = 0;
  for (const auto& w : ws) {
    for (Index j = 0; j < m; ++j) text_counts[j] += w.text_counts[static_cast<size_t>(j)];
    rechecked += w.rechecked;
  }
  return rechecked;
}

// Counts, over a sample of image rows against the whole gallery, the non-matching pairs
// inside the int8 band and inside the (predicted) bfloat16 band of each sampled query.
struct BandSample {
  const double* thr;   // per sampled row
  const double* band8;
  const double* band16;
  const std::int32_t* ci;  // per sampled row
  const std::int32_t* ct;  // per gallery row
  std::int64_t inside8 = 0, inside16 = 0;

  void operator()(Index row0, Index col0, const float* values, int rows, int cols) {
    for (int r = 0; r < rows; ++r) {
      const Index i = row0 + r;
      if (!std::isfinite(thr[i])) continue;
      for (int j = 0; j < cols; ++j) {
        if (ci[i] == ct[col0 + j]) continue;
        const double gap = std::fabs(static_cast<double>(values[r * kScreenCols + j]) - thr[i]);
        inside8 += gap <= band8[i];
        inside16 += gap <= band16[i];
      }
    }
  }
};

// Relative costs per pair on AVX-512 CPUs (measured: bench_retrieval.py): the int8 tile 1,
// the bfloat16 tile 2, the float32 SGEMM tile 4 (float64: 8), one exact re-check ~64.
constexpr double kCostBf16 = 2.0, kCostF32 = 4.0, kCostRecheck = 64.0;
constexpr Index kSamplePanels = 32;     // image rows sampled: 32 panels of 8
constexpr Index kSampleGallery = 4096;  // gallery rows sampled for the bfloat16 error maxima

// kAuto: the cheapest exact path for this data. The screens cost their tile rate plus one
// canonical re-check per pair inside the band, and the band's occupancy depends on the data
// (int8's band is ~5x bfloat16's, wider still for rows with a few dominant coordinates), so
// it is measured: a sample of image rows is screened in int8 against the whole gallery, and
// the pairs inside each precision's band counted. Only the speed depends on this choice:
// every path gives the same ranks. The int8 gallery pack is handed on for reuse.
template <class T>
ScreenPrecision choose_screen(const Rows<T>& s, const std::vector<double>& thr_i, int threads, ScreenPack* pb8) {
  const bool has8 = screen_supported(ScreenPrecision::kInt8) && s.d <= kScreenInt8MaxDim;
  const bool has16 = screen_supported(ScreenPrecision::kBFloat16);
  if (!has8) return has16 ? ScreenPrecision::kBFloat16 : ScreenPrecision::kNone;
  const Index n = s.n, m = s.m, d = s.d;
  *pb8 = pack_screen_rows(s.yn, m, d, ScreenPrecision::kInt8, ScreenSide::kB, threads);
  if (!has16 || n <= kSamplePanels * kScreenRows) return ScreenPrecision::kInt8;
  // Sample: kSamplePanels evenly spaced blocks of 8 image rows.
  const Index rows = kSamplePanels * kScreenRows;
  std::vector<T> xs(static_cast<size_t>(rows * d));
  std::vector<double> thr(static_cast<size_t>(rows));
  std::vector<std::int32_t> ci(static_cast<size_t>(rows));
  for (Index p = 0; p < kSamplePanels; ++p) {
    const Index first = (n / kScreenRows) * p / kSamplePanels * kScreenRows;
    for (Index r = 0; r < kScreenRows; ++r) {
      const Index i = std::min(n - 1, first + r), k = p * kScreenRows + r;
      std::memcpy(xs.data() + k * d, s.xn + i * d, sizeof(T) * d);
      thr[static_cast<size_t>(k)] = thr_i[static_cast<size_t>(i)];
      ci[static_cast<size_t>(k)] = s.ic[i];
    }
  }
  const Index gallery = std::min(m, kSampleGallery);
  std::vector<T> ys(static_cast<size_t>(gallery * d));
  for (Index k = 0; k < gallery; ++k) std::memcpy(ys.data() + k * d, s.yn + (m * k / gallery) * d, sizeof(T) * d);
  const ScreenPack a8 = pack_screen_rows(xs.data(), rows, d, ScreenPrecision::kInt8, ScreenSide::kA, 1);
  const ScreenPack a16 = pack_screen_rows(xs.data(), rows, d, ScreenPrecision::kBFloat16, ScreenSide::kA, 1);
  const ScreenPack b16 = pack_screen_rows(ys.data(), gallery, d, ScreenPrecision::kBFloat16, ScreenSide::kB, 1);
  std::vector<double> band8(static_cast<size_t>(rows)), band16(static_cast<size_t>(rows));
  for (Index k = 0; k < rows; ++k) {
    // The int8 proxy values err by up to the int8 pair bound: add it to the bfloat16 band.
    band8[k] = pair_error_bound(ScreenPrecision::kInt8, d, a8.norm[k], a8.qnorm[k], a8.err[k], pb8->max_norm,
                                pb8->max_qnorm, pb8->max_err);
    band16[k] = pair_error_bound(ScreenPrecision::kBFloat16, d, a16.norm[k], a16.qnorm[k], a16.err[k],
                                 b16.max_norm, b16.max_qnorm, b16.max_err);
  }
  std::vector<BandSample> parts(static_cast<size_t>(std::max(1, threads)),
                                BandSample{thr.data(), band8.data(), band16.data(), ci.data(), s.tcodes});
  const long chunks = static_cast<long>(kSamplePanels);
  parallel_for(threads, chunks, [&](long p, int wid) {
    screen_tiles(a8, p, p + 1, *pb8, 0, pb8->panels, parts[static_cast<size_t>(wid)]);
  });
  std::int64_t inside8 = 0, inside16 = 0;
  for (const auto& part : parts) {
    inside8 += part.inside8;
    inside16 += part.inside16;
  }
  const double pairs = static_cast<double>(rows) * static_cast<double>(m);
  // Both directions re-check: about twice the pairs inside one side's band.
  const double cost8 = 1.0 + 2.0 * kCostRecheck * static_cast<double>(inside8) / pairs;
  const double cost16 = kCostBf16 + 2.0 * kCostRecheck * static_cast<double>(inside16) / pairs;
  const double cost32 = kCostF32 * (sizeof(T) == 8 ? 2.0 : 1.0);
  if (cost8 <= cost16 && cost8 <= cost32) return ScreenPrecision::kInt8;
  return cost16 <= cost32 ? ScreenPrecision::kBFloat16 : ScreenPrecision::kNone;
}

// The precision a call runs in: kAuto stays kAuto when the CPU has a screen (choose_screen
// decides from the data), kNone when it has none or the caller wants top-k lists (whose
// similarities are tile values); an explicit screen the CPU lacks is refused with the reason.
ScreenPrecision resolve_precision(ScreenPrecision requested, Index d, bool topk) {
  if (requested == ScreenPrecision::kAuto) {
    if (topk) return ScreenPrecision::kNone;
    const bool any = (screen_supported(ScreenPrecision::kInt8) && d <= kScreenInt8MaxDim) ||
                     screen_supported(ScreenPrecision::kBFloat16);
    return any ? ScreenPrecision::kAuto : ScreenPrecision::kNone;
  }
  if (requested == ScreenPrecision::kNone) return requested;
  if (topk)
    throw std::invalid_argument(std::string("top-k lists need precision 'float32' or 'auto' (their similarities are "
                                            "tile values), not '") + screen_precision_name(requested) + "'");
  require_screen(requested, d);
  return requested;
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
  ScreenPrecision precision = resolve_precision(options.precision, d, topk > 0);
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

  const IntRows<T> xi = integer_rows(x, threads), yi = integer_rows(y, threads);
  const double tie = tie_band<T>(d);
  std::vector<double> thr_i, thr_t;
  std::vector<ExactThreshold> ex_i, ex_t;
  {
    const Groups text_groups = group_by_code(tcodes.data(), m, num_codes);
    const Groups image_groups = group_by_code(ic.data(), n, num_codes);
    thr_i = best_match(xn, yn, d, ic.data(), text_groups, n, threads, Ties<T>{xi, yi, tie}, &ex_i);
    thr_t = best_match(yn, xn, d, tcodes.data(), image_groups, m, threads, Ties<T>{yi, xi, tie}, &ex_t);
  }
  const bool exact = xi.any && yi.any;

  RetrievalResult res;
  res.topk = topk;
  res.precision = precision;
  res.screened = static_cast<std::int64_t>(n) * static_cast<std::int64_t>(m);
  std::vector<std::int64_t> image_counts(static_cast<size_t>(n), 0), text_counts(static_cast<size_t>(m), 0);
  const Rows<T> rows{xn.data(), yn.data(), n, m, d, ic.data(), tcodes.data(), xi, yi,
                     exact ? ex_i.data() : nullptr, exact ? ex_t.data() : nullptr, tie};
  ScreenPack gallery;
  if (precision == ScreenPrecision::kAuto) res.precision = precision = choose_screen(rows, thr_i, threads, &gallery);
  if (precision == ScreenPrecision::kNone) {
    const double band = rounding_band<T>(d);
    const Bounds<T> bi = bounds_of<T>(thr_i, band, rows.ex_i, tie), bt = bounds_of<T>(thr_t, band, rows.ex_t, tie);
    const Sides<T> sides{rows, bi, bt};
    res.rechecked = count_tiles(sides, tr, tc, threads, topk, image_counts.data(), text_counts.data(), &res);
  } else {
    res.rechecked = count_tiles_screened(rows, precision, thr_i, thr_t, options.tile_rows, options.tile_cols,
                                         threads, image_counts.data(), text_counts.data(), &gallery);
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

template <class T>
std::vector<double> retrieval_thresholds(const MatrixView<T>& queries, const MatrixView<T>& candidates,
                                         const std::int32_t* query_codes, const std::int32_t* candidate_codes,
                                         const char* query_input, const char* candidate_input, int threads,
                                         std::vector<ExactThreshold>* exact) {
  const Index n = queries.rows, m = candidates.rows, d = queries.cols;
  if (candidates.cols != d) throw std::invalid_argument("queries and candidates must have the same number of columns");
  if (d < 1) throw std::invalid_argument("queries and candidates must have at least one column");
  check_row_limits(n, m);
  threads = std::max(1, threads);
  blas::use_calling_thread_only();  // coarse ids take GEMM tiles
  const Index num_codes = static_cast<Index>(max_code(query_codes, n, candidate_codes, m)) + 1;
  const std::vector<T> qn = detail::pack_rows(queries, query_input, true, threads);
  const std::vector<T> cn = detail::pack_rows(candidates, candidate_input, true, threads);
  const IntRows<T> qi = integer_rows(queries, threads), ci = integer_rows(candidates, threads);
  std::vector<ExactThreshold> ex;
  std::vector<double> thr = best_match(qn, cn, d, query_codes, group_by_code(candidate_codes, m, num_codes), n, threads,
                                       Ties<T>{qi, ci, tie_band<T>(d)}, &ex);
  if (exact != nullptr) *exact = std::move(ex);
  return thr;
}

template std::vector<double> retrieval_thresholds(const MatrixView<float>&, const MatrixView<float>&,
                                                  const std::int32_t*, const std::int32_t*, const char*,
                                                  const char*, int, std::vector<ExactThreshold>*);
template std::vector<double> retrieval_thresholds(const MatrixView<double>&, const MatrixView<double>&,
                                                  const std::int32_t*, const std::int32_t*, const char*,
                                                  const char*, int, std::vector<ExactThreshold>*);

template <class T>
RetrievalCounts retrieval_counts(const MatrixView<T>& x, const MatrixView<T>& y, const std::int32_t* image_codes,
                                 const std::int32_t* text_codes, const double* image_thresholds,
                                 const double* text_thresholds, const RetrievalOptions& options,
                                 const ExactThreshold* image_exact, const ExactThreshold* text_exact) {
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
  ScreenPrecision precision = resolve_precision(options.precision, d, false);
  blas::use_calling_thread_only();

  const std::vector<T> xn = detail::pack_rows(x, "x", true, threads);
  const std::vector<T> yn = detail::pack_rows(y, "y", true, threads);
  std::vector<double> thr_i(image_thresholds, image_thresholds + n), thr_t(text_thresholds, text_thresholds + m);

  RetrievalCounts out;
  out.precision = precision;
  out.screened = static_cast<std::int64_t>(n) * static_cast<std::int64_t>(m);
  out.image_counts.assign(static_cast<size_t>(n), 0);
  out.text_counts.assign(static_cast<size_t>(m), 0);
  const IntRows<T> xi = integer_rows(x, threads), yi = integer_rows(y, threads);
  const double tie = tie_band<T>(d);
  const bool exact = xi.any && yi.any;
  const Rows<T> rows{xn.data(), yn.data(), n, m, d, image_codes, text_codes, xi, yi,
                     exact ? image_exact : nullptr, exact ? text_exact : nullptr, tie};
  ScreenPack gallery;
  if (precision == ScreenPrecision::kAuto) out.precision = precision = choose_screen(rows, thr_i, threads, &gallery);
  if (precision == ScreenPrecision::kNone) {
    const double band = rounding_band<T>(d);
    const Bounds<T> bi = bounds_of<T>(std::move(thr_i), band, rows.ex_i, tie);
    const Bounds<T> bt = bounds_of<T>(std::move(thr_t), band, rows.ex_t, tie);
    const Sides<T> sides{rows, bi, bt};
    out.rechecked = count_tiles(sides, tr, tc, threads, 0, out.image_counts.data(), out.text_counts.data(), nullptr);
  } else {
    out.rechecked = count_tiles_screened(rows, precision, thr_i, thr_t, options.tile_rows, options.tile_cols, threads,
                                         out.image_counts.data(), out.text_counts.data(), &gallery);
  }
  return out;
}

template RetrievalCounts retrieval_counts(const MatrixView<float>&, const MatrixView<float>&, const std::int32_t*,
                                          const std::int32_t*, const double*, const double*,
                                          const RetrievalOptions&, const ExactThreshold*, const ExactThreshold*);
template RetrievalCounts retrieval_counts(const MatrixView<double>&, const MatrixView<double>&, const std::int32_t*,
                                          const std::int32_t*, const double*, const double*,
                                          const RetrievalOptions&, const ExactThreshold*, const ExactThreshold*);

namespace {

struct CollectEpilogue {
  std::vector<float>* out;
  Index m;
  void operator()(Index row0, Index col0, const float* values, int rows, int cols) {
    for (int r = 0; r < rows; ++r)
      for (int j = 0; j < cols; ++j) (*out)[static_cast<size_t>((row0 + r) * m + col0 + j)] = values[r * kScreenCols + j];
  }
};

}  // namespace

template <class T>
ScreenCheck retrieval_screen_check(const MatrixView<T>& x, const MatrixView<T>& y, ScreenPrecision precision) {
  const Index n = x.rows, m = y.rows, d = x.cols;
  if (y.cols != d || n < 1 || m < 1 || d < 1) throw std::invalid_argument("x and y must be non-empty with equal columns");
  if (precision != ScreenPrecision::kBFloat16 && precision != ScreenPrecision::kInt8)
    throw std::invalid_argument("the screen check needs precision 'bfloat16' or 'int8'");
  resolve_precision(precision, d, false);  // refuses a screen this CPU lacks
  const std::vector<T> xn = detail::pack_rows(x, "x", true, 1);
  const std::vector<T> yn = detail::pack_rows(y, "y", true, 1);
  const ScreenPack pa = pack_screen_rows(xn.data(), n, d, precision, ScreenSide::kA, 1);
  const ScreenPack pb = pack_screen_rows(yn.data(), m, d, precision, ScreenSide::kB, 1);
  ScreenCheck out;
  out.screened.assign(static_cast<size_t>(n * m), 0.0f);
  out.bound.resize(static_cast<size_t>(n * m));
  out.canonical.resize(static_cast<size_t>(n * m));
  CollectEpilogue ep{&out.screened, m};
  screen_tiles(pa, 0, pa.panels, pb, 0, pb.panels, ep);
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < m; ++j) {
      const size_t k = static_cast<size_t>(i * m + j);
      out.bound[k] = pair_error_bound(precision, d, pa.norm[i], pa.qnorm[i], pa.err[i], pb.norm[j], pb.qnorm[j], pb.err[j]);
      out.canonical[k] = canonical_dot(xn.data() + i * d, yn.data() + j * d, d);
    }
  return out;
}

template ScreenCheck retrieval_screen_check(const MatrixView<float>&, const MatrixView<float>&, ScreenPrecision);
template ScreenCheck retrieval_screen_check(const MatrixView<double>&, const MatrixView<double>&, ScreenPrecision);

}  // namespace fastsas
