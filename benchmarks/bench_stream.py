"""Streaming alignment of a large .npy pair on disk: time, peak RSS, and the floor
scaled from a smaller in-memory run.

    python benchmarks/bench_stream.py --n 1000000 --d 768 --dir /tmp/fastsas-bench
(writes two float32 .npy files of n x d, 3 GB each at the default size, once)
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of, machine, peak_rss_mb, table  # noqa: E402
from numpy_baselines import floor_alignment  # noqa: E402

import fastsas as fs  # noqa: E402
from fastsas.io import iter_npy_pairs  # noqa: E402


def write_archive(directory: Path, n: int, d: int, chunk: int = 50_000) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / f"images_{n}x{d}.npy", directory / f"texts_{n}x{d}.npy"
    if all(p.exists() for p in paths):
        return paths
    outs = [np.lib.format.open_memmap(p, mode="w+", dtype=np.float32, shape=(n, d)) for p in paths]
    for i, start in enumerate(range(0, n, chunk)):
        rows = min(chunk, n - start)
        x, y = fs.synthetic.paired_embeddings(rows, d, image_only_factors=8, seed=i, dtype=np.float32)
        outs[0][start:start + rows], outs[1][start:start + rows] = x, y
    for o in outs:
        o.flush()
    del outs
    return paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--floor-n", type=int, default=100_000, help="rows of the in-memory floor run")
    p.add_argument("--chunk-rows", type=int, default=32768)
    p.add_argument("--dir", type=Path, default=Path("/tmp/fastsas-bench"))
    args = p.parse_args()
    n, d = args.n, args.d
    # Written in a child process: a memory map being filled counts every page in the
    # writer's peak RSS, which must not be charged to the streaming read measured here.
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        images, texts = pool.apply(write_archive, (args.dir, n, d))
    size_gb = (images.stat().st_size + texts.stat().st_size) / 1e9

    rss_before = peak_rss_mb()
    t = time.perf_counter()
    m = fs.Moments.from_chunks(iter_npy_pairs(images, texts, args.chunk_rows))
    result = m.alignment()
    t_stream = time.perf_counter() - t
    rss_stream = peak_rss_mb()

    # The floor: NumPy's SYRK + eigh on an in-memory slice, scaled linearly in n for the
    # SYRK part (the eigh part does not grow with n).
    xs = np.load(images, mmap_mode="r")[: args.floor_n]
    ys = np.load(texts, mmap_mode="r")[: args.floor_n]
    z = np.hstack([xs, ys])
    t_syrk = best_of(lambda: z.T @ z, 2)
    t_floor_small = best_of(lambda: floor_alignment(z, d), 2)
    t_eigh = max(t_floor_small - t_syrk, 0.0)
    t_floor = t_syrk * n / args.floor_n + t_eigh
    del z, xs, ys

    print(f"streamed alignment, n={n:,}, d={d}, float32, {size_gb:.1f} GB on disk; {machine()}")
    print(table([
        ("NumPy floor scaled to n (SYRK x n/floor_n + eigh)", f"{t_floor:.2f}", "1.00", "-"),
        ("fastsas Moments over .npy chunks + alignment()", f"{t_stream:.2f}", f"{t_stream / t_floor:.2f}",
         f"{rss_stream:.0f}"),
    ], ("what", "seconds", "x floor", "peak RSS MB")))
    print(f"\n(peak RSS before streaming: {rss_before:.0f} MB; sas_i2t={result['sas_i2t']:.4f}, "
          f"sas_t2i={result['sas_t2i']:.4f}, n={result['n']:,})")


if __name__ == "__main__":
    main()
