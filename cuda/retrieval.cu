// Exact bidirectional retrieval ranks on the GPU: thresholds by ids, a count kernel over
// each fast-precision GEMM tile (rows count image -> text, columns count text -> image, both
// from the same tile), and an exact re-check of every entry inside the rounding band.
//
// Definitions are the CPU engine's (cpp/include/fastsas/pairwise.hpp): a similarity *is*
// the canonical dot product of the two normalised rows (fastsas_common.cuh); the rank of a
// query is 1 + the number of non-matching candidates whose canonical similarity is strictly
// greater than the best canonical similarity among the query's matches (its threshold).
//
// Why a tile entry may decide. The tile holds s~ = the GEMM of the rows rounded to a fast
// format (fp16, bf16 or tf32) with float32 accumulation; python/fastsas/gpu/retrieval.py
// (`rounding_band`) proves |s~ - s| <= band for every pair, where s is the canonical value.
// For a query with threshold t the kernel receives lo = a float <= t - band and hi = a float
// >= t + band (rounded outward). Then
//   s~ > hi            implies  s > t   (the candidate counts),
//   s~ < lo            implies  s < t   (it does not),
//   lo <= s~ <= hi     is undecided, and the pair goes to the candidate buffer, where the
//                      re-check kernel computes s exactly and compares it with t.
// A match (equal id codes) is skipped before any of this: it never counts, whatever the
// rounding. Rows of integers follow the CPU engine's exact-tie rule (fastsas_common.cuh,
// `beats`). The decision per pair is therefore exactly the CPU engine's.
#include "fastsas_common.cuh"

namespace {

// ---------------------------------------------------------------------------- thresholds
// One thread per query on side A: t = max over its matches on side B (the CSR lists
// `offsets` / `members`, grouped by id code) of the canonical similarity; +inf when it has
// none (such a query is excluded from every metric and never counts or is counted).
//
// Exact ties: for a query whose row is integer (norm2_a > 0), the matches within `tie` of the
// best canonical value are compared exactly (compare_cosines on the original rows a0 / b0,
// row strides lda / ldb); when all of them are integer rows the exact best one's
// (x.m, |m|^2) is the query's exact threshold (ex_dot / ex_norm2; 0 otherwise) and the band
// [lo, hi] is widened by `tie`, as on the CPU.
template <class T>
__device__ void thresholds(const T* __restrict__ a, const T* __restrict__ b, int d, const int* __restrict__ codes_a,
                           const i64* __restrict__ offsets, const int* __restrict__ members, int num_codes,
                           i64 n_a, double band, double* __restrict__ thr, float* __restrict__ lo,
                           float* __restrict__ hi, const T* __restrict__ a0, i64 lda, const T* __restrict__ b0,
                           i64 ldb, const i64* __restrict__ norm2_a, const i64* __restrict__ norm2_b, double tie,
                           i64* __restrict__ ex_dot, i64* __restrict__ ex_norm2) {
  const i64 i = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_a) return;
  const int code = codes_a[i];
  double best = -fastsas::inf();
  i64 m0 = 0, m1 = 0;
  if (code >= 0 && code < num_codes) {
    m0 = offsets[code];
    m1 = offsets[code + 1];
  }
  for (i64 p = m0; p < m1; ++p)
    best = fmax(best, fastsas::row_dot(a + i * d, b + static_cast<i64>(members[p]) * d, d));
  ex_dot[i] = 0;
  ex_norm2[i] = 0;
  if (m0 == m1) {
    thr[i] = fastsas::inf();
    lo[i] = static_cast<float>(fastsas::inf());
    hi[i] = static_cast<float>(fastsas::inf());
    return;
  }
  thr[i] = best;
  double width = band;
  if (norm2_a[i] > 0) {
    bool mixed = false;
    i64 q = 0, M = 0;
    for (i64 p = m0; p < m1 && !mixed; ++p) {
      const i64 j = members[p];
      if (fastsas::row_dot(a + i * d, b + j * d, d) < best - tie) continue;
      if (norm2_b[j] == 0) {
        mixed = true;
        break;
      }
      const i64 dot = fastsas::int_dot(a0 + i * lda, b0 + j * ldb, d);
      if (M == 0 || fastsas::compare_cosines(dot, norm2_b[j], q, M) > 0) {
        q = dot;
        M = norm2_b[j];
      }
    }
    if (!mixed && M != 0) {
      ex_dot[i] = q;
      ex_norm2[i] = M;
      width = __dadd_ru(band, tie);
    }
  }
  // Outward rounding twice (the double subtraction, then the float conversion), so the
  // float interval contains [t - width, t + width] exactly.
  lo[i] = fastsas::to_f32_down(__dsub_rd(best, width));
  hi[i] = fastsas::to_f32_up(__dadd_ru(best, width));
}

// ---------------------------------------------------------------------------- integer rows
// One thread per row: |row|^2 when every coordinate is an integer and |row|^2 <= norm2_max
// (the core's kIntegerRowNorm2Max, 2^40, which compare_cosines' products rely on), else 0.
template <class T>
__device__ void integer_rows(const T* __restrict__ x, i64 ld, i64 n, int d, double norm2_max,
                             i64* __restrict__ norm2) {
  const i64 r = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= n) return;
  double sum = 0.0;
  bool integer = true;
  for (int k = 0; k < d && integer; ++k) {
    const double e = fastsas::to_f64(x[r * ld + k]);
    sum += e * e;  // exact: integers below 2^20, sums below 2^41
    integer = e == rint(e) && sum <= norm2_max;
  }
  norm2[r] = integer && sum > 0 ? static_cast<i64>(sum) : 0;
}

// ---------------------------------------------------------------------------- count
// Block: 256 threads = 8 warps over a 128-row x 128-column sub-tile. Warp w takes rows
// w, w + 8, ..., lane l takes columns l, l + 32, l + 64, l + 96: each load instruction of a
// warp reads 128 consecutive bytes of one tile row. Row counts are summed across the warp
// (one atomic per row and block, skipped when zero); column counts are kept per thread over
// its 16 rows, summed across the 8 warps in shared memory (one atomic per column and block,
// skipped when zero). Undecided pairs are appended to `cand` with one atomic per warp and
// load instruction (ballot + prefix popcount). When the buffer is full the position is still
// reserved, so `*n_cand` ends as the true number of undecided pairs; the host sees
// n_cand > capacity, grows the buffer and runs this kernel again on the same tile with
// emit_counts = 0 (candidates only): no pair is ever dropped, and none counted twice.
constexpr int kSubRows = 128, kSubCols = 128, kThreads = 256, kWarps = kThreads / 32;
constexpr int kColsPerLane = kSubCols / 32, kRowsPerWarp = kSubRows / kWarps;

// Candidate record: global image row and text column; bit 31 of .x says the pair is
// undecided for the image query's threshold, bit 31 of .y for the text query's.
constexpr unsigned kFlag = 0x80000000u;

__device__ void count_tile_impl(const float* __restrict__ tile, int rows, int cols, int i0, int j0,
                           const int* __restrict__ codes_i, const int* __restrict__ codes_t,
                           const float* __restrict__ lo_i, const float* __restrict__ hi_i,
                           const float* __restrict__ lo_t, const float* __restrict__ hi_t,
                           unsigned* __restrict__ count_i, unsigned* __restrict__ count_t, int2* __restrict__ cand,
                           u64* __restrict__ n_cand, u64 capacity, int emit_counts) {
  __shared__ unsigned col_part[kWarps][kSubCols];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int r_base = blockIdx.y * kSubRows, c_base = blockIdx.x * kSubCols;

  int col[kColsPerLane];
  bool col_ok[kColsPerLane];
  int ccode[kColsPerLane];
  float clo[kColsPerLane], chi[kColsPerLane];
  unsigned ccount[kColsPerLane];
#pragma unroll
  for (int g = 0; g < kColsPerLane; ++g) {
    col[g] = c_base + g * 32 + lane;
    col_ok[g] = col[g] < cols;
    const int j = j0 + (col_ok[g] ? col[g] : 0);
    ccode[g] = codes_t[j];
    clo[g] = lo_t[j];
    chi[g] = hi_t[j];
    ccount[g] = 0;
  }
  const unsigned lanes_below = (1u << lane) - 1u;

  for (int k = 0; k < kRowsPerWarp; ++k) {
    const int r = r_base + warp + k * kWarps;
    if (r >= rows) break;  // warp-uniform
    const int i = i0 + r;
    const int rcode = codes_i[i];
    const float rlo = lo_i[i], rhi = hi_i[i];
    const float* trow = tile + static_cast<i64>(r) * cols;
    unsigned rcount = 0;
#pragma unroll
    for (int g = 0; g < kColsPerLane; ++g) {
      bool undecided = false;
      unsigned record_x = 0, record_y = 0;
      if (col_ok[g] && rcode != ccode[g]) {
        const float s = trow[col[g]];
        rcount += s > rhi;
        ccount[g] += s > chi[g];
        const bool row_band = s >= rlo && s <= rhi;
        const bool col_band = s >= clo[g] && s <= chi[g];
        undecided = row_band || col_band;
        record_x = static_cast<unsigned>(i) | (row_band ? kFlag : 0u);
        record_y = static_cast<unsigned>(j0 + col[g]) | (col_band ? kFlag : 0u);
      }
      const unsigned mask = __ballot_sync(0xffffffffu, undecided);
      if (mask) {
        const int leader = __ffs(mask) - 1;
        u64 base = 0;
        if (lane == leader) base = atomicAdd(n_cand, static_cast<u64>(__popc(mask)));
        base = __shfl_sync(0xffffffffu, base, leader);
        if (undecided) {
          const u64 slot = base + static_cast<u64>(__popc(mask & lanes_below));
          if (slot < capacity) cand[slot] = make_int2(static_cast<int>(record_x), static_cast<int>(record_y));
        }
      }
    }
    if (emit_counts) {
      const unsigned total = __reduce_add_sync(0xffffffffu, rcount);
      if (lane == 0 && total) atomicAdd(count_i + i, total);
    }
  }
  if (!emit_counts) return;
#pragma unroll
  for (int g = 0; g < kColsPerLane; ++g) col_part[warp][g * 32 + lane] = ccount[g];
  __syncthreads();
  for (int c = threadIdx.x; c < kSubCols; c += kThreads) {
    unsigned total = 0;
    for (int w = 0; w < kWarps; ++w) total += col_part[w][c];
    if (total && c_base + c < cols) atomicAdd(count_t + j0 + c_base + c, total);
  }
}

// ---------------------------------------------------------------------------- re-check
// Grid-stride over the undecided pairs of one tile (launched without reading n_cand back:
// the count stays on the device). Each is decided with the canonical similarity, for the
// side(s) whose band it fell in.
template <class T>
__device__ void recheck(const T* __restrict__ xn, const T* __restrict__ yn, int d, const int2* __restrict__ cand,
                        const u64* __restrict__ n_cand, u64 capacity, const double* __restrict__ thr_i,
                        const double* __restrict__ thr_t, unsigned* __restrict__ count_i,
                        unsigned* __restrict__ count_t, const T* __restrict__ x0, i64 ldx, const T* __restrict__ y0,
                        i64 ldy, const i64* __restrict__ norm2_x, const i64* __restrict__ norm2_y,
                        const i64* __restrict__ ex_dot_i, const i64* __restrict__ ex_norm2_i,
                        const i64* __restrict__ ex_dot_t, const i64* __restrict__ ex_norm2_t, double tie) {
  const u64 total = min(*n_cand, capacity);
  for (u64 p = static_cast<u64>(blockIdx.x) * blockDim.x + threadIdx.x; p < total;
       p += static_cast<u64>(gridDim.x) * blockDim.x) {
    const int2 c = cand[p];
    const unsigned ux = static_cast<unsigned>(c.x), uy = static_cast<unsigned>(c.y);
    const i64 i = ux & ~kFlag, j = uy & ~kFlag;
    const double v = fastsas::row_dot(xn + i * d, yn + j * d, d);
    if ((ux & kFlag) && fastsas::beats(v, thr_i[i], ex_dot_i[i], ex_norm2_i[i], norm2_y[j], tie, x0 + i * ldx,
                                       y0 + j * ldy, d))
      atomicAdd(count_i + i, 1u);
    if ((uy & kFlag) && fastsas::beats(v, thr_t[j], ex_dot_t[j], ex_norm2_t[j], norm2_x[i], tie, y0 + j * ldy,
                                       x0 + i * ldx, d))
      atomicAdd(count_t + j, 1u);
  }
}

}  // namespace

extern "C" __global__ void thresholds_f32(const float* a, const float* b, int d, const int* codes_a,
                                          const i64* offsets, const int* members, int num_codes, i64 n_a,
                                          double band, double* thr, float* lo, float* hi, const float* a0, i64 lda,
                                          const float* b0, i64 ldb, const i64* norm2_a, const i64* norm2_b,
                                          double tie, i64* ex_dot, i64* ex_norm2) {
  thresholds<float>(a, b, d, codes_a, offsets, members, num_codes, n_a, band, thr, lo, hi, a0, lda, b0, ldb, norm2_a,
                  norm2_b, tie, ex_dot, ex_norm2);
}

extern "C" __global__ void integer_rows_f32(const float* x, i64 ld, i64 n, int d, double norm2_max, i64* norm2) {
  integer_rows<float>(x, ld, n, d, norm2_max, norm2);
}

extern "C" __global__ void thresholds_f64(const double* a, const double* b, int d, const int* codes_a,
                                          const i64* offsets, const int* members, int num_codes, i64 n_a,
                                          double band, double* thr, float* lo, float* hi, const double* a0, i64 lda,
                                          const double* b0, i64 ldb, const i64* norm2_a, const i64* norm2_b,
                                          double tie, i64* ex_dot, i64* ex_norm2) {
  thresholds<double>(a, b, d, codes_a, offsets, members, num_codes, n_a, band, thr, lo, hi, a0, lda, b0, ldb, norm2_a,
                  norm2_b, tie, ex_dot, ex_norm2);
}

extern "C" __global__ void integer_rows_f64(const double* x, i64 ld, i64 n, int d, double norm2_max, i64* norm2) {
  integer_rows<double>(x, ld, n, d, norm2_max, norm2);
}

extern "C" __global__ void __launch_bounds__(kThreads)
count_tile(const float* tile, int rows, int cols, int i0, int j0, const int* codes_i, const int* codes_t,
           const float* lo_i, const float* hi_i, const float* lo_t, const float* hi_t, unsigned* count_i,
           unsigned* count_t, int2* cand, u64* n_cand, u64 capacity, int emit_counts) {
  count_tile_impl(tile, rows, cols, i0, j0, codes_i, codes_t, lo_i, hi_i, lo_t, hi_t, count_i, count_t, cand, n_cand,
             capacity, emit_counts);
}

extern "C" __global__ void recheck_f32(const float* xn, const float* yn, int d, const int2* cand,
                                       const u64* n_cand, u64 capacity, const double* thr_i, const double* thr_t,
                                       unsigned* count_i, unsigned* count_t, const float* x0, i64 ldx, const float* y0,
                                       i64 ldy, const i64* norm2_x, const i64* norm2_y, const i64* ex_dot_i,
                                       const i64* ex_norm2_i, const i64* ex_dot_t, const i64* ex_norm2_t,
                                       double tie) {
  recheck<float>(xn, yn, d, cand, n_cand, capacity, thr_i, thr_t, count_i, count_t, x0, ldx, y0, ldy, norm2_x, norm2_y,
               ex_dot_i, ex_norm2_i, ex_dot_t, ex_norm2_t, tie);
}

extern "C" __global__ void recheck_f64(const double* xn, const double* yn, int d, const int2* cand,
                                       const u64* n_cand, u64 capacity, const double* thr_i, const double* thr_t,
                                       unsigned* count_i, unsigned* count_t, const double* x0, i64 ldx, const double* y0,
                                       i64 ldy, const i64* norm2_x, const i64* norm2_y, const i64* ex_dot_i,
                                       const i64* ex_norm2_i, const i64* ex_dot_t, const i64* ex_norm2_t,
                                       double tie) {
  recheck<double>(xn, yn, d, cand, n_cand, capacity, thr_i, thr_t, count_i, count_t, x0, ldx, y0, ldy, norm2_x, norm2_y,
               ex_dot_i, ex_norm2_i, ex_dot_t, ex_norm2_t, tie);
}
