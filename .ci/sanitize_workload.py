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
                    if fs._core.screen_supported(precision=precision):
                        fs.retrieval(x[:701], y[:699], ids, ids[:699], threads=2, precision=precision,
                                     tile=(13, 70))
                        fs.retrieval(np.sign(x[:333]).astype(np.int8), np.sign(y[:333]).astype(np.int8),
                                     threads=2, precision=precision)
                codes = np.arange(400, dtype=np.int32)
                q = np.rint(4 * x[:400]).astype(dtype)
                q[:, 0] += 1
                thr, exact = fs._core.retrieval_thresholds(q, q[::-1].copy(), query_codes=codes,
                                                           candidate_codes=codes[::-1].copy(), threads=2, exact=True)
                for precision in ("float32", "bfloat16", "int8"):
                    if fs._core.screen_supported(precision=precision):
                        fs._core.retrieval_counts(q, q, image_codes=codes, text_codes=codes, image_thresholds=thr,
                                                  text_thresholds=thr, threads=2, precision=precision,
                                                  image_exact=exact, text_exact=exact)
                for precision in ("bfloat16", "int8"):
                    if fs._core.screen_supported(precision=precision):
                        fs._core.retrieval_screen_check(x[:37], y[:45], precision=precision)
            else:
                fs.mmd(x[:300], y[:500])
    # The neighbourhood family: neighbours with ties and odd tiles, their metrics, RBF CKA.
    dup = x[:900].copy()
    dup[::7] = dup[1::7][: len(dup[::7])]
    for threads, tile in ((1, 1000), (2, 97)):
        r = fs.neighbourhood(dup, y[:900], 7, threads=threads, tile=tile, return_neighbours=True)
        fs.neighbourhood_scores(r.image_neighbours, r.text_neighbours, topk=3)
    fs.knn(x[:50], 49, tile=1)
    # Separability: the per-class Euclidean distance sums on odd tiles and threads.
    classes = (np.arange(333) % 4).astype(np.int32)
    for threads, tile in ((1, 0), (2, 7)):
        fs._core.class_distance_sums(x[:333], classes, 4, tile=tile, threads=threads)
    fs.cka_rbf(x[:333], y[:333], sigma=(0.7, 3.0), threads=2, tile=64, return_terms=True)
    fs.procrustes(x, y, "angular_whitened")
# Extreme magnitudes (rescaled blocks and analysis), rank-deficient SVCCA, every MMD tier.
x, y = (a.astype(np.float64) for a in fs.synthetic.paired_embeddings(3000, 24, seed=2))
for dtype, scale in ((np.float32, 1e20), (np.float32, 1e-23), (np.float64, 1e150), (np.float64, 1e-140)):
    fs.alignment((x * scale).astype(dtype), (y * scale).astype(dtype), threads=2)
    fs.sas((y * scale).astype(dtype), (x * scale).astype(dtype), threads=2)
x32 = x.astype(np.float32)
x32[100] = 1e38
fs.alignment(x32, y.astype(np.float32), threads=2)
shared = np.repeat(y[:3].astype(np.float64), 4, axis=0)
fs.svcca(x[:12].astype(np.float64), shared)
for dtype in (np.float32, np.float64):
    for sigma in (1e-300, 1e-4, 0.05, 10.0, 1e200):
        fs.mmd(x[:300].astype(dtype), y[:200].astype(dtype), sigma=sigma, tile=64, threads=2)
# A stop: Ctrl-C during a long call joins the workers and raises KeyboardInterrupt.
import os, signal, threading
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, however CI started us
threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
try:
    big = np.random.default_rng(0).standard_normal((6000, 64), dtype=np.float32)
    for _ in range(1000):
        fs.retrieval(big, big, threads=2)
except KeyboardInterrupt:
    pass
else:
    raise SystemExit("Ctrl-C was not acted on")
# A memory refusal before allocating.
fs._core.set_memory_limit(2**20)
try:
    fs.Moments(1000)
except MemoryError:
    pass
else:
    raise SystemExit("a state over the memory limit was allocated")
fs._core.set_memory_limit(0)
print("sanitizer workload: clean")
