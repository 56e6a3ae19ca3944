"""Exact CKA with RBF kernels (docs/definitions.md, "Neighbourhood family"), biased and
unbiased HSIC, blocked and fused in the C++ core: per tile one GEMM per modality with the
kernel and every sum the estimators need in the same pass, never an n x n matrix."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fastsas import _core
from fastsas._badrows import bad_rows_error
from fastsas._validate import as_embeddings, resolve_threads
from fastsas.results import Metric
from fastsas.neighbourhood import HsicTerms

__all__ = ["RbfCka", "cka_rbf"]


@dataclass(frozen=True)
class RbfCka:
    """Both RBF CKA estimates with their HSIC terms (``.value`` is the CKA)."""

    biased: HsicTerms
    unbiased: HsicTerms


def _sigmas(sigma: Any) -> tuple[float, float]:
    pair = sigma if isinstance(sigma, (tuple, list)) else (sigma, sigma)
    if len(pair) != 2:
        raise ValueError(f"sigma must be a number or a pair (sigma_images, sigma_texts), got {sigma!r}")
    out = []
    for s in pair:
        if isinstance(s, bool) or not isinstance(s, (int, float)) and not hasattr(s, "__float__"):
            raise TypeError(f"sigma must be a positive number (the RBF bandwidth), got {s!r}")
        v = float(s)
        if not (v > 0.0 and math.isfinite(v)):
            raise ValueError(f"sigma must be a finite number > 0 (the RBF bandwidth), got {v}")
        out.append(v)
    return out[0], out[1]


def cka_rbf(images: Any, texts: Any, sigma: float | tuple[float, float] = 1.0, *, unbiased: bool = True,
            return_terms: bool = False, threads: int | None = None, tile: int | None = None) -> Any:
    """CKA of the RBF kernels K_ij = exp(-|x_i - x_j|^2 / (2 sigma^2)) of the images and L_ij of
    the texts, exactly, in O(n^2 d) work and O(tile^2 + n d) memory.

    Parameters
    ----------
    images, texts : array_like, shapes (n, d_images) and (n, d_texts)
        Paired rows, used as given (not normalised); float16/32/64 (float32 products and
        kernels with float64 sums for float32 input, float64 throughout for float64; mixed
        precisions in float64). n >= 4.
    sigma : float or (float, float)
        The bandwidth, or one per modality (images, texts). Default 1.0, as the reference code.
    unbiased : bool
        The unbiased HSIC estimator of Song et al. (default) or the biased one (tr(KHLH)).
    return_terms : bool
        Return an `RbfCka` with both estimates and their HSIC terms instead of one float.
    threads, tile : optional
        Worker threads and rows per tile; neither changes the result (fixed summation order).

    Returns
    -------
    float or RbfCka
        The CKA: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)); the unbiased one may be negative
        near zero alignment, and is 0 when a kernel shows no spread (never NaN).

    Raises
    ------
    ValueError
        Unpaired inputs, n < 4, a sigma that is not a finite positive number, NaN/Inf rows.
    TypeError
        Non-float inputs or a non-numeric sigma.

    Examples
    --------
    >>> import numpy as np, fastsas as fs
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((300, 8))
    >>> round(fs.cka_rbf(x, 2 * x, sigma=(1.0, 2.0)), 12)
    1.0
    """
    x = as_embeddings(images, "images", min_rows=4)
    y = as_embeddings(texts, "texts", min_rows=4)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"images and texts must be paired row by row: got {x.shape[0]} and {y.shape[0]} rows")
    if x.dtype != y.dtype:
        x, y = x.astype("float64", copy=False), y.astype("float64", copy=False)
    sx, sy = _sigmas(sigma)
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 1):
        raise ValueError(f"tile must be None or a positive integer, got {tile!r}")
    try:
        r = _core.rbf_cka(x, y, sx, sy, int(tile or 0), resolve_threads(threads))
    except _core.BadRowsError as exc:
        raise bad_rows_error(exc, {"x": "images", "y": "texts"}) from None
    out = RbfCka(HsicTerms._from(r["biased"]), HsicTerms._from(r["unbiased"]))
    if return_terms:
        return out
    return Metric((out.unbiased if unbiased else out.biased).value, "cpu")
