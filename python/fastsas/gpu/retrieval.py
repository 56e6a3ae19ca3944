"""Exact bidirectional retrieval ranks on the GPU: fast-precision GEMM tiles, a count kernel
and an exact re-check of the undecided pairs (cuda/retrieval.cu). The ranks are those of
the CPU engine (`fastsas._core.retrieval`) bit for bit for float32 input: both define a
similarity as the same canonical float64 dot product of the same normalised rows.

Rounding band: the proof
------------------------
Notation. a, b: two stored normalised rows (precision T = float32, or float64), d entries.
s = canonical(a, b), the CPU engine's similarity. F: the fast format of the tile inputs,
with unit roundoff u_F (fp16: 2^-11; bf16: 2^-8, both round-to-nearest conversions done
here; tf32: 2^-10, allowing cuBLAS to truncate instead of rounding) and an absolute floor
eta_F covering underflow even if the tensor cores flush subnormals to zero (fp16 rows are
scaled by 2^15 before conversion, so only |a_k| < 2^-29 can underflow: eta = 2^-29; bf16 and
tf32 have float32's exponent range: eta = 2^-126). For float64 rows the conversion first
rounds to float32: u_F is replaced by u_F + u_32 + u_F u_32 (u_32 = 2^-24).
The tile holds t~ = fl_acc(sum_k a^_k b^_k), a^ = fl_F(a), b^ = fl_F(b).

(1) Norms. Rows are normalised in float64 and rounded to T, so ||a||, ||b|| <= 1 + 2^-20
    (any d < 2^20): sum_k |a_k b_k| <= ||a|| ||b|| <= N := 1.01 (the CPU engine's constant).
(2) Conversion. |a^_k - a_k| <= u_F |a_k| + eta, likewise b. Then
      |a^.b^ - a.b| <= sum |da_k| |b_k| + |a_k| |db_k| + |da_k| |db_k|
                    <= (2 u_F + u_F^2) N + 2 eta (1 + u_F) sqrt(d) (1 + 2^-20) + d eta^2
    using sum_k |b_k| <= sqrt(d) ||b|| (Cauchy-Schwarz).
(3) Accumulation. The products of two F values are exact in float32 (at most 22 significant
    bits). Summing d of them in float32 in *any* order and grouping (cuBLAS split-K, tensor-
    core internal trees), with every addition's relative error at most e = 2^-22 (twice a
    truncating float32 addition's 2^-23, to cover tensor cores that align a group of addends
    to the largest before one rounding), gives |t~ - a^.b^| <= gamma * sum_k |a^_k b^_k|,
    gamma = d e / (1 - d e) (Higham, Thm 3.1 / Lemma 3.4), and
    sum_k |a^_k b^_k| <= (1 + u_F)^2 N + 2 eta sqrt(d) (1 + u_F) (1 + 2^-20) + d eta^2 =: M.
    The fp16 scale 2^15 on both sides is undone exactly by alpha = 2^-30 (a power of two).
(4) The canonical value itself: 4-lane float64 sums, |s - a.b| <= gamma_53 N with
    gamma_53 = d 2^-53 / (1 - d 2^-53).
So |t~ - s| <= (2) + gamma M + gamma_53 N =: band. The band is widened by 1 % and a floor of
2^-20 (covering the float32 rounding of the tile's final store), and the per-query interval
[t - band, t + band] is rounded outward twice (float64, then float32) on the device; hence
any tile entry outside [lo, hi] is decided the same way as the canonical value would decide
it, and every entry inside is re-decided with the canonical value. Rows of integers follow
the CPU engine's exact-tie rule: a query with an exact threshold (its best match and it are
integer rows) widens its band by `tie_band`, and inside it integer candidates are compared
by their exact rational cosines (cuda/fastsas_common.cuh, `beats`). Sizes for d = 768:
fp16 ~1.2e-3, tf32 ~2.1e-3, bf16 ~7.9e-3 (the default is fp16: as fast as bf16 on tensor
cores, with 8x fewer undecided pairs; normalised rows lie in [-1, 1], where fp16's range is
no limit).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from fastsas import _core
from fastsas.gpu import _arrays
from fastsas.gpu._arrays import NON_FINITE, ZERO_NORM, BadRowCollector
from fastsas.gpu._blas import COMPUTE_32F, COMPUTE_32F_FAST_TF32, gemm_nt
from fastsas.gpu._kernels import kernel

__all__ = ["DEFAULT_PRECISION", "PRECISIONS", "check_precision", "normalise", "retrieval_ranks", "rounding_band"]

# precision -> (u_F, eta_F, scale applied before conversion)
PRECISIONS = {
    "fp16": (2.0 ** -11, 2.0 ** -29, 2.0 ** 15),
    "bf16": (2.0 ** -8, 2.0 ** -126, 1.0),
    "tf32": (2.0 ** -10, 2.0 ** -126, 1.0),
}
DEFAULT_PRECISION = "fp16"
DEFAULT_TILE = 16384
DEFAULT_CAPACITY = 1 << 22  # undecided pairs per tile before the buffer grows
_ACC_EPS = 2.0 ** -22
_U32 = 2.0 ** -24
_NORM = 1.01
_NORM_SLACK = 1.0 + 2.0 ** -20


def check_precision(precision: Any) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))} (the GPU tile "
                         f"format), got {precision!r}")
    return precision


def rounding_band(d: int, precision: str = DEFAULT_PRECISION, input_dtype: Any = np.float32) -> float:
    """The proven bound on |tile entry - canonical similarity| (module docstring)."""
    u, eta, _ = PRECISIONS[check_precision(precision)]
    if np.dtype(input_dtype) == np.float64:
        u = u + _U32 + u * _U32
    root = math.sqrt(d)
    conversion = (2 * u + u * u) * _NORM + 2 * eta * (1 + u) * root * _NORM_SLACK + d * eta * eta
    if d * _ACC_EPS >= 0.5:
        raise ValueError(f"dimension {d} is too large for a float32-accumulated tile bound; use backend='cpu'")
    gamma = d * _ACC_EPS / (1 - d * _ACC_EPS)
    magnitude = (1 + u) ** 2 * _NORM + 2 * eta * root * (1 + u) * _NORM_SLACK + d * eta * eta
    gamma53 = d * 2.0 ** -53 / (1 - d * 2.0 ** -53)
    return 1.01 * (conversion + gamma * magnitude + gamma53 * _NORM) + 2.0 ** -20


def tie_band(d: int, input_dtype: Any) -> float:
    """The CPU engine's tie band (``_core.retrieval_tie_band``): twice a bound on
    |canonical value - exact cosine of the input rows|; within it, integer rows are compared
    exactly."""
    return float(_core.retrieval_tie_band(dim=int(d), float64=np.dtype(input_dtype) == np.float64))


def integer_norms(x):
    """|row|^2 of every row whose coordinates are all integers (|row|^2 at most
    ``_core.RETRIEVAL_INTEGER_NORM2_MAX``), else 0."""
    cp = _arrays.cupy_module()
    n, d = x.shape
    out = cp.zeros(n, dtype=cp.int64)
    if n:
        sfx = "f32" if x.dtype == cp.float32 else "f64"
        kernel("retrieval.cu", f"integer_rows_{sfx}")(((n + 255) // 256,), (256,),
                                                      (x, np.int64(_arrays.row_stride(x)), np.int64(n), np.int32(d),
                                                       np.float64(_core.RETRIEVAL_INTEGER_NORM2_MAX), out))
    return out


def normalise(x, bad: BadRowCollector, which: tuple[int, int]):
    """Rows divided by their norm, bit-identical to the CPU engine's (cuda/rows.cu)."""
    cp = _arrays.cupy_module()
    n, d = x.shape
    out = cp.empty((n, d), dtype=x.dtype)
    flags = cp.empty(n, dtype=cp.int8)
    sfx = "f32" if x.dtype == cp.float32 else "f64"
    if n:
        kernel("rows.cu", f"prepare_rows_{sfx}")(((n + 127) // 128,), (128,),
                                                 (x, np.int64(_arrays.row_stride(x)), out, np.int64(n), np.int32(d),
                                                  np.int32(1), flags))
    f = cp.asnumpy(flags)
    for problem, code in zip(which, (1, 2)):
        rows = np.flatnonzero(f == code)
        if rows.size:
            bad.add(problem, rows)
    return out


def _fast_copy(xn, precision: str):
    """(array for cuBLAS, its cuBLAS type name, compute type, alpha per side)."""
    cp = _arrays.cupy_module()
    x32 = xn if xn.dtype == cp.float32 else xn.astype(cp.float32)
    if precision == "fp16":
        return (x32 * np.float32(PRECISIONS["fp16"][2])).astype(cp.float16), "float16", COMPUTE_32F
    if precision == "bf16":
        out = cp.empty(x32.shape, dtype=cp.uint16)
        count = x32.size
        if count:
            kernel("rows.cu", "to_bf16")((min(65535, (count + 255) // 256),), (256,), (x32, out, np.int64(count)))
        return out, "bfloat16", COMPUTE_32F
    return x32, "float32", COMPUTE_32F_FAST_TF32


def _groups(codes: np.ndarray, num_codes: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR lists of the rows of each code: offsets (num_codes + 1, int64), members (int32)."""
    counts = np.bincount(codes, minlength=num_codes)
    offsets = np.zeros(num_codes + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets, np.argsort(codes, kind="stable").astype(np.int32)


def retrieval_ranks(images: Any, texts: Any, image_codes: np.ndarray | None, text_codes: np.ndarray | None, *,
                    precision: str = DEFAULT_PRECISION, tile: tuple[int, int] | None = None,
                    capacity: int = DEFAULT_CAPACITY, stats: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(image_ranks, text_ranks), int64, 0 for a query without a match: the CPU engine's
    `image_ranks` / `text_ranks`. Codes: int32, equal codes match; None for row i <-> row i.
    `stats`, when given, receives the timings (seconds, from CUDA events) of the GEMMs, the
    count kernels and the re-checks, and the number of re-checked pairs."""
    cp = _arrays.cupy_module()
    precision = check_precision(precision)
    x, y = _arrays.to_device(images, "images"), _arrays.to_device(texts, "texts")
    dtype = _arrays.common_dtype(x, y)
    x, y = x.astype(dtype, copy=False), y.astype(dtype, copy=False)
    n, d = x.shape
    m = y.shape[0]

    bad = BadRowCollector([("x", NON_FINITE), ("x", ZERO_NORM), ("y", NON_FINITE), ("y", ZERO_NORM)])
    xn = normalise(x, bad, (0, 1))
    yn = normalise(y, bad, (2, 3))
    bad.raise_if_any({"x": "images", "y": "texts"})

    if image_codes is None:
        image_codes = text_codes = np.arange(n, dtype=np.int32)
    ci = np.ascontiguousarray(image_codes, dtype=np.int32)
    ct = np.ascontiguousarray(text_codes, dtype=np.int32)
    num_codes = int(max(ci.max(), ct.max())) + 1
    band = rounding_band(d, precision, dtype)
    tie = tie_band(d, dtype)
    sfx = "f32" if dtype == cp.float32 else "f64"
    norm2 = {"i": integer_norms(x), "t": integer_norms(y)}
    ld = {"i": np.int64(_arrays.row_stride(x)), "t": np.int64(_arrays.row_stride(y))}
    thr, lo, hi, ex_dot, ex_norm2 = {}, {}, {}, {}, {}
    for side, (a, b, a0, b0, other, codes_a, codes_b, rows) in {"i": (xn, yn, x, y, "t", ci, ct, n),
                                                                 "t": (yn, xn, y, x, "i", ct, ci, m)}.items():
        offsets, members = _groups(codes_b, num_codes)
        thr[side] = cp.empty(rows, dtype=cp.float64)
        lo[side] = cp.empty(rows, dtype=cp.float32)
        hi[side] = cp.empty(rows, dtype=cp.float32)
        ex_dot[side] = cp.empty(rows, dtype=cp.int64)
        ex_norm2[side] = cp.empty(rows, dtype=cp.int64)
        kernel("retrieval.cu", f"thresholds_{sfx}")(
            ((rows + 255) // 256,), (256,),
            (a, b, np.int32(d), cp.asarray(codes_a), cp.asarray(offsets), cp.asarray(members), np.int32(num_codes),
             np.int64(rows), np.float64(band), thr[side], lo[side], hi[side], a0, ld[side], b0, ld[other],
             norm2[side], norm2[other], np.float64(tie), ex_dot[side], ex_norm2[side]))
    codes_i, codes_t = cp.asarray(ci), cp.asarray(ct)

    xf, ftype, compute = _fast_copy(xn, precision)
    yf, _, _ = _fast_copy(yn, precision)
    scale = PRECISIONS[precision][2]
    alpha = 1.0 / (scale * scale)

    tr, tc = tile if tile is not None else (DEFAULT_TILE, DEFAULT_TILE)
    tr, tc = min(tr, n), min(tc, m)
    tiles = [(i0, j0) for i0 in range(0, n, tr) for j0 in range(0, m, tc)]
    buffers = [cp.empty(tr * tc, dtype=cp.float32) for _ in range(2 if len(tiles) > 1 else 1)]
    cand = [cp.empty((capacity, 2), dtype=cp.int32) for _ in buffers]
    n_cand = [cp.zeros(1, dtype=cp.uint64) for _ in buffers]
    pinned = cp.cuda.alloc_pinned_memory(8 * len(buffers))
    n_host = np.frombuffer(pinned, dtype=np.uint64, count=len(buffers))
    count_i = cp.zeros(n, dtype=cp.uint32)
    count_t = cp.zeros(m, dtype=cp.uint32)
    count = kernel("retrieval.cu", "count_tile")
    recheck = kernel("retrieval.cu", f"recheck_{sfx}")
    stream = cp.cuda.get_current_stream()
    device = cp.cuda.Device()
    recheck_grid = 8 * device.attributes["MultiProcessorCount"]
    timed = stats is not None
    marks: list[tuple[str, Any, Any]] = []
    done = [cp.cuda.Event(block=True, disable_timing=True) for _ in buffers]
    rechecked = 0

    def mark(kind: str, start):
        if timed:
            end = cp.cuda.Event()
            end.record(stream)
            marks.append((kind, start, end))

    def begin():
        if not timed:
            return None
        e = cp.cuda.Event()
        e.record(stream)
        return e

    def launch_count(k: int, i0: int, j0: int, rows: int, cols: int, emit: int) -> None:
        n_cand[k].fill(0)
        count(((cols + 127) // 128, (rows + 127) // 128), (256,),
              (buffers[k], np.int32(rows), np.int32(cols), np.int32(i0), np.int32(j0), codes_i, codes_t,
               lo["i"], hi["i"], lo["t"], hi["t"], count_i, count_t, cand[k], n_cand[k],
               np.uint64(cand[k].shape[0]), np.int32(emit)))

    def finish(k: int, i0: int, j0: int, rows: int, cols: int) -> None:
        nonlocal rechecked
        done[k].synchronize()
        total = int(n_host[k])
        if total > cand[k].shape[0]:
            # Overflow: the count kernel reserved a slot for every undecided pair but could
            # not store them all. Grow the buffer and list them again (no counting twice).
            cand[k] = cp.empty((total + total // 4, 2), dtype=cp.int32)
            start = begin()
            launch_count(k, i0, j0, rows, cols, 0)
            mark("count", start)
        if total:
            start = begin()
            recheck((recheck_grid,), (256,),
                    (xn, yn, np.int32(d), cand[k], n_cand[k], np.uint64(cand[k].shape[0]), thr["i"], thr["t"],
                     count_i, count_t, x, ld["i"], y, ld["t"], norm2["i"], norm2["t"], ex_dot["i"],
                     ex_norm2["i"], ex_dot["t"], ex_norm2["t"], np.float64(tie)))
            mark("recheck", start)
        rechecked += total

    pending = None
    for t, (i0, j0) in enumerate(tiles):
        k = t % len(buffers)
        rows, cols = min(tr, n - i0), min(tc, m - j0)
        c = buffers[k][: rows * cols].reshape(rows, cols)
        start = begin()
        gemm_nt(xf[i0:i0 + rows], yf[j0:j0 + cols], c, a_type=ftype, compute=compute, alpha=alpha)
        mark("gemm", start)
        start = begin()
        launch_count(k, i0, j0, rows, cols, 1)
        mark("count", start)
        cp.cuda.runtime.memcpyAsync(n_host.ctypes.data + 8 * k, n_cand[k].data.ptr, 8,
                                    cp.cuda.runtime.memcpyDeviceToHost, stream.ptr)
        done[k].record(stream)
        if pending is not None:
            finish(*pending)
        pending = (k, i0, j0, rows, cols)
    if pending is not None:
        finish(*pending)

    thr_i, thr_t = cp.asnumpy(thr["i"]), cp.asnumpy(thr["t"])
    ranks_i = np.where(np.isfinite(thr_i), 1 + cp.asnumpy(count_i).astype(np.int64), 0)
    ranks_t = np.where(np.isfinite(thr_t), 1 + cp.asnumpy(count_t).astype(np.int64), 0)
    if timed:
        stream.synchronize()
        totals = {"gemm": 0.0, "count": 0.0, "recheck": 0.0}
        for kind, a, b in marks:
            totals[kind] += cp.cuda.get_elapsed_time(a, b) / 1e3
        stats.update({f"{k}_s": v for k, v in totals.items()})
        stats.update({"rechecked": rechecked, "band": band, "precision": precision, "tiles": len(tiles),
                      "tile": (tr, tc)})
    return ranks_i, ranks_t
