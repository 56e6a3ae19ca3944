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
    return Value(m._defined("rmg" if variant == "symmetric" else "rmg_paper"), kind)


def _scalar(key: str, doc: str):
    def metric(images: Any, texts: Any, *, threads: int | None = None, backend: str = "auto") -> float:
        m, kind = _moments(images, texts, ("images", "texts"), True, threads, backend)
        return Value(m._defined(key), kind)

    metric.__name__ = key
    metric.__doc__ = doc
    return metric


delta_cos = _scalar("delta_cos", "Mean matched cosine minus mean unmatched cosine (exact, O(n d)).")
cka = _scalar("cka", "Linear CKA: ||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F).")
coral = _scalar("coral", "CORAL distance ||Sx - Sy||_F with unbiased covariances.")
svcca = _scalar(
    "svcca",
    "SVCCA (10 canonical pairs, capped at min(d, n - 1)), computed exactly from the moments.\n\n"
    "Constant columns contribute nothing and principal directions without variance are not kept, "
    "so rank-deficient input (few rows, repeated rows or columns) averages fewer canonical pairs; "
    "ValueError when a modality has no variance at all (docs/definitions.md).\n\n"
    "The paper's code takes the top-10 subspace from a randomized SVD without oversampling; "
    "its values are noisy and biased low, so fastsas does not reproduce them (METRICS.md).",
)
