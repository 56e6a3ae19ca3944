"""Independent float64 NumPy reference of the neighbourhood family (docs/definitions.md,
"Neighbourhood family"), written from the definitions with full n x n matrices: similarity
and kernel matrices, neighbour masks, explicit centring matrices, explicit minimisation for
Procrustes. Slow (O(n^2) memory, O(n^4) for the U-statistic), for tests and small benchmarks.

Inputs are converted with ``np.asarray(x, dtype=np.float64)``; scalars are Python floats.
"""
from __future__ import annotations

import itertools

import numpy as np

__all__ = [
    "unit_rows", "knn", "mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn", "cknna",
    "hsic_unbiased", "hsic_biased", "hsic_u_statistic", "alignment_value", "cka_unbiased", "rbf_kernel", "cka_rbf",
    "procrustes",
]


def unit_rows(x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def knn(x, topk: int, decimals: int | None = None) -> np.ndarray:
    """(n, topk) indices: per row the topk other rows of largest cosine, equal cosines by the
    smaller index, from the full n x n cosine matrix. `decimals`: round the cosines first, so
    that duplicated rows tie exactly whatever order the matrix product summed in."""
    u = unit_rows(x)
    s = u @ u.T
    if decimals is not None:
        s = np.round(s, decimals)
    np.fill_diagonal(s, -np.inf)
    n = len(u)
    order = np.lexsort((np.broadcast_to(np.arange(n), (n, n)), -s), axis=1)
    return order[:, :topk]


def _mask(idx: np.ndarray, n: int) -> np.ndarray:
    m = np.zeros((n, n))
    m[np.arange(n)[:, None], idx] = 1.0
    return m


def mutual_knn(idx_a: np.ndarray, idx_b: np.ndarray) -> float:
    n, k = idx_a.shape
    return float(((_mask(idx_a, n) * _mask(idx_b, n)).sum(axis=1) / k).mean())


def cycle_knn(idx_a: np.ndarray, idx_b: np.ndarray) -> float:
    """mean over i of [i is among the image-side neighbours of some text-side neighbour of i]."""
    n = len(idx_a)
    back = idx_a[idx_b]  # (n, k, k): neighbours in A of the neighbours in B
    return float((back == np.arange(n)[:, None, None]).reshape(n, -1).any(axis=1).mean())


def _lcs(a, b) -> int:
    dp = np.zeros((len(a) + 1, len(b) + 1), dtype=np.int64)
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            dp[i, j] = dp[i - 1, j - 1] + 1 if a[i - 1] == b[j - 1] else max(dp[i - 1, j], dp[i, j - 1])
    return int(dp[-1, -1])


def _levenshtein(a, b) -> int:
    dp = np.zeros((len(a) + 1, len(b) + 1), dtype=np.int64)
    dp[:, 0] = np.arange(len(a) + 1)
    dp[0, :] = np.arange(len(b) + 1)
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            dp[i, j] = min(dp[i - 1, j] + 1, dp[i, j - 1] + 1, dp[i - 1, j - 1] + (a[i - 1] != b[j - 1]))
    return int(dp[-1, -1])


def lcs_knn(idx_a: np.ndarray, idx_b: np.ndarray) -> float:
    return float(np.mean([_lcs(a, b) for a, b in zip(idx_a, idx_b)]))


def edit_distance_knn(idx_a: np.ndarray, idx_b: np.ndarray) -> float:
    k = idx_a.shape[1]
    return float(1.0 - np.mean([_levenshtein(a, b) for a, b in zip(idx_a, idx_b)]) / k)


def hsic_unbiased(K, L) -> float:
    """Song et al. (2012), eq. 5, on dense matrices (their diagonals are zeroed); K and L may
    be non-symmetric: tr(K~ L~) = sum_ij K~_ij L~_ji."""
    K = np.array(K, dtype=np.float64)
    L = np.array(L, dtype=np.float64)
    n = len(K)
    np.fill_diagonal(K, 0.0)
    np.fill_diagonal(L, 0.0)
    one = np.ones(n)
    trace = np.sum(K * L.T)  # tr(K L), without the n^3 product
    value = trace + K.sum() * L.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * ((one @ K) @ (L @ one))
    return float(value / (n * (n - 3)))


def hsic_biased(K, L) -> float:
    """tr(K H L H) / (n - 1)^2 with the explicit centring matrix H."""
    K = np.asarray(K, dtype=np.float64)
    L = np.asarray(L, dtype=np.float64)
    n = len(K)
    H = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(K @ H @ L @ H) / (n - 1) ** 2)


def hsic_u_statistic(K, L) -> float:
    """The unbiased HSIC as the U-statistic it is (Song et al. 2012, Theorem 2): the mean over
    ordered 4-tuples of distinct rows (i, j, q, r) of h = (1/24) sum over the 24 orderings
    (s, t, u, v) of the tuple of K_st L_st + K_st L_uv - 2 K_st L_su. Tiny n only (n^4)."""
    K = np.asarray(K, dtype=np.float64)
    L = np.asarray(L, dtype=np.float64)
    n = len(K)
    total, count = 0.0, 0
    for tup in itertools.permutations(range(n), 4):
        h = 0.0
        for s, t, u, v in itertools.permutations(tup):
            h += K[s, t] * L[s, t] + K[s, t] * L[u, v] - 2.0 * K[s, t] * L[s, u]
        total += h / 24.0
        count += 1
    return total / count


def alignment_value(kl: float, kk: float, ll: float) -> float:
    """kl / sqrt(kk ll), 0 when kk or ll is not positive (the documented convention)."""
    if not (kk > 0 and ll > 0):
        return 0.0
    return float(kl / np.sqrt(kk * ll))


def cknna(x, y, topk: int, unbiased: bool = True, decimals: int | None = None) -> tuple[float, float, float, float]:
    """(value, kl, kk, ll): the cosine kernels masked to the neighbourhoods (the row itself
    excluded for the unbiased variant; included, as one of the topk, for the biased one), P =
    mask o K, Q = mask o L for the joint mask, and HSIC(P, Q) over sqrt(HSIC(P, P) HSIC(Q, Q)).
    The self-similarity is exactly 1."""
    ux, uy = unit_rows(x), unit_rows(y)
    K, L = ux @ ux.T, uy @ uy.T
    np.fill_diagonal(K, 1.0)
    np.fill_diagonal(L, 1.0)
    n = len(K)
    ia, ib = knn(x, topk, decimals), knn(y, topk, decimals)
    if not unbiased:
        ia = np.concatenate([np.arange(n)[:, None], ia[:, : topk - 1]], axis=1)
        ib = np.concatenate([np.arange(n)[:, None], ib[:, : topk - 1]], axis=1)
    ma, mb = _mask(ia, n), _mask(ib, n)
    hsic = hsic_unbiased if unbiased else hsic_biased
    kl = hsic(ma * mb * K, ma * mb * L)
    kk = hsic(ma * K, ma * K)
    ll = hsic(mb * L, mb * L)
    return alignment_value(kl, kk, ll), kl, kk, ll


def cka_unbiased(x, y, centre: bool = True) -> float:
    """Unbiased CKA of the linear kernels X X', Y Y' from the dense Gram matrices. The
    estimator is unchanged by a common shift of the rows; `centre` (default) removes the column
    means first, which keeps float64 digits when the rows share a large offset."""
    X = np.asarray(x, dtype=np.float64)
    Y = np.asarray(y, dtype=np.float64)
    if centre:
        X, Y = X - X.mean(axis=0), Y - Y.mean(axis=0)
    K, L = X @ X.T, Y @ Y.T
    return alignment_value(hsic_unbiased(K, L), hsic_unbiased(K, K), hsic_unbiased(L, L))


def rbf_kernel(a, sigma: float, minus_one: bool = False) -> np.ndarray:
    """exp(-|a_i - a_j|^2 / (2 sigma^2)) from explicit differences; with `minus_one` the
    kernel minus 1 through expm1 (both HSIC estimators are unchanged by subtracting one
    constant from every entry, and K - 1 keeps the digits K rounds away when sigma is large)."""
    a = np.asarray(a, dtype=np.float64)
    diff = a[:, None, :] - a[None, :, :]
    z = -(diff ** 2).sum(axis=2) / (2.0 * sigma ** 2)
    return np.expm1(z) if minus_one else np.exp(z)


def cka_rbf(x, y, sigma_x: float, sigma_y: float | None = None, unbiased: bool = True) -> float:
    """CKA of K_ij = exp(-|x_i - x_j|^2 / (2 sigma^2)) and L likewise. K itself when its typical
    (median off-diagonal) entry is below 1/2, else K - 1 (see rbf_kernel)."""
    def kernel(a, sigma):
        k = rbf_kernel(a, sigma)
        off = k[~np.eye(len(k), dtype=bool)]
        return rbf_kernel(a, sigma, minus_one=True) if np.median(off) > 0.5 else k

    K, L = kernel(x, sigma_x), kernel(y, sigma_x if sigma_y is None else sigma_y)
    hsic = hsic_unbiased if unbiased else hsic_biased
    return alignment_value(hsic(K, L), hsic(K, K), hsic(L, L))


def procrustes(x, y, rcond: float = 1e-6) -> dict[str, float]:
    """The Procrustes distance by explicit minimisation (the optimal orthogonal map from the
    SVD of Xc' Yc), the angular distances, and the whitened one from eigh-whitened data."""
    X = np.asarray(x, dtype=np.float64)
    Y = np.asarray(y, dtype=np.float64)
    n = len(X)
    Xc, Yc = X - X.mean(axis=0), Y - Y.mean(axis=0)
    u, s, vt = np.linalg.svd(Xc.T @ Yc)
    q = u @ vt
    distance = float(np.sum((Xc @ q - Yc) ** 2) / n)
    angular = float(np.arccos(np.clip(s.sum() / (np.linalg.norm(Xc) * np.linalg.norm(Yc)), 0.0, 1.0)))

    def whiten(a):
        w, v = np.linalg.eigh(a.T @ a / n)
        keep = w > rcond * w.max()
        return a @ v[:, keep] / np.sqrt(w[keep])

    Xw, Yw = whiten(Xc), whiten(Yc)
    sw = np.linalg.svd(Xw.T @ Yw / n, compute_uv=False)
    whitened = float(np.arccos(np.clip(sw.sum() / np.sqrt(Xw.shape[1] * Yw.shape[1]), 0.0, 1.0)))
    return {"procrustes": distance, "procrustes_angular": angular, "procrustes_angular_whitened": whitened}
