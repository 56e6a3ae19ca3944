// Row preparation: L2 normalisation bit-identical to the CPU engine's pack_rows
// (cpp/src/retrieval.cpp), and the finiteness check the MMD needs.
//
// pack_rows computes, per row, norm = fma(e_j, e_j, norm) in float64 *sequentially* (j = 0,
// 1, ...), inv = 1 / sqrt(norm), and stores T(double(e_j) * inv). IEEE float64 fma, sqrt,
// division and multiplication are correctly rounded on both sides, and the sum is done here
// in the same order with the same fma, so the stored rows are the same bits. A sequential sum per row would read
// memory badly, so a block first stages a 128-row x 32-column slab in shared memory with
// coalesced loads; each thread then adds its own row's 32 values in column order.
#include "fastsas_common.cuh"

namespace {

constexpr int kRows = 128;  // rows per block = threads per block
constexpr int kCols = 32;   // columns staged at a time

// flags[r]: 0 fine, 1 non-finite (NaN, Inf, or a squared norm that overflows), 2 zero norm
// (only when normalising). out may be null when only the check is wanted.
template <class T>
__device__ void prepare_rows(const T* __restrict__ in, i64 ld, T* __restrict__ out, i64 n, int d, int normalise,
                             signed char* __restrict__ flags) {
  __shared__ T slab[kRows][kCols + 1];
  __shared__ double inv[kRows];
  const i64 row0 = static_cast<i64>(blockIdx.x) * kRows;
  const int t = threadIdx.x;
  const i64 my_row = row0 + t;
  double norm = 0.0;
  for (int c0 = 0; c0 < d; c0 += kCols) {
    for (int e = t; e < kRows * kCols; e += kRows) {
      const int r = e / kCols, c = e % kCols;
      const i64 row = row0 + r;
      slab[r][c] = (row < n && c0 + c < d) ? in[row * ld + c0 + c] : T(0);
    }
    __syncthreads();
    const int width = min(kCols, d - c0);
    for (int c = 0; c < width; ++c) {
      const double v = fastsas::to_f64(slab[t][c]);
      norm = fma(v, v, norm);
    }
    __syncthreads();
  }
  // A NaN or Inf anywhere in the row makes its squared norm non-finite (as on the CPU).
  signed char flag = 0;
  if (!isfinite(norm)) flag = 1;
  else if (normalise && norm == 0.0) flag = 2;
  if (my_row < n) flags[my_row] = flag;
  inv[t] = (normalise && flag == 0) ? 1.0 / sqrt(norm) : 1.0;
  __syncthreads();
  if (out == nullptr) return;
  for (int c0 = 0; c0 < d; c0 += kCols) {
    for (int e = t; e < kRows * kCols; e += kRows) {
      const int r = e / kCols, c = e % kCols;
      const i64 row = row0 + r;
      if (row < n && c0 + c < d) {
        const T v = in[row * ld + c0 + c];
        out[row * d + c0 + c] = normalise ? fastsas::from_f64<T>(fastsas::to_f64(v) * inv[r]) : v;
      }
    }
  }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(kRows)
prepare_rows_f32(const float* in, i64 ld, float* out, i64 n, int d, int normalise, signed char* flags) {
  prepare_rows<float>(in, ld, out, n, d, normalise, flags);
}

extern "C" __global__ void __launch_bounds__(kRows)
prepare_rows_f64(const double* in, i64 ld, double* out, i64 n, int d, int normalise, signed char* flags) {
  prepare_rows<double>(in, ld, out, n, d, normalise, flags);
}

// Round float32 values to bfloat16 (bit patterns in uint16), to nearest, ties to even.
// CuPy has no bfloat16 dtype; this is the conversion the bf16 retrieval tiles use. Inputs
// are finite (rows were checked) and |v| <= 2, so no overflow or NaN handling is needed.
extern "C" __global__ void to_bf16(const float* in, unsigned short* out, i64 count) {
  for (i64 e = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; e < count;
       e += static_cast<i64>(gridDim.x) * blockDim.x) {
    const unsigned bits = __float_as_uint(in[e]);
    out[e] = static_cast<unsigned short>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
  }
}
