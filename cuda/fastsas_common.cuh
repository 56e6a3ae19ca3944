// Device helpers shared by the fastsas kernels. Included by every .cu through the include
// path the loader gives NVRTC (`-I <this folder>`), and by nvcc in CI the same way.
//
// Every kernel is compiled with --fmad=false: the only fused multiply-adds are the ones
// written out with fma() below, so the arithmetic is exactly what the source says and can be
// matched operation for operation against the CPU engine.
//
// Subnormals. CuPy compiles every RawModule with -ftz=true (appended after our options,
// cupy/cuda/compiler.py), which turns each float <-> double conversion into cvt.ftz: a
// subnormal float32 (|v| < 2^-126) would be read as 0, and a double rounding to a float32
// subnormal would be stored as 0, where the CPU keeps them. Every conversion that decides
// a result therefore goes through to_f64 / to_f32 below (inline PTX, no .ftz modifier):
// exact whatever the flush mode.
#pragma once

typedef long long i64;
typedef unsigned long long u64;

namespace fastsas {

// float -> double (exact) and double -> float (round to nearest even, or down / up), keeping
// subnormals under -ftz=true. The double overloads are the identity.
__device__ __forceinline__ double to_f64(float v) {
  double r;
  asm("cvt.f64.f32 %0, %1;" : "=d"(r) : "f"(v));
  return r;
}
__device__ __forceinline__ double to_f64(double v) { return v; }
template <class T>
__device__ __forceinline__ T from_f64(double v);
template <>
__device__ __forceinline__ float from_f64<float>(double v) {
  float r;
  asm("cvt.rn.f32.f64 %0, %1;" : "=f"(r) : "d"(v));
  return r;
}
template <>
__device__ __forceinline__ double from_f64<double>(double v) {
  return v;
}
__device__ __forceinline__ float to_f32_down(double v) {
  float r;
  asm("cvt.rm.f32.f64 %0, %1;" : "=f"(r) : "d"(v));
  return r;
}
__device__ __forceinline__ float to_f32_up(double v) {
  float r;
  asm("cvt.rp.f32.f64 %0, %1;" : "=f"(r) : "d"(v));
  return r;
}

// +infinity without math_constants.h (not on NVRTC's default include path).
__device__ __forceinline__ double inf() { return __longlong_as_double(0x7ff0000000000000LL); }

// The CPU engine's canonical similarity (cpp/src/retrieval.cpp, canonical_dot): float64
// fused multiply-adds of the two stored rows in four interleaved lanes (lane l takes
// k = l, l + 4, ...), the tail into lane 0, then (s0 + s1) + (s2 + s3). Both sides write the
// fma out (std::fma there, fma() here under --fmad=false), so the value does not depend on
// either compiler's contraction choices: bit-identical for float32 and float64 rows.
template <class T>
__device__ __forceinline__ double canonical_dot(const T* __restrict__ a, const T* __restrict__ b, int d) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  int k = 0;
  for (; k + 4 <= d; k += 4) {
    s0 = fma(to_f64(a[k]), to_f64(b[k]), s0);
    s1 = fma(to_f64(a[k + 1]), to_f64(b[k + 1]), s1);
    s2 = fma(to_f64(a[k + 2]), to_f64(b[k + 2]), s2);
    s3 = fma(to_f64(a[k + 3]), to_f64(b[k + 3]), s3);
  }
  for (; k < d; ++k) s0 = fma(to_f64(a[k]), to_f64(b[k]), s0);
  return (s0 + s1) + (s2 + s3);
}

// The same value for float rows of a length divisible by 4 with 16-byte aligned rows: one
// float4 load feeds exactly the four lanes, so the order of operations is unchanged.
__device__ __forceinline__ double canonical_dot4(const float* __restrict__ a, const float* __restrict__ b,
                                                 int d) {
  const float4* a4 = reinterpret_cast<const float4*>(a);
  const float4* b4 = reinterpret_cast<const float4*>(b);
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  for (int q = 0; q < d / 4; ++q) {
    const float4 u = a4[q], v = b4[q];
    s0 = fma(to_f64(u.x), to_f64(v.x), s0);
    s1 = fma(to_f64(u.y), to_f64(v.y), s1);
    s2 = fma(to_f64(u.z), to_f64(v.z), s2);
    s3 = fma(to_f64(u.w), to_f64(v.w), s3);
  }
  return (s0 + s1) + (s2 + s3);
}

__device__ __forceinline__ double row_dot(const float* a, const float* b, int d) {
  return (d & 3) == 0 ? canonical_dot4(a, b, d) : canonical_dot<float>(a, b, d);
}
__device__ __forceinline__ double row_dot(const double* a, const double* b, int d) {
  return canonical_dot<double>(a, b, d);
}

// Exact ties of integer rows (the CPU engine's rule, cpp/src/retrieval.cpp "exact ties"): rows
// whose coordinates are all integers with |row|^2 <= 2^40 carry norm2 = |row|^2 (0 for any
// other row). For a query x, a candidate y and the query's best match m, all integer rows,
// cos(x, y) > cos(x, m) is decided exactly wherever the canonical values lie within the tie
// band: signs, then p^2 M against q^2 Y in 128-bit integers (p = x.y, q = x.m, Y = |y|^2,
// M = |m|^2; |p|, |q|, Y, M <= 2^40, so every product is below 2^120), as 128-bit unsigned
// values built from 64-bit halves.
__device__ __forceinline__ i64 int_dot(const float* a, const float* b, int d) {
  i64 s = 0;
  for (int k = 0; k < d; ++k) s += static_cast<i64>(a[k]) * static_cast<i64>(b[k]);
  return s;
}
__device__ __forceinline__ i64 int_dot(const double* a, const double* b, int d) {
  i64 s = 0;
  for (int k = 0; k < d; ++k) s += static_cast<i64>(a[k]) * static_cast<i64>(b[k]);
  return s;
}

// a^2 b as a 128-bit unsigned (hi, lo) for a, b <= 2^40 (the product is below 2^120). NVRTC
// has no __int128 without an extra flag, so the product is built from 64-bit halves.
__device__ __forceinline__ void square_times(u64 a, u64 b, u64* hi, u64* lo) {
  const u64 sq_lo = a * a, sq_hi = __umul64hi(a, a);  // a^2 < 2^80
  *lo = sq_lo * b;
  *hi = sq_hi * b + __umul64hi(sq_lo, b);
}

// Sign of cos(x, y) - cos(x, m) (Y, M > 0).
__device__ __forceinline__ int compare_cosines(i64 p, i64 Y, i64 q, i64 M) {
  if ((p >= 0) != (q >= 0)) return p >= 0 ? 1 : -1;
  u64 lh, ll, rh, rl;
  square_times(static_cast<u64>(p >= 0 ? p : -p), static_cast<u64>(M), &lh, &ll);
  square_times(static_cast<u64>(q >= 0 ? q : -q), static_cast<u64>(Y), &rh, &rl);
  const int c = (lh > rh || (lh == rh && ll > rl)) ? 1 : ((lh == rh && ll == rl) ? 0 : -1);
  return p >= 0 ? c : -c;
}

// Whether a candidate with canonical value v beats threshold t: the exact comparison when the
// query has an exact threshold (ex_norm2 > 0), the candidate is an integer row (cand_norm2 > 0)
// and |v - t| <= tie; else v > t.
template <class T>
__device__ __forceinline__ bool beats(double v, double t, i64 ex_dot, i64 ex_norm2, i64 cand_norm2, double tie,
                                      const T* query_row, const T* cand_row, int d) {
  if (ex_norm2 == 0 || cand_norm2 == 0 || fabs(v - t) > tie) return v > t;
  return compare_cosines(int_dot(query_row, cand_row, d), cand_norm2, ex_dot, ex_norm2) > 0;
}

// Sum of a double over the block (blockDim.x a multiple of 32, at most 1024). Every thread
// gets the total. `shared` holds 32 doubles. The association is fixed by the launch shape.
__device__ __forceinline__ double block_sum(double v, double* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  double t = 0.0;
  if (warp == 0) {
    t = lane < warps ? shared[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) t += __shfl_down_sync(0xffffffffu, t, o);
    if (lane == 0) shared[0] = t;
  }
  __syncthreads();
  t = shared[0];
  __syncthreads();
  return t;
}

}  // namespace fastsas
