// Reduced-precision screening of similarity tiles, with a proven error bound per pair.
//
// A "screen" computes, for every (row of A, row of B) pair of a tile, an approximation v of
// the canonical similarity s (canonical_dot below) in a fast format: bfloat16 products with
// float32 accumulation (AVX512_BF16, _mm512_dpbf16_ps), or int8 products with exact int32
// accumulation (AVX512_VNNI, _mm512_dpbusd_epi32). Each row carries numbers known exactly
// after its conversion (its norm, the norm of its converted copy and the norm of the
// conversion error), from which pair_error_bound() gives a rigorous bound on |v - s|.
// A caller that decides a comparison from v only outside that bound, and re-decides every
// pair inside it with canonical_dot, gets exactly the decisions of the canonical values.
//
// The tile kernels are templates on an epilogue functor that receives each micro-tile of
// kScreenRows x kScreenCols values from a 4 KB buffer on the stack (L1-resident: nothing
// of a tile is written to memory and read back), so any per-pair reduction (retrieval
// counts, row maxima, top-k lists) can be fused with the products. They are compiled with
// function target attributes and chosen at run time (screen_supported), so a portable
// build contains them and runs them only on CPUs that have the instructions.
//
// The derivation of the bound is in pair_error_bound's comment and docs/definitions.md
// ("Reduced-precision screening").
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "fastsas/moments.hpp"

namespace fastsas {

// The canonical similarity of two stored rows: float64 fused multiply-adds in four lanes
// (lane l takes k = l, l + 4, ...; the tail goes to lane 0), then (s0 + s1) + (s2 + s3).
// Every fma is written out (std::fma: one rounding everywhere), so the value does not
// depend on the compiler, its flags or the loop part it vectorises; cuda/fastsas_common.cuh
// computes the same value on the GPU. For float32 rows every product is exact in double.
template <class T>
double canonical_dot(const T* a, const T* b, Index d);

// canonical_dot of four pairs (a[p], b[p]) at once, bit-identical to four calls (the same
// operations in the same order; the four chains only run side by side).
template <class T>
void canonical_dot4(const T* const a[4], const T* const b[4], Index d, double out[4]);

enum class ScreenPrecision : int {
  kAuto = 0,      // the fastest exact path the CPU has (the caller decides what that means)
  kNone = 1,      // no screen: tiles in the input's own precision (the float32/float64 GEMM)
  kBFloat16 = 2,  // AVX512_BF16
  kInt8 = 3,      // AVX512_VNNI
};

const char* screen_precision_name(ScreenPrecision p);  // "auto", "float32", "bfloat16", "int8"

// Whether this CPU (and its OS) can run the screen of precision p (kNone: always). Checked
// with cpuid at run time, independent of the flags the library was compiled with.
bool screen_supported(ScreenPrecision p);

// Refuses an explicit screen (kBFloat16, kInt8) this CPU cannot run at dimension d with
// std::invalid_argument naming the missing instructions or the limit; kAuto and kNone pass.
void require_screen(ScreenPrecision p, Index d);

// Micro-tile shape of the kernels: rows of A per micro-tile, columns (rows of B) per micro-tile.
inline constexpr Index kScreenRows = 8;
inline constexpr Index kScreenCols = 32;
// Largest dimension the int8 screen accepts: |sum of d products of a u8 and an s8| < 2^31.
inline constexpr Index kScreenInt8MaxDim = 65536;

// Which operand of the kernels a pack feeds: A (rows broadcast, kScreenRows per panel) or
// B (rows laid out across vector lanes, kScreenCols per panel).
enum class ScreenSide : int { kA = 0, kB = 1 };

// Rows converted to the screen's format, in the kernel's panel layout, with their exact
// per-row error data. All norms are upper bounds of the real values (rounded outward).
struct ScreenPack {
  ScreenPrecision precision = ScreenPrecision::kNone;  // kNone: empty
  ScreenSide side = ScreenSide::kA;
  Index rows = 0;        // real rows
  Index d = 0;           // real dimension
  Index groups = 0;      // k-groups of one 32-bit word per row (d / 2 for bf16, d / 4 for int8, rounded up)
  Index panel_rows = 0;  // kScreenRows (A) or kScreenCols (B)
  Index panels = 0;
  std::vector<std::uint32_t> words;  // panels x groups x panel_rows words (+ 16 words of slack for alignment)
  Index offset = 0;                  // first word of panel 0 (64-byte aligned)
  std::vector<double> norm;          // >= ||a||, the stored row
  std::vector<double> qnorm;         // >= ||a^||, its converted copy
  std::vector<double> err;           // >= ||a^ - a||
  std::vector<float> scale;          // int8: a^ = scale * q (one per padded row); empty for bf16
  std::vector<std::int32_t> qsum;    // int8, side B: 128 * sum_k q_k (one per padded row)
  double max_norm = 0, max_qnorm = 0, max_err = 0;

  const std::uint32_t* panel(Index p) const { return words.data() + offset + p * groups * panel_rows; }
};

// Converts n contiguous stored rows (row-major, n x d, already normalised) for `side`.
// precision: kBFloat16 or kInt8.
template <class T>
ScreenPack pack_screen_rows(const T* rows, Index n, Index d, ScreenPrecision precision, ScreenSide side,
                            int threads);

// Rigorous bound on |v - canonical_dot(a, b)| for a screened value v of rows a (in pack A,
// with norm na, converted norm qa, error ea) and b (nb, qb, eb), dimension d. Monotone in
// every argument, so passing maxima over a set of rows bounds every pair of the set.
double pair_error_bound(ScreenPrecision precision, Index d, double na, double qa, double ea, double nb, double qb,
                        double eb);

// ------------------------------------------------------------------------------ kernels
//
// screen_tiles(a, a_panels [p0, p1), b, b_panels [q0, q1), ep): for every A panel and every
// B panel in range, computes the kScreenRows x kScreenCols screened values and calls
//   ep(row0, col0, values, rows, cols)
// with row0 / col0 the first A / B row of the micro-tile, values row-major (kScreenCols per
// row), and rows / cols the real rows and columns in it (padding excluded; padded entries
// of `values` hold 0). Loop order: each A panel (its words stay in L1) against the B panels
// in order (the B range should fit in L2). Both packs must have the same precision and d;
// the caller checks screen_supported first.

namespace screen_detail {

#define FASTSAS_SCREEN_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vnni")))

// One k-step of a micro-tile per format: bfloat16 pairs into float32 lanes, or int8 quads
// (u8 rows of A, s8 rows of B) into exact int32 lanes; then the float32 values of a row.
struct Bf16Ops {
  using Acc = __m512;
  FASTSAS_SCREEN_TARGET static Acc zero() { return _mm512_setzero_ps(); }
  FASTSAS_SCREEN_TARGET static Acc step(Acc c, __m512i a, __m512i b) {
    return _mm512_dpbf16_ps(c, (__m512bh)a, (__m512bh)b);
  }
  struct Finish {
    FASTSAS_SCREEN_TARGET Finish(const ScreenPack&, Index, const ScreenPack&, Index) {}
    FASTSAS_SCREEN_TARGET void store(float* out, int, Acc c0, Acc c1) const {
      _mm512_store_ps(out, c0);
      _mm512_store_ps(out + 16, c1);
    }
  };
};

struct Int8Ops {
  using Acc = __m512i;
  FASTSAS_SCREEN_TARGET static Acc zero() { return _mm512_setzero_si512(); }
  FASTSAS_SCREEN_TARGET static Acc step(Acc c, __m512i a, __m512i b) { return _mm512_dpbusd_epi32(c, a, b); }
  // acc = sum_k (q_a + 128) q_b = q_a . q_b + 128 sum_k q_b (exact int32), then
  // v = float(q_a . q_b) * scale_b * scale_a (three float32 roundings, in the bound).
  struct Finish {
    __m512i corr0, corr1;
    __m512 sb0, sb1;
    const float* sa;
    FASTSAS_SCREEN_TARGET Finish(const ScreenPack& a, Index row0, const ScreenPack& b, Index col0)
        : corr0(_mm512_loadu_si512(b.qsum.data() + col0)),
          corr1(_mm512_loadu_si512(b.qsum.data() + col0 + 16)),
          sb0(_mm512_loadu_ps(b.scale.data() + col0)),
          sb1(_mm512_loadu_ps(b.scale.data() + col0 + 16)),
          sa(a.scale.data() + row0) {}
    FASTSAS_SCREEN_TARGET void store(float* out, int r, Acc c0, Acc c1) const {
      const __m512 s = _mm512_set1_ps(sa[r]);
      _mm512_store_ps(out, _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(c0, corr0)), sb0), s));
      _mm512_store_ps(out + 16, _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(c1, corr1)), sb1), s));
    }
  };
};

// The micro-kernel: 8 rows x 32 columns in 16 accumulators (8 broadcasts of a 32-bit word
// of A and 2 vectors of B per k-step).
template <class Ops, class Ep>
FASTSAS_SCREEN_TARGET void tiles(const ScreenPack& a, Index p0, Index p1, const ScreenPack& b, Index q0, Index q1,
                                 Ep& ep) {
  using Acc = typename Ops::Acc;
  alignas(64) float values[kScreenRows * kScreenCols];
  const Index g = a.groups;
  for (Index p = p0; p < p1; ++p) {
    const std::uint32_t* ap = a.panel(p);
    const Index row0 = p * kScreenRows;
    const int rows = static_cast<int>(std::min<Index>(kScreenRows, a.rows - row0));
    for (Index q = q0; q < q1; ++q) {
      const std::uint32_t* bp = b.panel(q);
      Acc c00 = Ops::zero(), c01 = Ops::zero(), c10 = Ops::zero(), c11 = Ops::zero(), c20 = Ops::zero(),
          c21 = Ops::zero(), c30 = Ops::zero(), c31 = Ops::zero(), c40 = Ops::zero(), c41 = Ops::zero(),
          c50 = Ops::zero(), c51 = Ops::zero(), c60 = Ops::zero(), c61 = Ops::zero(), c70 = Ops::zero(),
          c71 = Ops::zero();
      for (Index k = 0; k < g; ++k) {
        const __m512i b0 = _mm512_load_si512(bp + k * kScreenCols);
        const __m512i b1 = _mm512_load_si512(bp + k * kScreenCols + 16);
        const std::uint32_t* ak = ap + k * kScreenRows;
#define FASTSAS_SCREEN_ROW(r)                                                \
  {                                                                          \
    const __m512i ar = _mm512_set1_epi32(static_cast<int>(ak[r]));           \
    c##r##0 = Ops::step(c##r##0, ar, b0);                                    \
    c##r##1 = Ops::step(c##r##1, ar, b1);                                    \
  }
        FASTSAS_SCREEN_ROW(0) FASTSAS_SCREEN_ROW(1) FASTSAS_SCREEN_ROW(2) FASTSAS_SCREEN_ROW(3)
        FASTSAS_SCREEN_ROW(4) FASTSAS_SCREEN_ROW(5) FASTSAS_SCREEN_ROW(6) FASTSAS_SCREEN_ROW(7)
#undef FASTSAS_SCREEN_ROW
      }
      const Index col0 = q * kScreenCols;
      const typename Ops::Finish finish(a, row0, b, col0);
      finish.store(values + 0 * kScreenCols, 0, c00, c01);
      finish.store(values + 1 * kScreenCols, 1, c10, c11);
      finish.store(values + 2 * kScreenCols, 2, c20, c21);
      finish.store(values + 3 * kScreenCols, 3, c30, c31);
      finish.store(values + 4 * kScreenCols, 4, c40, c41);
      finish.store(values + 5 * kScreenCols, 5, c50, c51);
      finish.store(values + 6 * kScreenCols, 6, c60, c61);
      finish.store(values + 7 * kScreenCols, 7, c70, c71);
      ep(row0, col0, static_cast<const float*>(values), rows,
         static_cast<int>(std::min<Index>(kScreenCols, b.rows - col0)));
    }
  }
}

}  // namespace screen_detail

template <class Ep>
void screen_tiles(const ScreenPack& a, Index p0, Index p1, const ScreenPack& b, Index q0, Index q1, Ep& ep) {
  if (a.precision == ScreenPrecision::kInt8)
    screen_detail::tiles<screen_detail::Int8Ops>(a, p0, p1, b, q0, q1, ep);
  else
    screen_detail::tiles<screen_detail::Bf16Ops>(a, p0, p1, b, q0, q1, ep);
}

}  // namespace fastsas
