"""Exact bidirectional retrieval: fastsas against its GEMM floor, NumPy and faiss-cpu.

    python benchmarks/bench_retrieval.py --n 100000 --d 512 --repeat 3

Rows of the table:
- fastsas: fs.retrieval, one-to-one ground truth, both directions (R@1/5/10, ranks).
- floor: NumPy float32 multiplying the same tiles (X[i:i+tr] @ Y[j:j+tc].T for every tile
  of the same size, into a preallocated buffer, nothing else), in the same run: one
  n x n x d GEMM, which is all the arithmetic exact ranks need.
- numpy full: the full n x n float32 similarity matrix and the ranks from it (both
  directions), as a user would write it; only when it fits in memory.
- faiss IndexFlatIP: exact inner-product top-10 in both directions (skipped with a note
  when faiss is not importable; this script never installs it).
Peak RSS is the process's (resource.getrusage), read right after the fastsas runs: it
includes the inputs (2 n d float32) but none of the baselines, which run afterwards.
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



def make_data(n: int, d: int, seed: int, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """float32 pairs without float64 temporaries: low-rank shared structure plus noise."""
    rng = np.random.default_rng(seed)
    rank = min(32, d)
    basis = rng.standard_normal((rank, d), dtype=np.float32) / np.float32(np.sqrt(rank))
    x = np.empty((n, d), dtype=np.float32)
    y = np.empty((n, d), dtype=np.float32)
    for i in range(0, n, chunk):
        r = min(chunk, n - i)
        z = rng.standard_normal((r, rank), dtype=np.float32) @ basis
        x[i:i + r] = z + 1.2 * rng.standard_normal((r, d), dtype=np.float32)
        y[i:i + r] = z + 1.2 * rng.standard_normal((r, d), dtype=np.float32)
    return x, y


def unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True).astype(a.dtype)


def floor_tiles(xn: np.ndarray, yn: np.ndarray, tr: int, tc: int) -> None:
    # One contiguous output buffer per tile shape (a strided `out` would leave BLAS).
    bufs: dict[tuple[int, int], np.ndarray] = {}
    n, m = xn.shape[0], yn.shape[0]
    for i in range(0, n, tr):
        a = xn[i:i + tr]
        for j in range(0, m, tc):
            b = yn[j:j + tc]
            shape = (a.shape[0], b.shape[0])
            out = bufs.get(shape)
            if out is None:
                out = bufs[shape] = np.empty(shape, dtype=np.float32)
            np.matmul(a, b.T, out=out)


def numpy_full(xn: np.ndarray, yn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    S = xn @ yn.T
    match = np.diagonal(S)
    i2t = 1 + (S > match[:, None]).sum(axis=1)
    t2i = 1 + (S > match[None, :]).sum(axis=0)
    return i2t, t2i


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="pairs (images = texts = n)")
    p.add_argument("--d", type=int, default=512, help="embedding dimension")
    p.add_argument("--repeat", type=int, default=3, help="runs per method, best reported")
    p.add_argument("--threads", type=int, default=None, help="fastsas threads (default: all cores)")
    p.add_argument("--tile-rows", type=int, default=None, help="fastsas tile rows (default: the core's)")
    p.add_argument("--tile-cols", type=int, default=None, help="fastsas tile columns (default: the core's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-numpy-full", action="store_true", help="skip the full-matrix NumPy baseline")
    p.add_argument("--no-faiss", action="store_true", help="skip the faiss baseline")
    args = p.parse_args(argv)

    n, d = args.n, args.d
    tr = args.tile_rows or int(_core.RETRIEVAL_TILE_ROWS)
    tc = args.tile_cols or int(_core.RETRIEVAL_TILE_COLS)
    x, y = make_data(n, d, args.seed)
    rss_inputs = peak_rss_mb()

    t_fs, res = best_of(
        lambda: fs.retrieval(x, y, threads=args.threads, tile=(tr, tc), return_ranks=True), args.repeat)
    rss_fs = peak_rss_mb()

    xn, yn = unit(x), unit(y)
    t_floor, _ = best_of(lambda: floor_tiles(xn, yn, tr, tc), args.repeat)

    rows = [("fastsas retrieval (both directions)", t_fs, f"peak RSS {rss_fs:.0f} MB (inputs {rss_inputs:.0f} MB)")]
    rows.append((f"floor: NumPy float32 tiles {tr}x{tc} (n x n x d GEMM)", t_floor, ""))

    full_bytes = 5 * n * n  # float32 S + one boolean comparison matrix
    try:
        import psutil

        available = psutil.virtual_memory().available
    except ImportError:  # pragma: no cover
        available = 0
    if args.no_numpy_full:
        rows.append(("numpy full S + ranks", None, "skipped (--no-numpy-full)"))
    elif full_bytes < 0.7 * available:
        t_np, (i2t, t2i) = best_of(lambda: numpy_full(xn, yn), max(1, min(args.repeat, 2)))
        agree = float(np.mean(i2t == res["i2t_ranks"])), float(np.mean(t2i == res["t2i_ranks"]))
        rows.append(("numpy full S + ranks (float32)", t_np,
                     f"ranks equal to fastsas: i2t {agree[0]:.5f}, t2i {agree[1]:.5f}"))
    else:
        rows.append(("numpy full S + ranks", None,
                     f"skipped: needs {full_bytes / 2**30:.1f} GiB, {available / 2**30:.1f} GiB available"))

    if args.no_faiss:
        rows.append(("faiss IndexFlatIP top-10, both directions", None, "skipped (--no-faiss)"))
    else:
        try:
            import faiss
        except ImportError:
            rows.append(("faiss IndexFlatIP top-10, both directions", None,
                         "skipped: faiss not importable (pip install faiss-cpu to compare)"))
        else:
            def run_faiss():
                ix = faiss.IndexFlatIP(d)
                ix.add(yn)
                ix.search(xn, 10)
                it = faiss.IndexFlatIP(d)
                it.add(xn)
                it.search(yn, 10)

            t_faiss, _ = best_of(run_faiss, args.repeat)
            rows.append((f"faiss {faiss.__version__} IndexFlatIP top-10, both directions", t_faiss, ""))

    threads = args.threads or fs._validate.default_threads()
    print(f"# retrieval, n = {n:,} images and texts, d = {d}, float32, {threads} threads, best of {args.repeat}")
    print(f"# fastsas: i2t R@1 {res['i2t_r1']:.4f}  t2i R@1 {res['t2i_r1']:.4f}  rsum {res['rsum']:.2f}")
    print()
    print_floor_table(rows, t_floor)
    return 0


if __name__ == "__main__":
    sys.exit(main())
