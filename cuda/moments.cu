// Moments pieces beyond cuBLAS, with the CPU engine's semantics (cpp/src/moments.cpp):
// rows are shifted by the pilot mean and stored in the input's precision T (the values the
// block products multiply), their sums, the sums of unit rows and of matched cosines are
// float64. The block products themselves are cuBLAS GEMMs in T whose float32 results are
// accumulated in float64 by the caller.
#include "fastsas_common.cuh"

namespace {

// Row problems, as bits of flags[r]: the CPU refuses non-finite rows first, then zero-norm
// rows (only when unit rows are tracked), naming side x before side y.
constexpr int kNonFiniteX = 1, kNonFiniteY = 2, kZeroX = 4, kZeroY = 8;

// One warp per row pair: z[r] = [T(x - pilot_x), T(y - pilot_y)] (2d values), and the
// float64 norms and dot product of the *unshifted* rows for the unit-row statistics.
template <class T>
__device__ void shift_rows(const T* __restrict__ x, i64 ldx, const T* __restrict__ y, i64 ldy, i64 n, int d,
                           const double* __restrict__ pilot, T* __restrict__ z, double* __restrict__ inv_x,
                           double* __restrict__ inv_y, double* __restrict__ cosine,
                           signed char* __restrict__ flags, int track_unit) {
  const int lane = threadIdx.x & 31;
  const i64 row = (static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (row >= n) return;  // warp-uniform
  const T* xr = x + row * ldx;
  const T* yr = y + row * ldy;
  T* zr = z + row * 2 * static_cast<i64>(d);
  double nx = 0.0, ny = 0.0, xy = 0.0;
  for (int k = lane; k < d; k += 32) {
    const double xv = fastsas::to_f64(xr[k]), yv = fastsas::to_f64(yr[k]);
    zr[k] = fastsas::from_f64<T>(xv - pilot[k]);
    zr[d + k] = fastsas::from_f64<T>(yv - pilot[d + k]);
    nx = fma(xv, xv, nx);
    ny = fma(yv, yv, ny);
    xy = fma(xv, yv, xy);
  }
  for (int o = 16; o > 0; o >>= 1) {
    nx += __shfl_down_sync(0xffffffffu, nx, o);
    ny += __shfl_down_sync(0xffffffffu, ny, o);
    xy += __shfl_down_sync(0xffffffffu, xy, o);
  }
  if (lane != 0) return;
  int flag = 0;
  if (!isfinite(nx)) flag |= kNonFiniteX;
  if (!isfinite(ny)) flag |= kNonFiniteY;
  if (track_unit && !(flag & kNonFiniteX) && nx == 0.0) flag |= kZeroX;
  if (track_unit && !(flag & kNonFiniteY) && ny == 0.0) flag |= kZeroY;
  flags[row] = static_cast<signed char>(flag);
  const bool usable = flag == 0 && track_unit;
  const double ix = usable ? 1.0 / sqrt(nx) : 0.0, iy = usable ? 1.0 / sqrt(ny) : 0.0;
  inv_x[row] = ix;
  inv_y[row] = iy;
  cosine[row] = usable ? xy * ix * iy : 0.0;
}

// Column sums over one chunk of rows per blockIdx.y: part_sum[chunk][c] = sum of z[:, c],
// part_unit[chunk][c] = sum of the unit rows' column c (x for c < d, y after). Threads run
// along columns, so every load of a warp is coalesced.
template <class T>
__device__ void column_sums(const T* __restrict__ x, i64 ldx, const T* __restrict__ y, i64 ldy,
                            const T* __restrict__ z, i64 n, int d, const double* __restrict__ inv_x,
                            const double* __restrict__ inv_y, i64 rows_per_chunk, double* __restrict__ part_sum,
                            double* __restrict__ part_unit, int track_unit) {
  const int w = 2 * d;
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= w) return;
  const i64 r0 = static_cast<i64>(blockIdx.y) * rows_per_chunk;
  const i64 r1 = min(n, r0 + rows_per_chunk);
  double s = 0.0, u = 0.0;
  const bool is_x = c < d;
  const T* side = is_x ? x + c : y + (c - d);
  const i64 ld = is_x ? ldx : ldy;
  const double* inv = is_x ? inv_x : inv_y;
  for (i64 r = r0; r < r1; ++r) {
    s += fastsas::to_f64(z[r * w + c]);
    if (track_unit) u = fma(fastsas::to_f64(side[r * ld]), inv[r], u);
  }
  part_sum[static_cast<i64>(blockIdx.y) * w + c] = s;
  part_unit[static_cast<i64>(blockIdx.y) * w + c] = u;
}

}  // namespace

extern "C" __global__ void shift_rows_f32(const float* x, i64 ldx, const float* y, i64 ldy, i64 n, int d,
                                          const double* pilot, float* z, double* inv_x, double* inv_y,
                                          double* cosine, signed char* flags, int track_unit) {
  shift_rows<float>(x, ldx, y, ldy, n, d, pilot, z, inv_x, inv_y, cosine, flags, track_unit);
}
extern "C" __global__ void shift_rows_f64(const double* x, i64 ldx, const double* y, i64 ldy, i64 n, int d,
                                          const double* pilot, double* z, double* inv_x, double* inv_y,
                                          double* cosine, signed char* flags, int track_unit) {
  shift_rows<double>(x, ldx, y, ldy, n, d, pilot, z, inv_x, inv_y, cosine, flags, track_unit);
}
extern "C" __global__ void column_sums_f32(const float* x, i64 ldx, const float* y, i64 ldy, const float* z,
                                           i64 n, int d, const double* inv_x, const double* inv_y,
                                           i64 rows_per_chunk, double* part_sum, double* part_unit,
                                           int track_unit) {
  column_sums<float>(x, ldx, y, ldy, z, n, d, inv_x, inv_y, rows_per_chunk, part_sum, part_unit, track_unit);
}
extern "C" __global__ void column_sums_f64(const double* x, i64 ldx, const double* y, i64 ldy, const double* z,
                                           i64 n, int d, const double* inv_x, const double* inv_y,
                                           i64 rows_per_chunk, double* part_sum, double* part_unit,
                                           int track_unit) {
  column_sums<double>(x, ldx, y, ldy, z, n, d, inv_x, inv_y, rows_per_chunk, part_sum, part_unit, track_unit);
}
