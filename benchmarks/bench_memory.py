"""Peak memory of the moments core against d (it grows as d^2 whatever n), beside the core's
own estimates.

    python benchmarks/bench_memory.py --dims 1000 2000 3000 --n 5000

Each measurement runs in a fresh process: float32 inputs (n x d each) are made first, then
the process's peak resident memory (VmHWM) is read before and after one call; the table shows
the growth in MB and per d^2. "estimate" is what the core checks against the available memory
before allocating: the Moments state plus, for an update, the chunk's packed second moments
and one 2048-row block per thread; for fs.alignment also the analysis (fastsas._core).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, table  # noqa: E402

_CHILD = """
import json, sys
import numpy as np
import fastsas as fs
from fastsas import _core
d, n, what, threads = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
rng = np.random.default_rng(0)
x = rng.standard_normal((n, d), dtype=np.float32)
y = (x + rng.standard_normal((n, d), dtype=np.float32)).astype(np.float32)
base = hwm()
if what == "update":
    fs.Moments(d, threads=threads).update(x, y)
else:
    fs.alignment(x, y, threads=threads)
w = 2 * d
blocks = min(threads, -(-n // 2048))
update = _core.moments_state_bytes(d) + (8 * w * (w + 1) / 2 if n > 2048 else 0) + \\
    blocks * 4 * w * (w + min(n, 2048))
estimate = update if what == "update" else max(update, _core.moments_state_bytes(d) + _core.analysis_bytes(d, threads, False))
print(json.dumps({"growth": hwm() - base, "estimate": estimate}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dims", type=int, nargs="+", default=[1000, 2000, 3000])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    rows = []
    for d in args.dims:
        for what in ("update", "alignment"):
            out = subprocess.run([sys.executable, "-c", _CHILD, str(d), str(args.n), what, str(args.threads)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout)
            rows.append((str(d), "Moments.update" if what == "update" else "fs.alignment",
                         f"{r['growth'] / 1e6:.0f}", f"{r['growth'] / d / d:.1f}",
                         f"{r['estimate'] / 1e6:.0f}", f"{r['estimate'] / d / d:.1f}"))
    print(f"Machine: {machine()}; n = {args.n}, float32, threads = {args.threads}\n")
    print(table(rows, ("d", "call", "peak growth MB", "bytes / d^2", "estimate MB", "estimate / d^2")))


if __name__ == "__main__":
    main()
