"""What the audit's findings cost, same run: the suspected-mismatch test (the unit-row moments
in the pass, the statistic's pass, the mixture fit), the chance level and the jackknife of the
companion score, each against its floor (this machine's GEMM rate, measured here) and the
mismatch statistic against a plain float64 NumPy computation of the same formulas.

    python benchmarks/bench_findings.py --n 200000 --d 256
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of, machine, table  # noqa: E402

import fastsas as fs  # noqa: E402


def numpy_statistic(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The per-pair mismatch statistic in float64 NumPy (rows as units): the baseline."""
    xh = x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    yh = y / np.linalg.norm(y.astype(np.float64), axis=1, keepdims=True)
    n = len(x)
    s = np.einsum("ij,ij->i", xh, yh)
    out = []
    for q, g in ((xh, yh), (yh, xh)):
        m = g.mean(axis=0)
        c = np.cov(g.T, bias=True)
        mean_all = q @ m
        var_all = np.einsum("ij,jk,ik->i", q, c, q)
        mu = (n * mean_all - s) / (n - 1)
        var = (n * (var_all + mean_all ** 2) - s * s) / (n - 1) - mu * mu
        out.append((s - mu) / np.sqrt(var))
    return (out[0] + out[1]) / np.sqrt(2.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--d", type=int, default=256)
    args = p.parse_args()
    n, d = args.n, args.d
    x, y = fs.synthetic.paired_embeddings(n, d, shared_factors=16, image_only_factors=4, seed=0)

    a = np.ones((8192, d), dtype=np.float32)
    b = np.ones((d, d), dtype=np.float32)
    gemm_s = best_of(lambda: a @ b, 5)
    rate = 2.0 * 8192 * d * d / gemm_s  # float32 GEMM flop/s of this machine, now
    floor_stat = 2 * (2.0 * n * d * d) / rate  # two (n x d) @ (d x d) products: the statistic's pass
    floor_unit = 2.0 * n * (2 * d) ** 2 / 2 / rate  # one joint SYRK of the unit rows in the pass

    base = dict(retrieval="none", chance_repeats=0, mismatch_fdr=None)
    t_base = best_of(lambda: fs.audit(x, y, **base), 1)
    t_mis, r = 0.0, None
    t = time.perf_counter()
    r = fs.audit(x, y, retrieval="none", chance_repeats=0)
    t_mis = time.perf_counter() - t
    t = time.perf_counter()
    fs.audit(x, y, retrieval="none", chance_repeats=3, mismatch_fdr=None)
    t_chance = time.perf_counter() - t
    t_align = best_of(lambda: fs.alignment(x, y), 1)
    t_numpy = best_of(lambda: numpy_statistic(x, y), 1)

    print(f"audit findings of n={n:,} pairs, d={d} (in memory, float32); {machine()}; "
          f"float32 GEMM {rate / 1e9:.0f} GFLOP/s measured here")
    print(table([
        ("fs.audit, no mismatch test, no chance level (moments, jackknife, conditioning)", f"{t_base:.2f}", "-"),
        ("+ mismatch test (unit-row moments in the pass, the statistic's pass, the fit)",
         f"{t_mis - t_base:.2f}", f"floor {floor_unit + floor_stat:.2f} (GEMM work)"),
        ("   NumPy float64, the statistic alone (no test)", f"{t_numpy:.2f}", "-"),
        ("+ chance level, 3 re-pairings", f"{t_chance - t_base:.2f}", f"floor {3 * t_align:.2f} (3 fs.alignment passes)"),
        ("fs.alignment (one pass)", f"{t_align:.2f}", "-"),
    ], ("what", "seconds", "against")))
    test = r.mismatch_test
    print(f"\nmismatch test: {test['flagged']} flagged of {test['units_tested']:,}, power {test['power']:.3f}, "
          f"fit on {test['null_fit']['fit_points']:,} units")


if __name__ == "__main__":
    main()
