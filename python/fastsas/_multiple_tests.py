"""Adjusting p-values for multiple comparisons across one family of tests, for every part
of fastsas that reports a family (the study's experiments, the audit's subgroup contrasts
and model comparisons)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["CORRECTIONS", "adjust_pvalues"]

CORRECTIONS = ("holm", "bh")


def adjust_pvalues(pvalues: Sequence[float], method: str = "holm") -> np.ndarray:
    """p-values adjusted for multiple comparisons across one family of tests: Holm's
    step-down (family-wise error) or Benjamini-Hochberg (false discovery rate). NaN
    p-values (tests that could not run) stay NaN and do not count in the family.

    Parameters
    ----------
    pvalues : sequence of float
        One p-value per test of the family.
    method : {"holm", "bh"}, default "holm"
        The correction.

    Returns
    -------
    ndarray of float64
        The adjusted p-values, in the order given, at most 1.

    Raises
    ------
    ValueError
        For an unknown method.

    Examples
    --------
    >>> from fastsas._multiple_tests import adjust_pvalues
    >>> adjust_pvalues([0.01, 0.04, 0.03, float("nan")]).round(4).tolist()
    [0.03, 0.06, 0.06, nan]
    >>> adjust_pvalues([0.01, 0.04, 0.03], "bh").round(4).tolist()
    [0.03, 0.04, 0.04]
    """
    if method not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {method!r}")
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    ranked = p[order]
    if method == "holm":
        adjusted = np.maximum.accumulate((m - np.arange(m)) * ranked)
    else:
        adjusted = np.minimum.accumulate((m / np.arange(1, m + 1) * ranked)[::-1])[::-1]
    out[order] = np.minimum(adjusted, 1.0)
    return out
