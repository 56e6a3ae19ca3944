"""Retrieval of this build against another build of the C++ core (e.g. the previous commit):
time and bit-identity of the ranks, on the same CLIP-like data, alternating the two builds.

    git archive <commit> | tar -x -C /tmp/other && \\
        cmake -S /tmp/other -B /tmp/other/build -G Ninja -DCMAKE_BUILD_TYPE=Release \\
              -DPython_EXECUTABLE=$(which python) && cmake --build /tmp/other/build
    python benchmarks/bench_compare_builds.py --other /tmp/other/build --n 30000 --d 512

Each (build, precision) runs in its own process (the two extensions are both `_core`),
best of 2 calls per process and best of --rounds processes.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

CHILD = r"""
import sys, time, numpy as np
other, precision, data, out = sys.argv[1:5]
if other:
    sys.path.insert(0, other)
    import _core
else:
    from fastsas import _core
d = np.load(data)
best = float("inf")
for _ in range(2):
    t = time.perf_counter()
    r = _core.retrieval(d["x"], d["y"], threads=2, precision=precision)
    best = min(best, time.perf_counter() - t)
np.savez(out, i=r["image_ranks"], t=r["text_ranks"])
print(best)
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--other", required=True, help="directory holding the other build's _core extension")
    p.add_argument("--n", type=int, default=30_000)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--precisions", default="int8,bfloat16,float32")
    args = p.parse_args(argv)
    from bench_retrieval import make_clip_like

    import scipy_openblas32

    env = dict(os.environ, LD_LIBRARY_PATH=scipy_openblas32.get_lib_dir())
    precisions = args.precisions.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data.npz")
        x, y = make_clip_like(args.n, args.d, 0)
        np.savez(data, x=x, y=y)
        times: dict = {}
        for _ in range(args.rounds):
            for precision in precisions:
                for which, other in (("other", args.other), ("this", "")):
                    out = os.path.join(tmp, f"{which}_{precision}.npz")
                    run = subprocess.run([sys.executable, "-c", CHILD, other, precision, data, out], env=env,
                                         capture_output=True, text=True, check=True)
                    times.setdefault((which, precision), []).append(float(run.stdout.split()[-1]))
        print(f"# {machine()}")
        print(f"# retrieval, n = {args.n:,}, d = {args.d}, CLIP-like float32, 2 threads, best of {args.rounds} x 2")
        print("| precision | other build s | this build s | this / other | ranks |")
        print("|---|---:|---:|---:|---|")
        for precision in precisions:
            a = np.load(os.path.join(tmp, f"other_{precision}.npz"))
            b = np.load(os.path.join(tmp, f"this_{precision}.npz"))
            same = np.array_equal(a["i"], b["i"]) and np.array_equal(a["t"], b["t"])
            t_other, t_this = min(times[("other", precision)]), min(times[("this", precision)])
            print(f"| {precision} | {t_other:.3f} | {t_this:.3f} | {t_this / t_other:.3f} | "
                  f"{'bit-identical' if same else 'DIFFER'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
