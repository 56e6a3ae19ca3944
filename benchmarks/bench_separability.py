"""Class separability at scale: the moments part and the k-NN part, beside NumPy /
scikit-learn in the same run.

    python benchmarks/bench_separability.py --n 1000000 --d 768 --classes 20 --knn-n 20000
    python benchmarks/bench_separability.py --n 1000000 --only-knn --fastsas-knn-n 100000  # firmer projection
    python benchmarks/bench_separability.py --n 1000000 --fastsas-knn-n 1000000 --check-queries 1024  # the 1M k-NN
    python benchmarks/bench_separability.py --n 100000 --only-knn --precisions-n 100000  # every tile precision

Rows:
- moments part (fastsas): the two streaming passes of fs.separability's moment measures at
  n rows (ClassMoments: per-class shifted sums and per-block scatter in float64; then the
  held-out-block LDA predictions, the O(n d C) cosine silhouette and the PCA projection),
  plus Fisher ratio and pairwise separations. Floor: the float64 scatter GEMM, 2 n d^2 flop
  (this machine: about 50-60 GFLOP/s DGEMM on 2 cores), so ~20 s at 1M x 768.
- moments part (NumPy): float64 per-class means and the pooled within-class scatter by a
  class loop, then the Fisher ratio (what a user would write), at --numpy-n rows.
- LDA (scikit-learn): LinearDiscriminantAnalysis(solver="lsqr", shrinkage=0.01).fit at
  --numpy-n rows (one fit; fastsas fits --blocks held-out models from one state).
- cosine silhouette (scikit-learn): silhouette_score(metric="cosine") at --sklearn-sil-n
  rows (an n x n distance matrix, chunked), against fastsas's O(n d C) identity on the same rows.
- k-NN part (fastsas): fs.knn (exact top-k by cosine, tiles of one GEMM) + the vote, at
  --knn-n rows; projected to n rows by (n / knn_n)^2 (the work is n^2 d).
- k-NN (scikit-learn): KNeighborsClassifier(metric="cosine", algorithm="brute") kneighbors of
  every row at --knn-n rows.
- --check-queries: the lists of that many random rows of the largest fs.knn run against a
  float64 NumPy brute force over all rows (independent of the engine's tiles and bands).
- --precisions-n: the k-NN engine in every tile precision the CPU has, and "auto" with the
  re-checks it estimated on its sample, on the first rows; the lists must be identical.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, peak_rss_mb, table  # noqa: E402

import fastsas as fs  # noqa: E402
from fastsas.separability import ClassMoments, fisher_ratio, pairwise_separations  # noqa: E402
from fastsas.separability.measures import RowPass, knn_accuracy  # noqa: E402


def make_data(n: int, d: int, classes: int, seed: int, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """float32 rows: class centres plus isotropic noise (separation about 1 noise sd)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, d)).astype(np.float32) / np.sqrt(d) * 8.0
    codes = rng.integers(0, classes, n)
    x = np.empty((n, d), dtype=np.float32)
    for i in range(0, n, chunk):
        r = min(chunk, n - i)
        x[i:i + r] = centres[codes[i:i + r]] + rng.standard_normal((r, d), dtype=np.float32) / np.sqrt(d) * 4.0
    return x, codes


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def moments_part(x, codes, classes, blocks, chunk):
    state = ClassMoments.from_chunks(((x[s:s + chunk], codes[s:s + chunk]) for s in range(0, x.shape[0], chunk)),
                                     x.shape[1], classes, blocks)
    rows = RowPass(state).run((x[s:s + chunk], codes[s:s + chunk]) for s in range(0, x.shape[0], chunk))
    predicted, silhouettes, _ = rows.result()
    return fisher_ratio(state), pairwise_separations(state), float(np.mean(predicted == codes)), float(silhouettes.mean())


def numpy_fisher(x, codes, classes, alpha=1e-2):
    x = x.astype(np.float64)
    d = x.shape[1]
    mu = x.mean(axis=0)
    sw = np.zeros((d, d))
    sb = np.zeros((d, d))
    for c in range(classes):
        xc = x[codes == c]
        mc = xc.mean(axis=0)
        centred = xc - mc
        sw += centred.T @ centred
        sb += xc.shape[0] * np.outer(mc - mu, mc - mu)
    sw, sb = sw / x.shape[0], sb / x.shape[0]
    reg = (1 - alpha) * sw + alpha * np.trace(sw) / d * np.eye(d)
    return float(np.trace(np.linalg.solve(reg, sb)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument("--chunk", type=int, default=65536)
    p.add_argument("--numpy-n", type=int, default=200_000, help="rows of the NumPy / sklearn LDA baselines")
    p.add_argument("--sklearn-sil-n", type=int, default=20_000, help="rows of sklearn's silhouette_score")
    p.add_argument("--knn-n", type=int, default=20_000, help="rows of the timed k-NN part (both engines)")
    p.add_argument("--fastsas-knn-n", type=int, default=None,
                   help="rows of the fastsas k-NN part (default --knn-n; larger makes the projection firmer)")
    p.add_argument("--precision", default="float32", help="tile precision of fs.knn (float32, auto, int8, bfloat16)")
    p.add_argument("--only-knn", action="store_true", help="time the k-NN parts only")
    p.add_argument("--precisions-n", type=int, default=0,
                   help="also time fs.knn in every tile precision (and auto, with what it measured) at this many rows")
    p.add_argument("--topk", type=int, default=10)
    p.add_argument("--check-queries", type=int, default=0,
                   help="compare this many random rows of the largest fs.knn run with a float64 NumPy brute force")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    print(f"machine: {machine()}")
    t_gen, (x, codes) = timed(lambda: make_data(a.n, a.d, a.classes, a.seed))
    print(f"data: {a.n:,} x {a.d} float32, {a.classes} classes (generated in {t_gen:.1f} s)")
    rows = []
    if not a.only_knn:
        rows += moments_rows(a, x, codes)
    rows += knn_rows(a, x, codes)
    if a.precisions_n:
        rows += precision_rows(x[:min(a.precisions_n, a.n)], a.topk)
    print(table(rows, ("step", "n", "seconds", "notes")))
    print(f"peak RSS: {peak_rss_mb():.0f} MB")


def moments_rows(a, x, codes) -> list:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.metrics import silhouette_score
    rows = []
    t_mom, (fisher, _, lda_acc, sil) = timed(lambda: moments_part(x, codes, a.classes, a.blocks, a.chunk))
    flops = 2.0 * a.n * a.d * a.d
    rows.append(("moments part (fastsas)", f"{a.n:,}", f"{t_mom:.2f}",
                 f"scatter {flops / t_mom / 1e9:.0f} GFLOP/s; Fisher {fisher:.4f}, LDA acc {lda_acc:.4f}, "
                 f"cos silhouette {sil:.4f}"))
    m = min(a.numpy_n, a.n)
    t_np, fisher_np = timed(lambda: numpy_fisher(x[:m], codes[:m], a.classes))
    t_fs_m, (fisher_m, *_rest) = timed(lambda: moments_part(x[:m], codes[:m], a.classes, a.blocks, a.chunk))
    rows.append(("moments part (fastsas)", f"{m:,}", f"{t_fs_m:.2f}", f"Fisher {fisher_m:.6f}"))
    rows.append(("Fisher ratio (NumPy float64 class loop)", f"{m:,}", f"{t_np:.2f}",
                 f"Fisher {fisher_np:.6f} (Fisher only: no LDA, silhouette, PCA)"))
    t_lda, _ = timed(lambda: LinearDiscriminantAnalysis(solver="lsqr", shrinkage=1e-2).fit(x[:m], codes[:m]))
    rows.append(("LDA fit (scikit-learn lsqr, one fit)", f"{m:,}", f"{t_lda:.2f}", "no held-out prediction"))
    s = min(a.sklearn_sil_n, a.n)
    t_sil_sk, sil_sk = timed(lambda: silhouette_score(x[:s].astype(np.float64), codes[:s], metric="cosine"))
    t_sil_fs, r_s = timed(lambda: fs.separability(x[:s], codes[:s], ks=(1,), probe=False, euclidean=False))
    rows.append(("cosine silhouette (scikit-learn)", f"{s:,}", f"{t_sil_sk:.2f}", f"{sil_sk:.6f}"))
    rows.append(("fs.separability, no probe/Euclidean (incl. 1-NN)", f"{s:,}", f"{t_sil_fs:.2f}",
                 f"cos silhouette {r_s['silhouette']['cosine']:.6f}"))
    return rows


def check_against_numpy(x, nb, queries: int, seed: int, chunk: int = 65536, group: int = 128) -> tuple[int, float]:
    """Exact top-k of `queries` random rows by a float64 brute force over all rows (rows
    normalised in float64 and stored in float32, as fs.knn stores them; self excluded; ties
    by the lower index), against fs.knn's lists: how many lists are identical, and the
    largest similarity difference."""
    n, k = x.shape[0], nb.index.shape[1]
    picked = np.sort(np.random.default_rng(seed).choice(n, size=min(queries, n), replace=False))
    stored = lambda rows: (rows / np.linalg.norm(rows.astype(np.float64), axis=1, keepdims=True)).astype(np.float32)
    same, worst = 0, 0.0
    for g in range(0, picked.size, group):
        rows = picked[g:g + group]
        q = stored(x[rows]).astype(np.float64)
        sims = np.empty((rows.size, n))
        for s in range(0, n, chunk):
            sims[:, s:s + chunk] = q @ stored(x[s:s + chunk]).astype(np.float64).T
        sims[np.arange(rows.size), rows] = -np.inf
        for r, row in enumerate(sims):
            # Every row tied with the k-th largest value is a candidate; then similarity
            # descending, index ascending (lexsort's last key is the primary one).
            cand = np.nonzero(row >= np.partition(row, n - k)[n - k])[0]
            top = cand[np.lexsort((cand, -row[cand]))][:k]
            listed = nb.index[rows[r]]
            same += bool(np.array_equal(top, listed))
            worst = max(worst, float(np.max(np.abs(row[listed] - nb.similarity[rows[r]]))))
    return same, worst


def precision_rows(x, topk: int) -> list:
    """fs.knn's engine in each tile precision this CPU has, and "auto" with the re-checks per
    row it estimated on its sample beside those each run made."""
    from fastsas import _core
    rows, lists = [], {}
    wanted = ["auto", "float32"] + [p for p in ("bfloat16", "int8") if _core.screen_supported(p)]
    for p in wanted:
        t, r = timed(lambda: _core.knn(x, topk, 0, os.cpu_count() or 1, "x", p))
        lists[p] = r["index"]
        note = f"{r['rechecked'] / x.shape[0]:.1f} re-checks per row, band {r['band']:.2e}"
        if "choice" in r:
            est = r["choice"]["rechecks"]
            note += (f"; took {r['precision']}: estimated re-checks per row int8 {est['int8']:.1f}, bfloat16 "
                     f"{est['bfloat16']:.1f}, float32 {est['gemm']:.1f} ({r['choice']['queries']} sampled queries)")
        rows.append((f"fs.knn engine, precision {p}", f"{x.shape[0]:,}", f"{t:.2f}", note))
    same = all(np.array_equal(v, lists["float32"]) for v in lists.values())
    rows.append(("lists identical across precisions", f"{x.shape[0]:,}", "-", str(same)))
    return rows


def knn_rows(a, x, codes) -> list:
    from sklearn.neighbors import KNeighborsClassifier
    rows = []
    for k in sorted({min(a.knn_n, a.n), min(a.fastsas_knn_n or a.knn_n, a.n)}):
        xk, ck = x[:k], codes[:k]
        t_knn, nb = timed(lambda: fs.knn(xk, topk=a.topk, precision=a.precision))
        acc = knn_accuracy(nb.index, ck, (1, 5, a.topk), a.classes)
        projected = t_knn * (a.n / k) ** 2
        rows.append((f"k-NN part (fastsas fs.knn {nb.precision} + vote)", f"{k:,}", f"{t_knn:.2f}",
                     f"{2.0 * k * k * a.d / t_knn / 1e9:.0f} GFLOP/s nominal; projected to {a.n:,}: "
                     f"{projected / 3600:.2f} h; acc@{a.topk} {np.mean(acc[a.topk] == ck):.4f}"))
    if a.check_queries:
        t_check, (same, worst) = timed(lambda: check_against_numpy(xk, nb, a.check_queries, a.seed))
        rows.append(("k-NN lists vs float64 NumPy brute force", f"{a.check_queries:,} queries", f"{t_check:.2f}",
                     f"identical lists {same}/{a.check_queries}; max |similarity - float64| {worst:.1e}"))
    k = min(a.knn_n, a.n)
    xk, ck = x[:k], codes[:k]
    clf = KNeighborsClassifier(n_neighbors=a.topk + 1, metric="cosine", algorithm="brute").fit(xk, ck)
    t_sk, _ = timed(lambda: clf.kneighbors(xk))
    rows.append(("k-NN (scikit-learn brute cosine kneighbors)", f"{k:,}", f"{t_sk:.2f}",
                 f"projected to {a.n:,}: {t_sk * (a.n / k) ** 2 / 3600:.2f} h"))
    return rows


if __name__ == "__main__":
    main()
