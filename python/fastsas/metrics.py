"""One-call metrics on in-memory (or memory-mapped) paired embeddings. Each is one
streaming pass through the C++ core; see METRICS.md for the definitions."""
from __future__ import annotations

from typing import Any

from fastsas._validate import Result, Value, as_pair, check_topq, resolve_backend
from fastsas.moments import Moments


def _moments(images: Any, texts: Any, names: tuple[str, str], track_unit_rows: bool, threads: int | None,
             backend: str) -> tuple[Moments, str]:
    """The moments of one pass, and the backend ("cpu" or "cuda") that accumulated them."""
    kind = resolve_backend(backend, images, texts)
    try:
        if kind == "cuda":
            from fastsas.gpu.moments import moments_of

            return moments_of(images, texts, names, track_unit_rows, threads), kind
        x, y = as_pair(images, texts, names)
        m = Moments(x.shape[1], track_unit_rows=track_unit_rows, threads=threads)
        m.update(x, y)
    except ValueError as exc:
        # Moments names its inputs images/texts; say it with the caller's names.
        msg = str(exc)
        if names != ("images", "texts") and msg.startswith(("images ", "texts ")):
            first, rest = msg.split(" ", 1)
            msg = f"{names[0] if first == 'images' else names[1]} {rest}"
        raise ValueError(msg) from None
    return m, kind


def sas(anchor: Any, other: Any, topq: float = 0.1, *, threads: int | None = None, backend: str = "auto") -> float:
    """Directional Spectral Alignment Score SAS(anchor -> other) in [0, 1].

    anchor, other: (n, d) paired embeddings (row i of each describes the same item).
    The anchor's covariance eigenbasis defines the modes; each mode's correlation with the
    other modality is weighted by the anchor eigenvalue, over the top `topq` of modes.

    >>> import fastsas as fs
    >>> x, y = fs.synthetic.paired_embeddings(2000, 32, seed=0)
    >>> 0 < fs.sas(x, y) <= 1
    True
    """
    q = check_topq(topq)
    m, kind = _moments(anchor, other, ("anchor", "other"), False, threads, backend)
    return Value(m.spectral_profile("i2t").sas(q), kind)


def alignment(images: Any, texts: Any, topq: float = 0.1, *, threads: int | None = None,
              backend: str = "auto") -> dict[str, float]:
    """Every alignment metric in one pass: SAS both ways, symmetric and imbalance, CKA,
    CORAL, SVCCA, Delta-cos, RMG (both variants), centroid distances and the cone.

    images, texts: (n, d) float16/32/64 arrays, paired row by row, n >= 2 (NumPy, memmap; with
    the GPU backend also CuPy arrays or torch CUDA tensors, used in place).
    backend: "auto" (the GPU when CuPy sees one, else the CPU), "cpu" or "cuda". Every
    function of this module takes it; the result says which one ran in ``.backend`` (an
    attribute, so the dict's keys stay what they were).
    """
    q = check_topq(topq)
    m, kind = _moments(images, texts, ("images", "texts"), True, threads, backend)
    return Result(m.alignment(q), kind)


def rmg(images: Any, texts: Any, variant: str = "symmetric", *, threads: int | None = None,
        backend: str = "auto") -> float:
    """Relative modality gap. variant="symmetric" (default) uses cosine distances on both
    sides; variant="paper" reproduces the published code, which sums cosine *similarity*
    on the image side and cosine *distance* on the text side (METRICS.md)."""
    if variant not in ("symmetric", "paper"):
        raise ValueError(f'variant must be "symmetric" or "paper", got {variant!r}')
    m, kind = _moments(images, texts, ("images", "texts"), True, threads, backend)
    return Value(m.analysis()["rmg" if variant == "symmetric" else "rmg_paper"], kind)


def _scalar(key: str, doc: str):
    def metric(images: Any, texts: Any, *, threads: int | None = None, backend: str = "auto") -> float:
        m, kind = _moments(images, texts, ("images", "texts"), True, threads, backend)
        return Value(m.analysis()[key], kind)

    metric.__name__ = key
    metric.__doc__ = doc
    return metric


delta_cos = _scalar("delta_cos", "Mean matched cosine minus mean unmatched cosine (exact, O(n d)).")
cka = _scalar("cka", "Linear CKA: ||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F).")
coral = _scalar("coral", "CORAL distance ||Sx - Sy||_F with unbiased covariances.")
svcca = _scalar(
    "svcca",
    "SVCCA (10 canonical pairs, capped at min(d, n - 1)), computed exactly from the moments.\n\n"
    "The paper's code takes the top-10 subspace from a randomized SVD without oversampling; "
    "its values are noisy and biased low, so fastsas does not reproduce them (METRICS.md).",
)


def cka_unbiased(images: Any, texts: Any, *, threads: int | None = None) -> float:
    """Unbiased linear CKA: the unbiased HSIC (Song et al. 2012) of the linear kernels
    K = X X', L = Y Y', normalised, exactly from one streaming pass (CPU).

    Parameters
    ----------
    images, texts : array_like, shape (n, d)
        Paired float16/32/64 rows, n >= 4.

    Returns
    -------
    float
        HSIC_u(K, L) / sqrt(HSIC_u(K, K) HSIC_u(L, L)) in [-1, 1]: negative values are honest
        estimates of an alignment near zero; 0 when a modality shows no spread.

    Raises
    ------
    ValueError
        Unpaired inputs, fewer than 4 pairs, NaN/Inf or all-zero rows (named).

    Examples
    --------
    >>> import numpy as np, fastsas as fs
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((1000, 16))
    >>> abs(fs.cka_unbiased(x, rng.standard_normal((1000, 16)))) < 0.05
    True
    """
    m, _ = _moments(images, texts, ("images", "texts"), True, threads, "cpu")
    m._need(4)
    return Value(m.estimators()["cka_unbiased"], "cpu")


_PROCRUSTES = {"distance": "procrustes", "angular": "procrustes_angular",
               "angular_whitened": "procrustes_angular_whitened"}


def procrustes(images: Any, texts: Any, variant: str = "distance", *, threads: int | None = None,
               backend: str = "auto") -> float:
    """Orthogonal Procrustes distances from one streaming pass.

    Parameters
    ----------
    images, texts : array_like, shape (n, d)
        Paired float16/32/64 rows, n >= 2.
    variant : {"distance", "angular", "angular_whitened"}
        "distance": min over orthogonal Q of ||Xc Q - Yc||_F^2 / n = tr Cx + tr Cy - 2 ||Cxy||_*;
        "angular": arccos(||Cxy||_* / sqrt(tr Cx tr Cy)) in radians, in [0, pi / 2];
        "angular_whitened": the same on whitened modalities, arccos of the sum of canonical
        correlations over sqrt(rank_x rank_y).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        An unknown variant, unpaired inputs, fewer than 2 pairs, NaN/Inf or all-zero rows.

    Examples
    --------
    >>> import numpy as np, fastsas as fs
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((1000, 8))
    >>> q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    >>> round(fs.procrustes(x, x @ q), 9)
    0.0
    """
    if variant not in _PROCRUSTES:
        raise ValueError(f"variant must be one of {', '.join(map(repr, _PROCRUSTES))}, got {variant!r}")
    m, kind = _moments(images, texts, ("images", "texts"), True, threads, backend)
    return Value(m.estimators()[_PROCRUSTES[variant]], kind)
