"""cuBLAS GEMMs with explicit data and compute types (never whatever CUPY_TF32 says):
row-major NT products C = A B^T, the layout of every tile here."""
from __future__ import annotations

import numpy as np

# cudaDataType / cublasComputeType_t / cublasOperation_t values (cuBLAS 11+ headers).
CUDA_R_32F, CUDA_R_64F, CUDA_R_16F, CUDA_R_16BF = 0, 1, 2, 14
COMPUTE_32F, COMPUTE_64F, COMPUTE_32F_FAST_TF32 = 68, 70, 77
OP_N, OP_T = 0, 1
GEMM_DEFAULT = -1

_TYPES = {"float32": CUDA_R_32F, "float64": CUDA_R_64F, "float16": CUDA_R_16F, "bfloat16": CUDA_R_16BF}


def _scalar(value: float, compute: int) -> np.ndarray:
    return np.array([value], dtype=np.float64 if compute == COMPUTE_64F else np.float32)


def gemm_nt(a, b, c, *, a_type: str, compute: int, alpha: float = 1.0) -> None:
    """c[r, s] = alpha * sum_k a[r, k] b[s, k] for row-major a (rows x d), b (cols x d), c
    (rows x cols). Row-major X is column-major X^T, so this is the column-major product
    C^T = B A^T: gemm(T, N, m=cols, n=rows, k=d, A=b, B=a)."""
    from cupy.cuda import device
    from cupy_backends.cuda.libs import cublas

    rows, d = a.shape
    cols = b.shape[0]
    al, be = _scalar(alpha, compute), _scalar(0.0, compute)
    c_type = CUDA_R_64F if c.dtype == np.float64 else CUDA_R_32F
    cublas.gemmEx(device.get_cublas_handle(), OP_T, OP_N, cols, rows, d, al.ctypes.data, b.data.ptr,
                  _TYPES[a_type], int(b.strides[0] // b.itemsize), a.data.ptr, _TYPES[a_type],
                  int(a.strides[0] // a.itemsize), be.ctypes.data, c.data.ptr, c_type, int(c.strides[0] // c.itemsize),
                  compute, GEMM_DEFAULT)


def batched_gram(z, block_rows: int, blocks: int, out) -> None:
    """out[b] = Z_b^T Z_b for the blocks Z_b = z[b*block_rows:(b+1)*block_rows] (row-major,
    width w), in z's own precision with its own accumulation (no TF32): the per-block
    product the CPU engine computes with SYRK."""
    from cupy.cuda import device
    from cupy_backends.cuda.libs import cublas

    w = z.shape[1]
    double = z.dtype == np.float64
    compute = COMPUTE_64F if double else COMPUTE_32F
    dtype = CUDA_R_64F if double else CUDA_R_32F
    al, be = _scalar(1.0, compute), _scalar(0.0, compute)
    # Row-major Z_b (block_rows x w) is column-major Z_b^T (w x block_rows, ld w):
    # out_b = Z_b^T Z_b = (Z_b^T)(Z_b^T)^T: gemm(N, T, m=w, n=w, k=block_rows).
    cublas.gemmStridedBatchedEx(device.get_cublas_handle(), OP_N, OP_T, w, w, block_rows, al.ctypes.data,
                                z.data.ptr, dtype, w, block_rows * w, z.data.ptr, dtype, w, block_rows * w,
                                be.ctypes.data, out.data.ptr, dtype, w, w * w, blocks, compute, GEMM_DEFAULT)
