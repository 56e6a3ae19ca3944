"""Exact biased RBF MMD on the GPU with the CPU engine's formula (cpp/src/mmd.cpp): both sets
shifted by their joint mean, GEMM tiles in the input's precision (cuBLAS, float32
accumulation, never TF32), then one fused kernel per tile that evaluates the kernel values
and sums them in float64 (cuda/mmd.cu). K(x, x) and K(y, y) use the tiles on and above the
diagonal, off-diagonal tiles weighted 2, as on the CPU."""
from __future__ import annotations

from typing import Any

import numpy as np

from fastsas.gpu import _arrays
from fastsas.gpu._arrays import NON_FINITE, BadRowCollector
from fastsas.gpu._blas import COMPUTE_32F, COMPUTE_64F, gemm_nt
from fastsas.gpu._kernels import kernel

__all__ = ["DEFAULT_TILE", "mmd"]

DEFAULT_TILE = 8192
_SLOTS_PER_SM = 8


def _checked(x, name: str, input: str):
    cp = _arrays.cupy_module()
    n, d = x.shape
    flags = cp.empty(n, dtype=cp.int8)
    sfx = "f32" if x.dtype == cp.float32 else "f64"
    # normalise = 0, out = null: only the finiteness check.
    kernel("rows.cu", f"prepare_rows_{sfx}")(((n + 127) // 128,), (128,),
                                             (x, np.int64(_arrays.row_stride(x)), np.uintp(0), np.int64(n),
                                              np.int32(d), np.int32(0), flags))
    rows = np.flatnonzero(cp.asnumpy(flags) != 0)
    if rows.size:
        bad = BadRowCollector([(input, NON_FINITE)])
        bad.add(0, rows)
        bad.raise_if_any({input: name})


def mmd(x: Any, y: Any, sigma: float, *, tile: int | None = None) -> dict[str, float]:
    """{"mmd", "mean_kxx", "mean_kyy", "mean_kxy"} as the CPU engine returns them."""
    cp = _arrays.cupy_module()
    a, b = _arrays.to_device(x, "x"), _arrays.to_device(y, "y")
    dtype = _arrays.common_dtype(a, b)
    _checked(a, "x", "x")
    _checked(b, "y", "y")
    # Private copies (centred in place), in the common precision.
    a = cp.array(a, dtype=dtype, order="C")
    b = cp.array(b, dtype=dtype, order="C")
    n, d = a.shape
    m = b.shape[0]
    shift = (a.sum(axis=0, dtype=cp.float64) + b.sum(axis=0, dtype=cp.float64)) / (n + m)
    sfx = "f32" if dtype == cp.float32 else "f64"
    center = kernel("mmd.cu", f"center_rows_{sfx}")
    sq = {}
    for key, arr in (("x", a), ("y", b)):
        rows = arr.shape[0]
        sq[key] = cp.empty(rows, dtype=cp.float64)
        center(((rows + 7) // 8,), (256,), (arr, np.int64(rows), np.int32(d), shift, sq[key]))
    g = 1.0 / (2.0 * float(sigma) * float(sigma))
    h = {key: (-g * v).astype(dtype) for key, v in sq.items()}
    two_g = np.float32(2.0 * g) if dtype == cp.float32 else np.float64(2.0 * g)
    compute = COMPUTE_32F if dtype == cp.float32 else COMPUTE_64F
    a_type = "float32" if dtype == cp.float32 else "float64"
    t = int(tile) if tile else DEFAULT_TILE
    buf = cp.empty(t * t, dtype=dtype)
    grid = _SLOTS_PER_SM * cp.cuda.Device().attributes["MultiProcessorCount"]
    partial = cp.zeros((3, grid), dtype=cp.float64)
    exp_sum = kernel("mmd.cu", f"tile_exp_sum_{sfx}")
    sides = {0: (a, a, h["x"], h["x"]), 1: (b, b, h["y"], h["y"]), 2: (a, b, h["x"], h["y"])}
    for pair, (p, q, hp, hq) in sides.items():
        for i0 in range(0, p.shape[0], t):
            for j0 in range(i0 if pair < 2 else 0, q.shape[0], t):
                rows, cols = min(t, p.shape[0] - i0), min(t, q.shape[0] - j0)
                c = buf[: rows * cols].reshape(rows, cols)
                gemm_nt(p[i0:i0 + rows], q[j0:j0 + cols], c, a_type=a_type, compute=compute)
                weight = 1.0 if (pair == 2 or i0 == j0) else 2.0
                exp_sum((grid,), (256,), (c, np.int32(rows), np.int32(cols), hp[i0:i0 + rows], hq[j0:j0 + cols],
                                          two_g, np.float64(weight), partial[pair]))
    s = cp.asnumpy(partial).sum(axis=1)
    kxx = s[0] / (float(n) * n)
    kyy = s[1] / (float(m) * m)
    kxy = s[2] / (float(n) * m)
    return {"mean_kxx": kxx, "mean_kyy": kyy, "mean_kxy": kxy, "mmd": 100.0 * (kxx + kyy - 2.0 * kxy)}
