"""One-call metrics on in-memory (or memory-mapped) paired embeddings. Each is one
streaming pass through the engine ``backend`` picks (the C++ core, or the GPU); the
definitions are in docs/definitions.md."""
from __future__ import annotations

from string import Template
from typing import Any

from fastsas import _core, _dispatch
from fastsas._validate import check_topq, resolve_threads
from fastsas.moments import Moments
from fastsas.results import Metric, Metrics

__all__ = ["alignment", "cka", "coral", "delta_cos", "rmg", "sas", "svcca"]


def _moments(images: Any, texts: Any, names: tuple[str, str], track_unit_rows: bool, threads: int | None,
             backend: str) -> tuple[Moments, str]:
    """The moments of one pass, and the backend ("cpu" or "cuda") that accumulated them."""
    kind = _dispatch.resolve_backend(backend, images, texts)
    x, y = _dispatch.as_engine_pair(kind, images, texts, names)
    core = _dispatch.accumulate(kind, x, y, names, track_unit_rows, resolve_threads(threads))
    return Moments._from_core(core, threads), kind


_PAIR = """    images, texts : array_like, shape (n, d)
        float16, float32 or float64 embeddings paired row by row (row i of each describes
        the same item), n >= 2: NumPy arrays or memmaps; with the GPU backend also CuPy
        arrays or torch CUDA tensors, used in place. float32 is computed with float32 block
        products accumulated in float64, float64 in float64; mixed precisions in float64."""
_OPTIONS = """    threads : int or None, optional
        Worker threads of the core (None: the fastsas default, every core this process may
        use). The result does not depend on it.
    backend : {"auto", "cpu", "cuda"}, default "auto"
        The engine: "auto" is the GPU when CuPy sees one, else the CPU. The result says
        which one ran in ``.backend``."""
_RAISES = """    Raises
    ------
    TypeError
        When an input is not an array of floats.
    ValueError
        When the shapes do not pair, there are fewer than 2 rows, or a row holds NaN or Inf
        (or is all zeros where rows are normalised, or too large or too small for float64);
        the message names the rows. Also when the metric is undefined for these embeddings
        (e.g. CKA or SVCCA when a modality has no variance); the message says why.
    RuntimeError
        When ``backend="cuda"`` and no GPU is usable."""


def _documented(function):
    """Fill the shared parts ($pair, $options, $raises) of a docstring: one text for the
    arguments every metric of this module takes."""
    function.__doc__ = Template(function.__doc__).safe_substitute(pair=_PAIR, options=_OPTIONS, raises=_RAISES)
    return function


@_documented
def sas(anchor: Any, other: Any, topq: float = 0.1, *, threads: int | None = None, backend: str = "auto") -> float:
    """The directional Spectral Alignment Score SAS(anchor -> other), in [0, 1]: how much of
    the anchor's principal variance the other modality mirrors (docs/definitions.md).

    The anchor's covariance eigenbasis defines the modes; each mode's correlation with the
    other modality is weighted by the anchor's eigenvalue, over the top `topq` of modes. Only
    the anchor's eigenproblem is solved. ``fs.sas(images, texts)`` is SAS(I->T),
    ``fs.sas(texts, images)`` is SAS(T->I). The imbalance SAS(I→T) − SAS(T→I) is negative when the images' own principal variance is less mirrored by the texts than the texts' is by the images (for example, structure that only the images carry), and positive the other way round.

    Parameters
    ----------
    anchor, other : array_like, shape (n, d)
        Paired embeddings (float16/32/64; see :func:`alignment`), n >= 2.
    topq : float, default 0.1
        The top fraction of anchor modes kept, in (0, 1].
$options

    Returns
    -------
    Metric
        A float with ``.backend`` ("cpu" or "cuda").

$raises
        Also when the anchor has no variance (SAS is undefined).

    Examples
    --------
    >>> import fastsas as fs
    >>> x, y = fs.synthetic.paired_embeddings(2000, 32, image_only_factors=3, seed=0)
    >>> i2t, t2i = fs.sas(x, y), fs.sas(y, x)
    >>> 0 <= i2t < t2i <= 1   # structure only the images carry lowers SAS(I->T)
    True
    """
    q = check_topq(topq)
    m, kind = _moments(anchor, other, ("anchor", "other"), False, threads, backend)
    # The anchor's eigenproblem only (not the full analysis of both directions and SVCCA).
    profile = _core.spectral_profile(m._core, anchor="x")
    return Metric(_core.sas_from_profile(eigenvalues=profile["eigenvalues"], rho=profile["rho"], q=q), kind)


@_documented
def alignment(images: Any, texts: Any, topq: float = 0.1, *, threads: int | None = None,
              backend: str = "auto") -> dict[str, float]:
    """Every alignment metric in one pass over the data (docs/definitions.md).

    Parameters
    ----------
$pair
    topq : float, default 0.1
        SAS's top fraction of anchor modes, in (0, 1].
$options

    Returns
    -------
    Metrics
        A dict (with ``.backend``) of floats: ``sas_i2t``, ``sas_t2i``, ``sas_sym``,
        ``sas_imbalance``, ``cka``, ``coral``, ``svcca``, ``delta_cos``, ``rmg``,
        ``rmg_paper``, ``centroid_euclidean``, ``centroid_cosine``, ``cone_images``,
        ``cone_texts``, ``matched_cosine``; and ``n`` (int, the pairs) and ``topq``. The
        imbalance SAS(I→T) − SAS(T→I) is negative when the images' own principal variance is less mirrored by the texts than the texts' is by the images (for example, structure that only the images carry), and positive the other way round.

$raises

    Examples
    --------
    >>> import fastsas as fs
    >>> x, y = fs.synthetic.paired_embeddings(2000, 32, image_only_factors=3, seed=0)
    >>> result = fs.alignment(x, y, backend="cpu")
    >>> result.backend, result["n"], result["sas_imbalance"] < 0
    ('cpu', 2000, True)
    """
    q = check_topq(topq)
    m, kind = _moments(images, texts, ("images", "texts"), True, threads, backend)
    return Metrics(m.alignment(q), kind)


@_documented
def rmg(images: Any, texts: Any, variant: str = "symmetric", *, threads: int | None = None,
        backend: str = "auto") -> float:
    """The relative modality gap (docs/definitions.md, "Pairwise family"), exact in O(n d).

    Parameters
    ----------
$pair
    variant : {"symmetric", "paper"}, default "symmetric"
        "symmetric" uses cosine distances on both sides; "paper" reproduces the SAS paper's
        published code, which sums cosine *similarity* on the image side and cosine
        *distance* on the text side.
$options

    Returns
    -------
    Metric
        A float with ``.backend``.

$raises
        Also for an unknown `variant`.

    Examples
    --------
    >>> import fastsas as fs
    >>> x, y = fs.synthetic.paired_embeddings(2000, 32, seed=0)
    >>> 0 < fs.rmg(x, y) < 1 and fs.rmg(x, y) != fs.rmg(x, y, variant="paper")
    True
    """
    if variant not in ("symmetric", "paper"):
        raise ValueError(f'variant must be "symmetric" or "paper", got {variant!r}')
    m, kind = _moments(images, texts, ("images", "texts"), True, threads, backend)
    return Metric(m._defined("rmg" if variant == "symmetric" else "rmg_paper"), kind)


def _scalar(key: str, summary: str, example: str):
    def metric(images: Any, texts: Any, *, threads: int | None = None, backend: str = "auto") -> float:
        m, kind = _moments(images, texts, ("images", "texts"), True, threads, backend)
        return Metric(m._defined(key), kind)

    metric.__name__ = metric.__qualname__ = key
    metric.__doc__ = f"""{summary}

    Parameters
    ----------
{_PAIR}
{_OPTIONS}

    Returns
    -------
    Metric
        A float with ``.backend``, the ``{key}`` of :func:`alignment`.

{_RAISES}

    Examples
    --------
    >>> import fastsas as fs
    >>> x, y = fs.synthetic.paired_embeddings(2000, 32, seed=0)
    {example}
    """
    return metric


delta_cos = _scalar("delta_cos", "Delta-cos: the mean matched cosine minus the mean unmatched cosine (exact, O(n d)).",
                    ">>> 0 < fs.delta_cos(x, y) < 1\n    True")
cka = _scalar("cka", "Linear CKA: ``||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)``, in [0, 1].",
              ">>> round(fs.cka(x, x), 6)\n    1.0")
coral = _scalar("coral", "The CORAL distance ``||Sx - Sy||_F`` between the unbiased covariances.",
                ">>> fs.coral(x, x)\n    0.0")
svcca = _scalar(
    "svcca",
    "SVCCA: the mean of the canonical correlations of the top-10 principal subspaces of the\n"
    "    z-scored modalities (capped at min(10, d, n - 1) pairs), computed exactly from the moments.\n\n"
    "    Constant columns contribute nothing and principal directions without variance are not\n"
    "    kept, so rank-deficient input (few rows, repeated rows or columns) averages fewer\n"
    "    canonical pairs; ValueError when a modality has no variance at all.\n\n"
    "    The SAS paper's code takes the top-10 subspaces from a randomized SVD without\n"
    "    oversampling; its values are noisy and biased, so fastsas does not reproduce them\n"
    "    (docs/definitions.md).",
    ">>> 0 < fs.svcca(x, y) <= 1\n    True",
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
    reason = m.estimator_reasons().get("cka_unbiased")
    if reason is not None:
        raise ValueError(f"cka_unbiased is undefined for these embeddings: {reason}")
    return Metric(m.estimators()["cka_unbiased"], "cpu")


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
    key = _PROCRUSTES[variant]
    reason = m.estimator_reasons().get(key)
    if reason is not None:
        raise ValueError(f"{key} is undefined for these embeddings: {reason}")
    return Metric(m.estimators()[key], kind)
