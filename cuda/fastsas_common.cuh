// Device helpers shared by the fastsas kernels. Included by every .cu through the include
// path the loader gives NVRTC (`-I <this folder>`), and by nvcc in CI the same way.
//
// Every kernel is compiled with --fmad=false: the only fused multiply-adds are the ones
// written out with fma() below, so the arithmetic is exactly what the source says and can be
// matched operation for operation against the CPU engine.
#pragma once

typedef long long i64;
typedef unsigned long long u64;

namespace fastsas {

// +infinity without math_constants.h (not on NVRTC's default include path).
__device__ __forceinline__ double inf() { return __longlong_as_double(0x7ff0000000000000LL); }

// The CPU engine's canonical similarity (cpp/src/retrieval.cpp, canonical_dot): exact
// products of the two stored rows, summed in float64 in four interleaved lanes (lane l takes
// k = l, l + 4, ...), the tail into lane 0, then (s0 + s1) + (s2 + s3). The CPU build
// (GCC, C++, -march=native) contracts `s += a * b` into an FMA; for float rows the product
// is exact in double, so fma(a, b, s) and s + a * b are the same number and the result is
// bit-identical whatever either compiler does. For double rows the fma() matches the
// contracted CPU build (see python/fastsas/gpu/retrieval.py for what that means).
template <class T>
__device__ __forceinline__ double canonical_dot(const T* __restrict__ a, const T* __restrict__ b, int d) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  int k = 0;
  for (; k + 4 <= d; k += 4) {
    s0 = fma(static_cast<double>(a[k]), static_cast<double>(b[k]), s0);
    s1 = fma(static_cast<double>(a[k + 1]), static_cast<double>(b[k + 1]), s1);
    s2 = fma(static_cast<double>(a[k + 2]), static_cast<double>(b[k + 2]), s2);
    s3 = fma(static_cast<double>(a[k + 3]), static_cast<double>(b[k + 3]), s3);
  }
  for (; k < d; ++k) s0 = fma(static_cast<double>(a[k]), static_cast<double>(b[k]), s0);
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
    s0 = fma(static_cast<double>(u.x), static_cast<double>(v.x), s0);
    s1 = fma(static_cast<double>(u.y), static_cast<double>(v.y), s1);
    s2 = fma(static_cast<double>(u.z), static_cast<double>(v.z), s2);
    s3 = fma(static_cast<double>(u.w), static_cast<double>(v.w), s3);
  }
  return (s0 + s1) + (s2 + s3);
}

__device__ __forceinline__ double row_dot(const float* a, const float* b, int d) {
  return (d & 3) == 0 ? canonical_dot4(a, b, d) : canonical_dot<float>(a, b, d);
}
__device__ __forceinline__ double row_dot(const double* a, const double* b, int d) {
  return canonical_dot<double>(a, b, d);
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
