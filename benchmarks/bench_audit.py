"""The audit of a large on-disk archive against what it must at least do, same run: the
plain streamed fs.alignment pass plus the retrieval the audit includes.

    python benchmarks/bench_audit.py --n 1000000 --d 768 --groups 20
(reuses or writes the .npy archive of bench_stream.py; retrieval scope "within": exact
ranks inside each subgroup. Exact whole-gallery retrieval at 1M x 1M x 768 is 1.5e15
flop, about three hours on 2 cores, so it is not part of this figure.)
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, peak_rss_mb, table  # noqa: E402
from bench_stream import write_archive  # noqa: E402

import fastsas as fs  # noqa: E402
from fastsas.io import NpyPairSource  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--groups", type=int, default=20)
    p.add_argument("--chunk-rows", type=int, default=32768)
    p.add_argument("--dir", type=Path, default=Path("/tmp/fastsas-bench"))
    args = p.parse_args()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        images, texts = pool.apply(write_archive, (args.dir, args.n, args.d))
    source = NpyPairSource(images, texts)
    groups = np.random.default_rng(0).integers(0, args.groups, args.n)

    t = time.perf_counter()
    fs.Moments.from_chunks(source.iter_chunks(args.chunk_rows)).alignment()
    t_align = time.perf_counter() - t

    x, y = source.arrays()
    t = time.perf_counter()
    for g in range(args.groups):
        rows = np.flatnonzero(groups == g)
        fs.retrieval(np.asarray(x[rows]), np.asarray(y[rows]))
    t_retrieval = time.perf_counter() - t
    del x, y

    t = time.perf_counter()
    result = fs.audit(source, groups=groups, retrieval="within", chunk_rows=args.chunk_rows)
    t_audit = time.perf_counter() - t
    floor = t_align + t_retrieval

    print(f"audit of n={args.n:,} pairs, d={args.d}, {args.groups} subgroups, from .npy on disk; {machine()}")
    print(table([
        ("streamed fs.alignment pass", f"{t_align:.1f}", "-"),
        (f"retrieval within each of {args.groups} subgroups", f"{t_retrieval:.1f}", "-"),
        ("sum: what the audit must at least do", f"{floor:.1f}", "1.00"),
        ("fs.audit (moments of archive, subgroup cells, 20 jackknife blocks; retrieval within)",
         f"{t_audit:.1f}", f"{t_audit / floor:.2f}"),
    ], ("what", "seconds", "x (alignment + retrieval)")))
    print(f"\npeak RSS {peak_rss_mb():.0f} MB (includes the memory-mapped pages of the retrieval runs); "
          f"sas_imbalance {result.alignment['sas_imbalance']:.4f} "
          f"[{result.uncertainty['sas_imbalance']['ci_low']:.4f}, {result.uncertainty['sas_imbalance']['ci_high']:.4f}], "
          f"p = {result.uncertainty['imbalance_test']['p_value']:.2e}")


if __name__ == "__main__":
    main()
