"""Exact RBF MMD: fastsas against its GEMM floor and the NumPy float64 reference.

    python benchmarks/bench_mmd.py --n 50000 --d 512 --repeat 3

Rows of the table:
- fastsas: fs.mmd on float32 input (float32 GEMM tiles, exp and float64 sums fused).
- floor: NumPy float32 multiplying the same tiles fastsas multiplies (K(x,x) and K(y,y) on
  and above the diagonal, K(x,y) all of them), into preallocated buffers, nothing else.
- reference: fastsas.reference.mmd (full float64 kernel matrices from explicit
  differences, as docs/definitions.md writes it), only up to --ref-max-n; its value is compared.
Peak RSS is the process's (resource.getrusage) right after the fastsas runs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of_with_result as best_of, peak_rss_mb, print_floor_table  # noqa: E402

import fastsas as fs  # noqa: E402
from fastsas import _core
from fastsas import reference as ref



def make_data(n: int, m: int, d: int, seed: int, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Two float32 clouds of unit rows around nearby centres (CLIP-like, small MMD)."""
    rng = np.random.default_rng(seed)
    centre = 0.4 * rng.standard_normal(d).astype(np.float32)
    out = []
    for rows, shift in ((n, 0.0), (m, 0.1)):
        a = np.empty((rows, d), dtype=np.float32)
        for i in range(0, rows, chunk):
            r = min(chunk, rows - i)
            blk = centre + np.float32(shift) + rng.standard_normal((r, d), dtype=np.float32)
            a[i:i + r] = blk / np.linalg.norm(blk, axis=1, keepdims=True)
        out.append(a)
    return out[0], out[1]


def floor_tiles(x: np.ndarray, y: np.ndarray, tile: int) -> None:
    bufs: dict[tuple[int, int], np.ndarray] = {}

    def mul(a, b):
        shape = (a.shape[0], b.shape[0])
        out = bufs.get(shape)
        if out is None:
            out = bufs[shape] = np.empty(shape, dtype=a.dtype)
        np.matmul(a, b.T, out=out)

    for a in (x, y):
        for i in range(0, a.shape[0], tile):
            for j in range(i, a.shape[0], tile):
                mul(a[i:i + tile], a[j:j + tile])
    for i in range(0, x.shape[0], tile):
        for j in range(0, y.shape[0], tile):
            mul(x[i:i + tile], y[j:j + tile])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=50_000, help="rows of x")
    p.add_argument("--m", type=int, default=None, help="rows of y (default: n)")
    p.add_argument("--d", type=int, default=512, help="embedding dimension")
    p.add_argument("--sigma", type=float, default=10.0)
    p.add_argument("--repeat", type=int, default=3, help="runs per method, best reported")
    p.add_argument("--threads", type=int, default=None, help="fastsas threads (default: all cores)")
    p.add_argument("--tile", type=int, default=None, help="fastsas tile (default: the core's)")
    p.add_argument("--ref-max-n", type=int, default=5000, help="largest n + m for the float64 reference")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    n, d = args.n, args.d
    m = args.m or n
    tile = args.tile or int(_core.MMD_TILE)
    x, y = make_data(n, m, d, args.seed)
    rss_inputs = peak_rss_mb()

    t_fs, value = best_of(lambda: fs.mmd(x, y, sigma=args.sigma, threads=args.threads, tile=tile), args.repeat)
    rss_fs = peak_rss_mb()
    t_floor, _ = best_of(lambda: floor_tiles(x, y, tile), args.repeat)

    rows = [("fastsas mmd (float32)", t_fs, f"MMD {value:.6g}; peak RSS {rss_fs:.0f} MB (inputs {rss_inputs:.0f} MB)")]
    rows.append((f"floor: NumPy float32 tiles {tile}x{tile} (same tiles)", t_floor, ""))
    t64, v64 = best_of(lambda: fs.mmd(x.astype(np.float64), y.astype(np.float64), sigma=args.sigma,
                                      threads=args.threads, tile=tile), 1)
    rows.append(("fastsas mmd (float64 input)", t64, f"MMD {v64:.10g}"))
    if n + m <= args.ref_max_n:
        t_ref, v_ref = best_of(lambda: ref.mmd(x, y, sigma=args.sigma), 1)
        rows.append(("NumPy float64 reference (full kernel matrices)", t_ref,
                     f"MMD {v_ref:.10g}; fastsas rel. diff float32 {abs(value - v_ref) / abs(v_ref):.1e}, "
                     f"float64 {abs(v64 - v_ref) / abs(v_ref):.1e}"))
    else:
        rows.append(("NumPy float64 reference", None, f"skipped: n + m > --ref-max-n = {args.ref_max_n}"))

    threads = args.threads or fs._validate.default_threads()
    print(f"# MMD, n = {n:,}, m = {m:,}, d = {d}, sigma = {args.sigma}, {threads} threads, best of {args.repeat}")
    print()
    print_floor_table(rows, t_floor)
    return 0


if __name__ == "__main__":
    sys.exit(main())
