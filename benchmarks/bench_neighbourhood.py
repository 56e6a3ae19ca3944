"""The neighbourhood family: fastsas against its GEMM floor and the n x n-mask approach.

    python benchmarks/bench_neighbourhood.py --n 100000 --d 768 --topk 10

Rows of the first table (n rows per modality):
- fastsas neighbourhood: fs.neighbourhood on float32 input (exact neighbours of both
  modalities, then mutual/cycle/LCS/edit-distance k-NN and both CKNNA).
- floor, same tiles: NumPy float32 multiplying exactly the tiles fastsas multiplies (for each
  modality the KNN_TILE x KNN_TILE tiles on and above the block diagonal: the similarity matrix
  is symmetric), into preallocated buffers, nothing else.
- floor, two n x n x d SGEMMs: the nominal floor (every tile of both modalities). Measured as
  NumPy multiplying them all with --full-floor; by default the same-tiles time scaled by the
  ratio of the products (n^2 against the tiles' count), stated in the notes.
Peak RSS is the process's (resource.getrusage) right after the fastsas run.

Second table: the n x n-mask approach of the reference code (NumPy float32, written as the
"platonic representation" metrics.py does it: full similarity matrices, argsort, n x n masks,
dense HSIC on masked matrices with clones; LCS and edit distance in Python loops) for n
doubling while its estimated memory fits --mask-budget-gb, beside fastsas on the same rows.
Third table (with --rbf-n > 0): fs.cka_rbf against NumPy multiplying its tiles (two per tile).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of_with_result as best_of, machine, peak_rss_mb, print_floor_table  # noqa: E402

import fastsas as fs  # noqa: E402
from fastsas import _core  # noqa: E402


def make_data(n: int, d: int, seed: int, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """CLIP-like float32 unit rows: a shared cone plus per-item structure the texts partly share."""
    rng = np.random.default_rng(seed)
    centre = 0.5 * rng.standard_normal(d).astype(np.float32)
    mix = (rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32)
    x = np.empty((n, d), dtype=np.float32)
    y = np.empty((n, d), dtype=np.float32)
    for i in range(0, n, chunk):
        r = min(chunk, n - i)
        z = rng.standard_normal((r, d), dtype=np.float32)
        a = centre + z
        b = centre + 0.6 * (z @ mix) + 0.8 * rng.standard_normal((r, d), dtype=np.float32)
        x[i:i + r] = a / np.linalg.norm(a, axis=1, keepdims=True)
        y[i:i + r] = b / np.linalg.norm(b, axis=1, keepdims=True)
    return x, y


def upper_tiles(a: np.ndarray, tile: int, full: bool = False) -> None:
    """NumPy multiplying the tiles of a @ a.T (those on and above the block diagonal, or all)."""
    n = a.shape[0]
    bufs: dict[tuple[int, int], np.ndarray] = {}
    for i in range(0, n, tile):
        for j in range(0 if full else i, n, tile):
            p, q = a[i:i + tile], a[j:j + tile]
            out = bufs.get((len(p), len(q)))
            if out is None:
                out = bufs[(len(p), len(q))] = np.empty((len(p), len(q)), dtype=a.dtype)
            np.matmul(p, q.T, out=out)


def tile_products(n: int, tile: int) -> int:
    """Entries of the tiles on and above the block diagonal (each tile counted in full)."""
    sizes = [min(tile, n - i) for i in range(0, n, tile)]
    return sum(sizes[i] * sizes[j] for i in range(len(sizes)) for j in range(i, len(sizes)))


# -- the n x n-mask approach, as the reference code writes it ----------------------------------
def mask_knn(feats: np.ndarray, topk: int) -> np.ndarray:
    s = feats @ feats.T
    np.fill_diagonal(s, -1e8)
    return np.argsort(-s, axis=1)[:, :topk]


def mask_hsic_unbiased(K: np.ndarray, L: np.ndarray) -> float:
    m = K.shape[0]
    Kt, Lt = K.copy(), L.copy()
    np.fill_diagonal(Kt, 0)
    np.fill_diagonal(Lt, 0)
    value = np.sum(Kt * Lt.T) + Kt.sum() * Lt.sum() / ((m - 1) * (m - 2)) - 2 * np.sum(Kt @ Lt) / (m - 2)
    return float(value / (m * (m - 3)))


def mask_cknna(a: np.ndarray, b: np.ndarray, topk: int) -> float:
    n = a.shape[0]
    K, L = a @ a.T, b @ b.T

    def similarity(K, L):
        Kh, Lh = K.copy(), L.copy()
        np.fill_diagonal(Kh, -np.inf)
        np.fill_diagonal(Lh, -np.inf)
        ik = np.argpartition(-Kh, topk, axis=1)[:, :topk]
        il = np.argpartition(-Lh, topk, axis=1)[:, :topk]
        mk = np.zeros((n, n), dtype=np.float32)
        ml = np.zeros((n, n), dtype=np.float32)
        np.put_along_axis(mk, ik, 1.0, axis=1)
        np.put_along_axis(ml, il, 1.0, axis=1)
        mask = mk * ml
        return mask_hsic_unbiased(mask * K, mask * L)

    kl, kk, ll = similarity(K, L), similarity(K, K), similarity(L, L)
    return kl / (np.sqrt(kk * ll) + 1e-6)


def _lcs(x, y) -> int:
    dp = [[0] * (len(y) + 1) for _ in range(len(x) + 1)]
    for i in range(1, len(x) + 1):
        for j in range(1, len(y) + 1):
            dp[i][j] = dp[i - 1][j - 1] + 1 if x[i - 1] == y[j - 1] else max(dp[i - 1][j], dp[i][j - 1])
    return dp[-1][-1]


def _edit(x, y) -> int:
    prev = list(range(len(y) + 1))
    for i in range(1, len(x) + 1):
        cur = [i] + [0] * len(y)
        for j in range(1, len(y) + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x[i - 1] != y[j - 1]))
        prev = cur
    return prev[-1]


def mask_approach(a: np.ndarray, b: np.ndarray, topk: int) -> dict[str, float]:
    n = a.shape[0]
    ka, kb = mask_knn(a, topk), mask_knn(b, topk)
    rows = np.arange(n)[:, None]
    ma = np.zeros((n, n), dtype=np.float32)
    mb = np.zeros((n, n), dtype=np.float32)
    ma[rows, ka] = 1.0
    mb[rows, kb] = 1.0
    mutual = float(((ma * mb).sum(axis=1) / topk).mean())
    del ma, mb
    cycle = float((ka[kb] == np.arange(n)[:, None, None]).reshape(n, -1).any(axis=1).mean())
    la, lb = ka.tolist(), kb.tolist()
    lcs = float(np.mean([_lcs(p, q) for p, q in zip(la, lb)]))
    edit = float(1 - np.mean([_edit(p, q) for p, q in zip(la, lb)]) / topk)
    return {"mutual_knn": mutual, "cycle_knn": cycle, "lcs_knn": lcs, "edit_distance_knn": edit,
            "cknna": mask_cknna(a, b, topk)}


def mask_bytes(n: int) -> int:
    """Peak of the mask approach: about eight float32 n x n matrices alive at once in CKNNA
    (K, L, two clones, two masks, their product and a masked kernel)."""
    return 8 * 4 * n * n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="rows per modality")
    p.add_argument("--d", type=int, default=768, help="embedding dimension")
    p.add_argument("--topk", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="fastsas threads (default: all cores)")
    p.add_argument("--tile", type=int, default=None, help="fastsas tile (default: the core's KNN_TILE)")
    p.add_argument("--full-floor", action="store_true", help="also time the two full n x n x d SGEMMs")
    p.add_argument("--mask-budget-gb", type=float, default=6.0, help="memory the n x n-mask approach may use")
    p.add_argument("--mask-start", type=int, default=1000, help="first n of the mask approach (then doubled)")
    p.add_argument("--rbf-n", type=int, default=20_000, help="rows for the RBF CKA table (0: skip)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    n, d, k = args.n, args.d, args.topk
    tile = args.tile or int(_core.KNN_TILE)
    threads = args.threads or fs._validate.default_threads()
    x, y = make_data(n, d, args.seed)
    rss_inputs = peak_rss_mb()

    t_fs, res = best_of(lambda: fs.neighbourhood(x, y, k, threads=threads, tile=tile), 1)
    rss_fs = peak_rss_mb()
    t_floor, _ = best_of(lambda: (upper_tiles(x, tile), upper_tiles(y, tile)), 1)
    ratio = (n * n) / tile_products(n, tile)
    if args.full_floor:
        t_full, _ = best_of(lambda: (upper_tiles(x, tile, True), upper_tiles(y, tile, True)), 1)
        full_note = "measured"
    else:
        t_full, full_note = t_floor * ratio, f"same-tiles time x {ratio:.3f} (products ratio), not measured"

    print(f"# Neighbourhood family, n = {n:,}, d = {d}, topk = {k}, float32, {threads} threads, tile {tile}")
    print(f"# {machine()}")
    print()
    metrics = ", ".join(f"{key} {value:.4f}" for key, value in res.to_dict().items() if key not in ("n", "topk"))
    rows = [
        ("fastsas neighbourhood (all metrics)", t_fs,
         f"peak RSS {rss_fs:.0f} MB (inputs {rss_inputs:.0f} MB); {metrics}"),
        (f"floor: NumPy float32, the same {tile}x{tile} tiles (upper triangle, both modalities)", t_floor, ""),
        ("floor: two n x n x d SGEMMs", t_full, full_note),
    ]
    print_floor_table(rows, t_floor)
    print()
    print(f"fastsas x nominal floor (two n x n x d SGEMMs): {t_fs / t_full:.2f}")
    print()

    # -- the n x n-mask approach ---------------------------------------------------------------
    print(f"# n x n-mask approach (NumPy float32, as the reference code) vs fastsas, topk = {k}")
    print()
    print("| n | mask approach s | fastsas s | ratio | mutual_knn (mask / fastsas) | cknna (mask / fastsas) |")
    print("|---:|---:|---:|---:|---|---|")
    m = args.mask_start
    while m <= n and mask_bytes(m) <= args.mask_budget_gb * 2 ** 30:
        a, b = x[:m], y[:m]
        t_mask, want = best_of(lambda: mask_approach(a, b, k), 1)
        t_ours, got = best_of(lambda: fs.neighbourhood(a, b, k, threads=threads), 3)
        print(f"| {m:,} | {t_mask:.2f} | {t_ours:.3f} | {t_mask / t_ours:.0f}x | "
              f"{want['mutual_knn']:.4f} / {got.mutual_knn:.4f} | {want['cknna']:.4f} / {got.cknna:.4f} |")
        sys.stdout.flush()
        m *= 2
    print(f"\n(next n = {m:,} would need about {mask_bytes(m) / 2 ** 30:.1f} GB: over --mask-budget-gb)")

    if args.rbf_n > 0:
        r = min(args.rbf_n, n)
        a, b = x[:r], y[:r]
        rt = int(_core.RBF_CKA_TILE)
        print()
        print(f"# RBF CKA, n = {r:,}, d = {d}, sigma = 1, float32, {threads} threads, tile {rt}")
        print()
        t_rbf, cka = best_of(lambda: fs.cka_rbf(a, b, 1.0, threads=threads, return_terms=True), 1)
        t_rfloor, _ = best_of(lambda: (upper_tiles(a, rt), upper_tiles(b, rt)), 1)
        print_floor_table([
            ("fastsas cka_rbf (biased and unbiased)", t_rbf,
             f"unbiased {cka.unbiased.value:.6f}, biased {cka.biased.value:.6f}"),
            (f"floor: NumPy float32, the same {rt}x{rt} tiles (two per tile)", t_rfloor, ""),
        ], t_rfloor)
    return 0


if __name__ == "__main__":
    sys.exit(main())
