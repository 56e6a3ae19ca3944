"""Exact biased RBF-kernel MMD with the paper's x100 scaling (docs/definitions.md, "MMD"),
blocked and fused in the C++ core (or on the GPU): GEMM, exp and float64 sums per tile,
never an n x n matrix."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from fastsas import _dispatch
from fastsas._validate import check_int, resolve_threads
from fastsas.results import Metric

__all__ = ["mmd"]


def mmd(
    x: Any,
    y: Any,
    sigma: float = 10.0,
    *,
    threads: int | None = None,
    tile: int | None = None,
    backend: str = "auto",
) -> float:
    """The exact biased RBF-kernel MMD with the paper's x100 scaling (docs/definitions.md,
    "MMD"): ``100 * (mean K(x_i, x_j) + mean K(y_i, y_j) - 2 mean K(x_i, y_j))``, means over all
    pairs including i = j, ``K(a, b) = exp(-||a - b||^2 / (2 sigma^2))``.

    A metric of two generic sets (not of pairs: n and m may differ), hence `x` and `y`.
    Exact, O((n + m)^2 d) work in O(tile^2 + (n + m) d) memory.

    Parameters
    ----------
    x : array_like, shape (n, d)
        float16/32/64 rows of the first set. float32 is computed with float32 products and
        float64 sums (about 1e-6 relative to the float64 value for typical embeddings),
        float64 in float64; mixed precisions in float64.
    y : array_like, shape (m, d)
        The second set, likewise.
    sigma : float, default 10.0
        The RBF bandwidth, finite and > 0.
    threads : int or None
        Worker threads (None: the fastsas default); the result does not depend on it.
    tile : int or None
        Rows and columns per tile (None: the core's default); the result does not depend on it.
    backend : {"auto", "cpu", "cuda"}, default "auto"
        The engine (inputs may then also be CuPy arrays or torch CUDA tensors). The GPU uses
        the same formula, GEMM tiles in the input precision and a fused exp-and-sum kernel
        with float64 sums: the value agrees with the CPU's to about 1e-5 relative.

    Returns
    -------
    Metric
        A float with ``.backend``.

    Raises
    ------
    TypeError
        When an input is not an array of floats, or `sigma` is not a number.
    ValueError
        When the dims differ, a set is empty, a row is non-finite, or `sigma`, `tile` or
        `threads` is out of range.
    RuntimeError
        When ``backend="cuda"`` and no GPU is usable.

    Examples
    --------
    >>> import numpy as np, fastsas as fs
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((500, 32))
    >>> round(fs.mmd(x, x), 12)
    0.0
    >>> fs.mmd(x, x + 1.0, sigma=5.0) > 0
    True
    """
    kind = _dispatch.resolve_backend(backend, x, y)
    a, b = _dispatch.as_engine_pair(kind, x, y, ("x", "y"), min_rows=1, paired=False)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.integer, np.floating)):
        raise TypeError(f"sigma must be a positive number (the RBF bandwidth), got {sigma!r}")
    s = float(sigma)
    if not (s > 0.0 and math.isfinite(s)):
        raise ValueError(f"sigma must be a finite number > 0 (the RBF bandwidth), got {s}")
    t = 0 if tile is None else check_int(tile, "tile", allow_none=True, meaning="rows and columns per tile")
    return Metric(_dispatch.mmd(kind, a, b, s, tile=t, threads=resolve_threads(threads)), kind)
