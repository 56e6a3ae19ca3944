"""Exercises every C++ code path once, for the sanitizer build (.ci/sanitize)."""
import pickle

import numpy as np

import fastsas as fs

for dtype in (np.float32, np.float64):
    x, y = fs.synthetic.paired_embeddings(5000, 40, image_only_factors=3, seed=1, dtype=dtype)
    fs.alignment(x, y, threads=2)
    fs.alignment(np.asfortranarray(x), y[::-1].copy()[::-1], threads=1)
    m = fs.Moments(40, threads=2)
    for i in range(0, 5000, 999):
        m.update(x[i:i + 999], y[i:i + 999])
    other = fs.Moments(40).update(x[:7], y[:7])
    m.merge(other)
    pickle.loads(pickle.dumps(m)).alignment(topq=1.0)
    m.sas_sweep()
    fs.sas(x[:3], y[:3])
    bad = x.copy()
    bad[4321, 0] = np.nan
    try:
        fs.alignment(bad, y)
    except ValueError:
        pass
    else:
        raise SystemExit("a NaN row was not refused")
    for name in ("retrieval", "mmd"):
        if hasattr(fs, name):
            if name == "retrieval":
                fs.retrieval(x[:700], y[:700], threads=2)
                # Every tile precision the CPU has, partial panels, coarse ids, integer rows
                # (exact ties) and the sharded entry points with exact thresholds.
                ids = np.arange(701) % 5
                for precision in ("float32", "bfloat16", "int8", "auto"):
                    if precision in ("float32", "auto") or fs._core.screen_supported(precision):
                        fs.retrieval(x[:701], y[:699], ids, ids[:699], threads=2, precision=precision,
                                     tile=(13, 70))
                        fs.retrieval(np.sign(x[:333]).astype(np.int8), np.sign(y[:333]).astype(np.int8),
                                     threads=2, precision=precision)
                codes = np.arange(400, dtype=np.int32)
                q = np.rint(4 * x[:400]).astype(dtype)
                q[:, 0] += 1
                thr, exact = fs._core.retrieval_thresholds(q, q[::-1].copy(), codes, codes[::-1].copy(), "x", "y",
                                                           2, exact=True)
                fs._core.retrieval_counts(q, q, codes, codes, thr, thr, threads=2, image_exact=exact,
                                          text_exact=exact)
                for precision in ("bfloat16", "int8"):
                    if fs._core.screen_supported(precision):
                        fs._core.retrieval_screen_check(x[:37], y[:45], precision)
            else:
                fs.mmd(x[:300], y[:500])
print("sanitizer workload: clean")
