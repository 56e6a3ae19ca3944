// RBF MMD pieces beyond cuBLAS: centring by the joint mean with float64 squared norms, and
// the fused exp-and-sum over one GEMM tile (the CPU engine's cpp/src/mmd.cpp, same formula:
// K = exp(min(2g a.b - g|a|^2 - g|b|^2, 0)) evaluated in the input's precision, summed in
// float64). Each block owns one slot of `partial` and adds its tile sum to it; tiles run one
// after another on one stream, so the association of every slot is fixed by the tile order
// and the launch shape: the same bits from run to run.
#include "fastsas_common.cuh"

namespace {

// One warp per row: row -= shift (rounded to T as stored), sq = sum of squares of the
// stored values in float64.
template <class T>
__device__ void center_rows(T* __restrict__ a, i64 n, int d, const double* __restrict__ shift,
                            double* __restrict__ sq) {
  const int lane = threadIdx.x & 31;
  const i64 row = (static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (row >= n) return;  // warp-uniform
  T* r = a + row * d;
  double s = 0.0;
  for (int k = lane; k < d; k += 32) {
    const T v = fastsas::from_f64<T>(fastsas::to_f64(r[k]) - shift[k]);
    r[k] = v;
    s = fma(fastsas::to_f64(v), fastsas::to_f64(v), s);
  }
  for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
  if (lane == 0) sq[row] = s;
}

__device__ __forceinline__ float kernel_exp(float z) { return expf(z); }
__device__ __forceinline__ double kernel_exp(double z) { return exp(z); }

// partial[blockIdx.x] += weight * sum over the tile of exp(min(c * two_g + (h_col + h_row), 0)).
template <class T>
__device__ void tile_exp_sum(const T* __restrict__ tile, int rows, int cols, const T* __restrict__ h_rows,
                             const T* __restrict__ h_cols, T two_g, double weight, double* __restrict__ partial) {
  __shared__ double shared[32];
  const i64 total = static_cast<i64>(rows) * cols;
  double s = 0.0;
  for (i64 e = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<i64>(gridDim.x) * blockDim.x) {
    const int r = static_cast<int>(e / cols), c = static_cast<int>(e % cols);
    T z = tile[e] * two_g + (h_cols[c] + h_rows[r]);
    z = z < T(0) ? z : T(0);
    s += static_cast<double>(kernel_exp(z));
  }
  s = fastsas::block_sum(s, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] += weight * s;
}

}  // namespace

extern "C" __global__ void center_rows_f32(float* a, i64 n, int d, const double* shift, double* sq) {
  center_rows<float>(a, n, d, shift, sq);
}
extern "C" __global__ void center_rows_f64(double* a, i64 n, int d, const double* shift, double* sq) {
  center_rows<double>(a, n, d, shift, sq);
}
extern "C" __global__ void tile_exp_sum_f32(const float* tile, int rows, int cols, const float* h_rows,
                                            const float* h_cols, float two_g, double weight, double* partial) {
  tile_exp_sum<float>(tile, rows, cols, h_rows, h_cols, two_g, weight, partial);
}
extern "C" __global__ void tile_exp_sum_f64(const double* tile, int rows, int cols, const double* h_rows,
                                            const double* h_cols, double two_g, double weight, double* partial) {
  tile_exp_sum<double>(tile, rows, cols, h_rows, h_cols, two_g, weight, partial);
}
