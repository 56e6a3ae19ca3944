"""Independent float64 NumPy reference implementation of the fastsas metrics.

Every function here is written straight from ``docs/definitions.md`` (the single source of
truth), deliberately *without* the moment identities the fast implementation uses:
full n x n matrices are built wherever the definition has them (pairwise cosines,
RBF kernels, the retrieval similarity matrix), covariances are computed from centred
data, and decompositions come from ``numpy.linalg`` (``eigh``, ``svd``, ``qr``).
It is slow (O(n^2) memory for the pairwise family) and is meant for tests and
small benchmarks only.

All inputs are converted with ``np.asarray(x, dtype=np.float64)``; scalars are
returned as Python floats. Notation: ``X`` (n x d) images, ``Y`` (n x d) texts, row i
of X paired with row i of Y.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "covariances",
    "spectral_profile",
    "sas",
    "sas_straightforward",
    "cka",
    "coral",
    "svcca",
    "centroid_euclidean",
    "centroid_cosine",
    "delta_cos",
    "rmg",
    "cone",
    "gap_vector",
    "alignment",
    "mmd",
    "retrieval",
]

_RHO_EPS = 1e-8   # docs/definitions.md SAS step 3
_STD_EPS = 1e-8   # docs/definitions.md SVCCA z-scoring
# SVCCA: principal directions of the z-scored data with squared singular value at most this
# fraction of the largest are null and not kept (docs/definitions.md, "Covariance family", SVCCA).
_SVCCA_NULL = 1e-5


# --------------------------------------------------------------------------- helpers
def _as2d(x, name, min_rows=2):
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, d); got shape {a.shape}")
    if a.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows; got {a.shape[0]}")
    if a.shape[1] < 1:
        raise ValueError(f"{name} needs at least 1 column; got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _pair(X, Y, min_rows=2):
    X = _as2d(X, "X", min_rows)
    Y = _as2d(Y, "Y", min_rows)
    if X.shape != Y.shape:
        raise ValueError(f"X and Y must have the same shape; got {X.shape} and {Y.shape}")
    return X, Y


def _unit_rows(A, name):
    """Rows divided by their L2 norm (x-hat); ValueError on a zero-norm row."""
    norms = _norm(A, axis=1)
    bad = np.flatnonzero(norms == 0.0)
    if bad.size:
        raise ValueError(f"{name} has zero-norm rows (first: row {bad[0]}); cannot normalise")
    return A / norms[:, None]


def _centre(A):
    return A - A.mean(axis=0)


def _norm(a, axis=None):
    """L2 / Frobenius norm that neither overflows nor underflows: scaled by the largest
    magnitude first (the norm is homogeneous)."""
    a = np.asarray(a, dtype=np.float64)
    top = np.max(np.abs(a), axis=axis, keepdims=True) if a.size else np.zeros((1,) * a.ndim)
    safe = np.where(top > 0, top, 1.0)
    out = safe * np.sqrt(np.sum((a / safe) ** 2, axis=axis, keepdims=True))
    out = np.where(top > 0, out, 0.0)
    return float(out.item()) if axis is None else np.squeeze(out, axis=axis)


def _unit_scale(A):
    """A divided by its largest magnitude (1 for a zero matrix): a scale-free copy for the
    metrics that do not depend on scale, so their products cannot overflow or underflow."""
    top = np.max(np.abs(A))
    return A / top if top > 0 else A


# --------------------------------------------------------------------------- SAS
def covariances(X, Y):
    """Biased covariances (divide by n), docs/definitions.md SAS step 1.

    X, Y: (n, d). Returns ``(Cx, Cy, Cxy)``, each (d, d):
    ``Cx = Xc^T Xc / n``, ``Cy = Yc^T Yc / n``, ``Cxy = Xc^T Yc / n``.
    """
    X, Y = _pair(X, Y)
    n = X.shape[0]
    Xc, Yc = _centre(X), _centre(Y)
    return Xc.T @ Xc / n, Yc.T @ Yc / n, Xc.T @ Yc / n


def _eig_desc(C):
    """Eigenvalues (descending, negatives clipped to 0) and matching eigenvectors."""
    w, V = np.linalg.eigh(C)
    w, V = w[::-1], V[:, ::-1]
    return np.clip(w, 0.0, None), V


def spectral_profile(A, B):
    """Per-mode profile of SAS(A -> B), docs/definitions.md SAS steps 1-3 (anchor A).

    A, B: (n, d). Returns a dict of length-d arrays, mode k ordered by descending
    eigenvalue of Ca:
    ``eigenvalues`` l_k (negative round-off clipped to 0), ``a`` a_k = v_k^T Cab v_k,
    ``s`` s_k = v_k^T Cb v_k, ``rho`` rho_k = a_k / sqrt(l_k s_k + 1e-8).
    """
    Ca, Cb, Cab = covariances(A, B)
    l, V = _eig_desc(Ca)
    a = np.einsum("ik,ij,jk->k", V, Cab, V)
    s = np.einsum("ik,ij,jk->k", V, Cb, V)
    # sqrt(l s + 1e-8) written so that l s cannot overflow for large inputs
    rho = a / np.hypot(np.sqrt(l) * np.sqrt(s), np.sqrt(_RHO_EPS))
    return {"eigenvalues": l, "a": a, "s": s, "rho": rho}


def _check_q(q):
    q = float(q)
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must lie in [0, 1]; got {q}")
    return q


def _sas_from_profile(l, rho, q):
    """docs/definitions.md SAS steps 4-5 (threshold, weighted mean, clip)."""
    t = np.quantile(l, 1.0 - q)            # NumPy default method: linear
    keep = l >= t
    # the weights l_k / sum l_k, from l relative to its largest kept value (no underflow of
    # l_k |rho_k| for tiny inputs)
    w = l[keep] / l[keep].max() if l[keep].size and l[keep].max() > 0 else l[keep]
    with np.errstate(invalid="ignore", divide="ignore"):
        val = np.sum(w * np.abs(rho[keep])) / np.sum(w)
    return float(np.clip(val, 0.0, 1.0))


def sas(A, B, q=0.1):
    """Directional Spectral Alignment Score SAS(A -> B; q), docs/definitions.md SAS steps 1-5.

    A (anchor), B: (n, d). Threshold ``t = numpy.quantile(l, 1 - q)`` (linear
    interpolation), modes kept ``l_k >= t``; result clipped to [0, 1].
    Returns a float (NaN when the anchor has zero variance: 0 / 0 in step 5).
    """
    q = _check_q(q)
    p = spectral_profile(A, B)
    return _sas_from_profile(p["eigenvalues"], p["rho"], q)


def sas_straightforward(X, Y, q=0.1):
    """SAS both ways, the "straightforward" way (benchmark baseline).

    X, Y: (n, d). For each anchor: centre, eigendecompose the anchor covariance,
    project BOTH centred modalities onto its eigenbasis (two n x d products), and take
    per-mode covariance / variance of the projected data (docs/definitions.md SAS steps 1-5).
    Returns ``(sas_i2t, sas_t2i, sas_sym)`` as floats.
    """
    q = _check_q(q)
    X, Y = _pair(X, Y)
    n = X.shape[0]
    Xc, Yc = _centre(X), _centre(Y)

    def one(Ac, Bc):
        l, V = _eig_desc(Ac.T @ Ac / n)
        Pa, Pb = Ac @ V, Bc @ V                 # (n, d) projections
        a = np.mean(Pa * Pb, axis=0)            # per-mode cross-covariance
        s = np.mean(Pb * Pb, axis=0)            # per-mode variance of B
        rho = a / np.sqrt(l * s + _RHO_EPS)
        return _sas_from_profile(l, rho, q)

    i2t, t2i = one(Xc, Yc), one(Yc, Xc)
    return i2t, t2i, 0.5 * (i2t + t2i)


# --------------------------------------------------------------------------- covariance family
def cka(X, Y):
    """Linear CKA, docs/definitions.md Covariance family.

    X, Y: (n, d). ``||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)``.
    """
    X, Y = _pair(X, Y)
    # CKA does not change when X or Y is scaled: compute it on scale-free copies.
    Xc, Yc = _unit_scale(_centre(X)), _unit_scale(_centre(Y))
    num = np.linalg.norm(Xc.T @ Yc, "fro") ** 2
    den = np.linalg.norm(Xc.T @ Xc, "fro") * np.linalg.norm(Yc.T @ Yc, "fro")
    return float(num / den)


def coral(X, Y):
    """CORAL distance ``||Sx - Sy||_F`` with unbiased covariances (divide by n - 1).

    X, Y: (n, d). docs/definitions.md Covariance family.
    """
    X, Y = _pair(X, Y)
    n = X.shape[0]
    Xc, Yc = _centre(X), _centre(Y)
    Sx, Sy = Xc.T @ Xc / (n - 1), Yc.T @ Yc / (n - 1)
    return _norm(Sx - Sy)


def _zscore(A):
    """z-scored columns; a constant column (all values equal) is 0: it contributes nothing."""
    z = (A - A.mean(axis=0)) / (A.std(axis=0, ddof=1) + _STD_EPS)
    return np.where(np.ptp(A, axis=0) == 0, 0.0, z)


def svcca(X, Y, cca_dim=10):
    """SVCCA with an exact SVD and exact CCA, docs/definitions.md Covariance family.

    X, Y: (n, d). Steps: z-score every column, ``z = (x - mean) / (std_ddof1 + 1e-8)`` (a
    constant column is 0); per modality the top-k principal directions are the top-k right
    singular vectors of the z-scored matrix (full, exact ``numpy.linalg.svd``), keeping only
    those whose squared singular value exceeds 1e-5 times the largest (the others are null:
    the data has no variance along them); each modality's z-scored data is projected onto its
    kept directions (kx and ky of them); the canonical correlations of the two projections are
    the singular values of ``Qx^T Qy`` (reduced QR of the centred projections), min(kx, ky) of
    them, each clipped to [0, 1]; SVCCA = their mean. ValueError when a modality has no
    variance at all.

    ``k = min(cca_dim, d, n - 1)``: with fewer than ``cca_dim + 1`` rows or fewer than
    ``cca_dim`` dims only that many canonical pairs exist (centred data has rank at
    most min(d, n - 1)). Unlike the paper's code (randomized SVD, no oversampling) this
    is exact, so it does not reproduce the paper's SVCCA numbers, on purpose.
    """
    X, Y = _pair(X, Y)
    cca_dim = int(cca_dim)
    if cca_dim < 1:
        raise ValueError(f"cca_dim must be >= 1; got {cca_dim}")
    n, d = X.shape
    k = min(cca_dim, d, n - 1)

    def project(A, name):
        Z = _zscore(A)
        _, S, Vt = np.linalg.svd(_unit_scale(Z), full_matrices=False)
        kept = int(np.count_nonzero(S[:k] ** 2 > _SVCCA_NULL * S[0] ** 2)) if S.size and S[0] > 0 else 0
        if kept == 0:
            raise ValueError(f"svcca: {name} has zero variance in every column")
        return Z @ Vt[:kept].T                     # (n, kept)

    Px, Py = project(X, "X"), project(Y, "Y")
    Qx, _ = np.linalg.qr(_unit_scale(_centre(Px)), mode="reduced")
    Qy, _ = np.linalg.qr(_unit_scale(_centre(Py)), mode="reduced")
    corr = np.clip(np.linalg.svd(Qx.T @ Qy, compute_uv=False), 0.0, 1.0)
    return float(np.mean(corr))


def centroid_euclidean(X, Y):
    """``||mean(X) - mean(Y)||_2``. X, Y: (n, d). docs/definitions.md Covariance family."""
    X, Y = _pair(X, Y)
    return _norm(X.mean(axis=0) - Y.mean(axis=0))


def centroid_cosine(X, Y):
    """``1 - cos(mean(X), mean(Y))`` (a distance). X, Y: (n, d). docs/definitions.md Covariance family.

    ValueError when either mean is the zero vector.
    """
    X, Y = _pair(X, Y)
    mx, my = X.mean(axis=0), Y.mean(axis=0)
    nx, ny = _norm(mx), _norm(my)
    if nx == 0.0 or ny == 0.0:
        raise ValueError("centroid_cosine: a mean vector is zero; cosine undefined")
    return float(1.0 - (mx / nx) @ (my / ny))


# --------------------------------------------------------------------------- pairwise family
def delta_cos(X, Y):
    """Delta-cos, docs/definitions.md Pairwise family (full n x n cosine matrix).

    X, Y: (n, d). ``mean_i x̂_i.ŷ_i - mean_{i != j} x̂_i.ŷ_j``.
    """
    X, Y = _pair(X, Y)
    n = X.shape[0]
    C = _unit_rows(X, "X") @ _unit_rows(Y, "Y").T          # (n, n)
    diag = np.diag(C)
    off = C[~np.eye(n, dtype=bool)]
    return float(diag.mean() - off.mean())


def rmg(X, Y, variant="symmetric"):
    """Relative modality gap, docs/definitions.md Pairwise family (full n x n cosine matrices).

    X, Y: (n, d). ``m = mean_i (1 - x̂_i.ŷ_i)``; ``Dx = sum_{i<j} (1 - x̂_i.x̂_j)``,
    ``Dy`` likewise, ``Sx = sum_{i<j} x̂_i.x̂_j`` (sums over the strict upper triangle).

    - ``"symmetric"``: ``m / ((Dx + Dy) / (2 n (n-1)) + m)``
    - ``"paper"``: ``m / ((Sx + Dy) / (2 n (n-1)) + m)``; the paper's code sums cosine
      *similarity* on the image side and cosine *distance* on the text side; this
      variant reproduces its published numbers.

    Note: implemented literally as docs/definitions.md writes it, i.e. Dx, Dy, Sx are sums over
    i < j (n(n-1)/2 pairs) while the divisor is 2 n (n-1). A gap m within 16 float64 roundoffs
    of 0 is no gap: RMG = 0 (also where nothing varies, 0 / 0).
    """
    X, Y = _pair(X, Y)
    if variant not in ("symmetric", "paper"):
        raise ValueError(f'variant must be "symmetric" or "paper"; got {variant!r}')
    n = X.shape[0]
    Xn, Yn = _unit_rows(X, "X"), _unit_rows(Y, "Y")
    m = float(np.mean(1.0 - np.sum(Xn * Yn, axis=1)))
    if m <= 16 * np.finfo(np.float64).eps:  # a gap within the rounding of the cosines is no gap
        return 0.0
    iu = np.triu_indices(n, k=1)
    Gx, Gy = (Xn @ Xn.T)[iu], (Yn @ Yn.T)[iu]
    Dx, Dy, Sx = np.sum(1.0 - Gx), np.sum(1.0 - Gy), np.sum(Gx)
    intra = (Dx + Dy) if variant == "symmetric" else (Sx + Dy)
    return float(m / (intra / (2.0 * n * (n - 1)) + m))


def cone(X):
    """Cone effect: mean pairwise cosine within one modality over i != j.

    X: (n, d). docs/definitions.md Pairwise family (full n x n cosine matrix).
    """
    X = _as2d(X, "X")
    n = X.shape[0]
    Xn = _unit_rows(X, "X")
    G = Xn @ Xn.T
    return float(G[~np.eye(n, dtype=bool)].mean())


def gap_vector(X, Y):
    """Modality gap vector ``mean(X̂) - mean(Ŷ)`` (means of unit rows), shape (d,).

    X: (n, d), Y: (m, d) (row counts may differ). docs/definitions.md Modality-gap control.
    """
    X = _as2d(X, "X", min_rows=1)
    Y = _as2d(Y, "Y", min_rows=1)
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"X and Y must have the same number of columns; got {X.shape} and {Y.shape}")
    return _unit_rows(X, "X").mean(axis=0) - _unit_rows(Y, "Y").mean(axis=0)


def alignment(X, Y, q=0.1):
    """All moment/pairwise alignment metrics of images X and texts Y, both (n, d).

    Returns a dict of Python floats with keys ``sas_i2t`` (SAS(X->Y)), ``sas_t2i``
    (SAS(Y->X)), ``sas_sym`` (their mean), ``sas_imbalance`` (i2t - t2i), ``cka``,
    ``coral``, ``svcca``, ``delta_cos``, ``rmg`` (symmetric), ``rmg_paper``,
    ``centroid_euclidean``, ``centroid_cosine``, ``cone_images``, ``cone_texts``.
    """
    X, Y = _pair(X, Y)
    i2t, t2i = sas(X, Y, q), sas(Y, X, q)
    return {
        "sas_i2t": i2t,
        "sas_t2i": t2i,
        "sas_sym": 0.5 * (i2t + t2i),
        "sas_imbalance": i2t - t2i,
        "cka": cka(X, Y),
        "coral": coral(X, Y),
        "svcca": svcca(X, Y),
        "delta_cos": delta_cos(X, Y),
        "rmg": rmg(X, Y, "symmetric"),
        "rmg_paper": rmg(X, Y, "paper"),
        "centroid_euclidean": centroid_euclidean(X, Y),
        "centroid_cosine": centroid_cosine(X, Y),
        "cone_images": cone(X),
        "cone_texts": cone(Y),
    }


# --------------------------------------------------------------------------- MMD
def _sq_dists(A, B, block=1 << 22, scale=1.0):
    """(na, nb) squared Euclidean distances of A / scale and B / scale from explicit
    differences (no cancellation; each difference is divided before it is squared, so a tiny
    scale overflows to inf, never to NaN)."""
    out = np.empty((A.shape[0], B.shape[0]))
    rows = max(1, block // max(1, B.shape[0] * A.shape[1]))
    with np.errstate(over="ignore"):
        for i in range(0, A.shape[0], rows):
            diff = (A[i:i + rows, None, :] - B[None, :, :]) / scale
            out[i:i + rows] = np.einsum("ijk,ijk->ij", diff, diff)
    return np.maximum(out, 0.0)


def mmd(x, y, sigma=10.0):
    """Biased RBF-kernel MMD with the paper's x100 scaling, docs/definitions.md MMD.

    x: (n, d), y: (m, d) (row counts may differ). With
    ``K(a, b) = exp(-||a - b||^2 / (2 sigma^2))`` and means over all pairs, i = j included:
    ``100 * (mean Kxx + mean Kyy - 2 mean Kxy)``. Builds the full kernel matrices.
    """
    x = _as2d(x, "x", min_rows=1)
    y = _as2d(y, "y", min_rows=1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same number of columns; got {x.shape} and {y.shape}")
    sigma = float(sigma)
    if not sigma > 0.0:
        raise ValueError(f"sigma must be > 0; got {sigma}")
    # ||a - b||^2 / (2 sigma^2) as ||(a - b) / sigma||^2 / 2: no overflow of 1 / sigma^2
    kxx = np.exp(-0.5 * _sq_dists(x, x, scale=sigma)).mean()
    kyy = np.exp(-0.5 * _sq_dists(y, y, scale=sigma)).mean()
    kxy = np.exp(-0.5 * _sq_dists(x, y, scale=sigma)).mean()
    return float(100.0 * (kxx + kyy - 2.0 * kxy))


# --------------------------------------------------------------------------- retrieval
def _ranks(S, match):
    """Rank of every query row of S (queries x candidates), over matched queries only.

    rank = 1 + #non-matching candidates with similarity strictly greater than the best
    similarity among the query's matches. Returns (ranks int64, n_unmatched).
    """
    has = match.any(axis=1)
    best = np.where(match, S, -np.inf).max(axis=1)
    beats = (S > best[:, None]) & ~match
    ranks = 1 + beats.sum(axis=1)
    return ranks[has].astype(np.int64), int(np.count_nonzero(~has))


def retrieval(images, texts, image_ids=None, text_ids=None, ks=(1, 5, 10)):
    """Bidirectional cosine retrieval, docs/definitions.md Retrieval (full similarity matrix).

    images: (n_img, d), texts: (n_txt, d). Rows are L2-normalised; ``S = Xn @ Yn.T``
    (n_img, n_txt). An image and a text match when their ids are equal; by default
    (both ids None) row i <-> row i, which needs n_img == n_txt. Give both id arrays or
    neither. Queries with no match are excluded (counted in ``*_unmatched``).

    Returns a dict: ``i2t_ranks`` (int64, matched image queries in order),
    ``t2i_ranks``, ``i2t_r{k}`` / ``t2i_r{k}`` (fraction with rank <= k) for each k,
    ``rsum`` = 100 * sum_k (i2t_r{k} + t2i_r{k}), ``i2t_median_rank``,
    ``t2i_median_rank``, ``i2t_mean_rank``, ``t2i_mean_rank``, ``i2t_mrr``, ``t2i_mrr``,
    ``i2t_unmatched``, ``t2i_unmatched`` (ints). Ties count in the query's favour.
    """
    X = _as2d(images, "images", min_rows=1)
    Y = _as2d(texts, "texts", min_rows=1)
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"images and texts must have the same number of columns; got {X.shape} and {Y.shape}")
    if (image_ids is None) != (text_ids is None):
        raise ValueError("give both image_ids and text_ids, or neither")
    if image_ids is None:
        if X.shape[0] != Y.shape[0]:
            raise ValueError("without ids, images and texts must have the same number of rows")
        image_ids, text_ids = np.arange(X.shape[0]), np.arange(Y.shape[0])
    image_ids, text_ids = np.asarray(image_ids), np.asarray(text_ids)
    if image_ids.shape != (X.shape[0],) or text_ids.shape != (Y.shape[0],):
        raise ValueError(
            f"image_ids / text_ids must be 1-D with one id per row; got {image_ids.shape} "
            f"for {X.shape[0]} images and {text_ids.shape} for {Y.shape[0]} texts")
    ks = tuple(int(k) for k in ks)
    if any(k < 1 for k in ks):
        raise ValueError(f"every k in ks must be >= 1; got {ks}")

    S = _unit_rows(X, "images") @ _unit_rows(Y, "texts").T     # (n_img, n_txt)
    match = image_ids[:, None] == text_ids[None, :]
    if not match.any():
        raise ValueError("no image id equals any text id: nothing to retrieve")

    out = {}
    for name, sim, mt in (("i2t", S, match), ("t2i", S.T, match.T)):
        r, unmatched = _ranks(sim, mt)
        out[f"{name}_ranks"] = r
        out[f"{name}_unmatched"] = unmatched
        for k in ks:
            out[f"{name}_r{k}"] = float(np.mean(r <= k))
        out[f"{name}_median_rank"] = float(np.median(r))
        out[f"{name}_mean_rank"] = float(np.mean(r))
        out[f"{name}_mrr"] = float(np.mean(1.0 / r))
    out["rsum"] = float(100.0 * sum(out[f"i2t_r{k}"] + out[f"t2i_r{k}"] for k in ks))
    return out
