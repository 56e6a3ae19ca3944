"""fs.alignment against its NumPy floor and the straightforward NumPy way, same run.

    python benchmarks/bench_alignment.py --n 100000 --d 768
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of, machine, table  # noqa: E402
from numpy_baselines import floor_alignment, sas_family_straightforward  # noqa: E402

import fastsas as fs  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--skip-straightforward", action="store_true")
    args = p.parse_args()
    n, d = args.n, args.d
    x, y = fs.synthetic.paired_embeddings(n, d, image_only_factors=8, seed=0, dtype=np.float32)
    z = np.hstack([x, y])

    t_floor = best_of(lambda: floor_alignment(z, d), args.repeat)
    t_fast = best_of(lambda: fs.alignment(x, y), args.repeat)
    flops = n * (2 * d) ** 2  # SYRK of n x 2d: n (2d)^2 multiply-adds counted as 2 flops / 2
    rows = [
        ("NumPy floor: Z.T @ Z + 4 x eigh(d x d)", f"{t_floor:.3f}", "1.00", f"{flops / t_floor / 1e9:.0f}"),
        ("fastsas fs.alignment (every metric)", f"{t_fast:.3f}", f"{t_fast / t_floor:.2f}", f"{flops / t_fast / 1e9:.0f}"),
    ]
    if not args.skip_straightforward:
        t_naive = best_of(lambda: sas_family_straightforward(x, y), 1)
        rows.append(("NumPy straightforward SAS x2 + CKA + CORAL", f"{t_naive:.3f}",
                     f"{t_naive / t_floor:.2f}", "-"))
    print(f"fs.alignment, n={n:,}, d={d}, float32; {machine()}")
    print(table(rows, ("what", "seconds", "x floor", "GFLOP/s (SYRK-equivalent)")))
    if not args.skip_straightforward:
        print(f"\nfastsas is {t_naive / t_fast:.1f}x faster than the straightforward NumPy way "
              f"and {t_fast / t_floor:.2f}x the floor.")


if __name__ == "__main__":
    main()
