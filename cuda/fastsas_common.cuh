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

// The CPU engine's canonical similarity (cpp/src/retrieval.cpp, canonical_dot): exact
// products of the two stored rows, summed in float64 in four interleaved lanes (lane l takes
// k = l, l + 4, ...), the tail into lane 0, then (s0 + s1) + (s2 + s3). The CPU build
// (GCC, C++, -march=native) contracts `s += a * b` into an FMA; for float rows the product
// is exact in double, so fma(a, b, s) and s + a * b are the same number and the result is
// bit-identical whatever either compiler does. For double rows it is NOT: the CPU build
// (GCC -O3 -march=native, AVX-512) vectorises the main loop of canonical_dot<double> and of
// pack_rows<double> with separate vmulpd + vaddsd (no fusion) and fuses only the remainder
// iterations, so for float64 input the GPU's fma() values can differ from the CPU's in the
// last bit and float64 ranks can differ at exact near-ties. Matching needs the CPU to write
// std::fma explicitly (cpp/src/retrieval.cpp), after which this code is already right.
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
