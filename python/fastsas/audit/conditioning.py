"""How well SAS is determined by the data (docs/definitions.md, "SAS conditioning"): blocks
of anchor eigenvalues that are equal within their sampling error, among the modes SAS keeps
and at its top-q cut, and the rotation-invariant companion score.

Inside such a block the eigenvectors are not determined by the data (any rotation of them
is as good an eigenbasis), so neither are the per-mode correlations |rho_k|, nor SAS. The
companion score replaces each block's modes by the canonical correlations between the
anchor's and the other modality's projections on the block's eigenspace: it does not change
when the vectors inside a block are rotated, and it equals SAS when every kept eigenvalue
is well separated.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from fastsas import _core

__all__ = ["SEPARATION", "companion_score", "conditioning", "eigen_blocks"]

SEPARATION = 2.0  # consecutive eigenvalues are separated when their gap exceeds 2 x their joint standard error
_DIRECTIONS = {"i2t": (0, 1), "t2i": (1, 0)}  # (anchor, other) halves of the joint covariance


def eigen_blocks(eigenvalues: Sequence[float], se: Sequence[float], kept: int,
                 separation: float = SEPARATION) -> list[tuple[int, int]]:
    """The blocks of modes SAS's kept modes fall into: consecutive modes k, k+1 (eigenvalues
    in decreasing order) are in one block when ``l_k - l_{k+1} <= separation *
    sqrt(se_k^2 + se_{k+1}^2)``; a block that holds the last kept mode extends past the cut
    while that holds.

    Parameters
    ----------
    eigenvalues : sequence of float
        The anchor's eigenvalues, decreasing.
    se : sequence of float
        Their standard errors.
    kept : int
        Modes SAS keeps (the first `kept`).
    separation : float, default 2.0
        Gaps below this many joint standard errors join two modes.

    Returns
    -------
    list of (int, int)
        ``(start, stop)`` mode ranges (0-based, stop exclusive) covering modes 0 .. the end
        of the block of the last kept mode; one-mode blocks are well separated.

    Examples
    --------
    >>> from fastsas.audit.conditioning import eigen_blocks
    >>> eigen_blocks([9.0, 8.99, 8.98, 4.0, 3.0, 2.99], [0.05] * 6, kept=5)
    [(0, 3), (3, 4), (4, 6)]
    """
    l = np.asarray(eigenvalues, dtype=np.float64)
    s = np.asarray(se, dtype=np.float64)
    blocks: list[tuple[int, int]] = []
    start = 0
    for k in range(l.size):
        joined = k + 1 < l.size and (l[k] - l[k + 1]) <= separation * math.hypot(s[k], s[k + 1])
        if joined:
            continue
        blocks.append((start, k + 1))
        start = k + 1
        if k + 1 >= kept:
            break
    return blocks


def _whitener(m: np.ndarray) -> np.ndarray:
    """L^-1 for M = L L^T (Cholesky, with a ridge of 1e-12 of the mean diagonal so a singular
    block stays defined): L^-1 M L^-T = I, and canonical correlations do not depend on which
    square root whitens."""
    size = m.shape[0]
    ridge = 1e-12 * max(float(np.trace(m)) / size, 1e-300)
    chol = np.linalg.cholesky((m + m.T) / 2.0 + ridge * np.eye(size))
    return np.linalg.solve(chol, np.eye(size))


def companion_score(cov_anchor: np.ndarray, cov_other: np.ndarray, cov_cross: np.ndarray,
                    eigenvalues: np.ndarray, eigenvectors: np.ndarray, blocks: Sequence[tuple[int, int]],
                    kept: int, detail: bool = False) -> Any:
    """The rotation-invariant companion of SAS (docs/definitions.md, "SAS conditioning").

    For every block B of modes (:func:`eigen_blocks`) with at least one kept mode: with
    ``V_B`` the block's eigenvectors, ``M_a = V_B^T C_a V_B``, ``M_b = V_B^T C_b V_B`` and
    ``M_ab = V_B^T C_ab V_B``, the block's score ``c_B`` is the mean canonical correlation of
    the two projections (the singular values of ``W_a M_ab W_b^T`` for any ``W`` with
    ``W M W^T = I``, such as ``M^-1/2``), or ``|rho_k|``
    exactly as SAS computes it for a one-mode block; its weight is ``w_B = (kept modes in B /
    modes in B) * trace(M_a)``. The score is ``clip(sum w_B c_B / sum w_B, 0, 1)``.

    Parameters
    ----------
    cov_anchor, cov_other, cov_cross : ndarray, shape (d, d)
        ``C_a``, ``C_b`` and ``C_ab`` (biased covariances).
    eigenvalues : ndarray, shape (d,)
        The anchor's eigenvalues, decreasing.
    eigenvectors : ndarray, shape (d, d)
        Their unit eigenvectors, as columns (any rotation inside a block gives the same score).
    blocks : sequence of (int, int)
        The mode blocks.
    kept : int
        Modes SAS keeps.
    detail : bool, default False
        Also return each block's canonical correlations and weight.

    Returns
    -------
    float, or (float, list of dict) with `detail`

    Examples
    --------
    >>> import numpy as np
    >>> from fastsas.audit.conditioning import companion_score
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((5000, 4)) * [3.0, 3.0, 1.0, 0.5]
    >>> y = np.c_[x[:, 0], rng.standard_normal(5000), x[:, 2:]]
    >>> c = np.cov(np.c_[x, y].T, bias=True)
    >>> l, v = np.linalg.eigh(c[:4, :4]); l, v = l[::-1], v[:, ::-1]
    >>> round(companion_score(c[:4, :4], c[4:, 4:], c[:4, 4:], l, v, [(0, 2)], kept=2), 2)
    0.5
    """
    total = weight = 0.0
    rows = []
    for start, stop in blocks:
        inside = max(0, min(stop, kept) - start)
        if inside == 0:
            continue
        v = eigenvectors[:, start:stop]
        m_a = v.T @ cov_anchor @ v
        if stop - start == 1:
            a_k = float(v[:, 0] @ cov_cross @ v[:, 0])
            s_k = float(v[:, 0] @ cov_other @ v[:, 0])
            corr = np.array([abs(a_k) / math.sqrt(float(eigenvalues[start]) * s_k + 1e-8)])
            w = float(eigenvalues[start])
        else:
            m_b, m_ab = v.T @ cov_other @ v, v.T @ cov_cross @ v
            corr = np.linalg.svd(_whitener(m_a) @ m_ab @ _whitener(m_b).T, compute_uv=False)
            w = inside / (stop - start) * float(np.trace(m_a))
        c = float(np.clip(np.mean(corr), 0.0, 1.0))
        total += w * c
        weight += w
        rows.append({"modes": [start + 1, stop], "canonical_correlations": np.clip(corr, 0.0, 1.0).tolist(),
                     "weight": w, "score": c})
    value = float(np.clip(total / weight, 0.0, 1.0)) if weight > 0 else float("nan")
    return (value, rows) if detail else value


def _covariances(moments_core, direction: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = moments_core.dim
    cov = np.asarray(moments_core.centered_scatter(), dtype=np.float64) / float(moments_core.count)
    a, b = _DIRECTIONS[direction]
    part = lambda i, j: cov[i * d:(i + 1) * d, j * d:(j + 1) * d]  # noqa: E731
    return part(a, a), part(b, b), part(a, b)


def _eigh_desc(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values, vectors = np.linalg.eigh((c + c.T) / 2.0)
    return np.clip(values[::-1], 0.0, None), vectors[:, ::-1]


def companion_of(moments_core, direction: str, blocks: Sequence[tuple[int, int]], kept: int) -> float:
    """The companion score of a core Moments in `direction` ("i2t" or "t2i") for fixed mode
    blocks (the jackknife keeps the full archive's blocks)."""
    ca, cb, cab = _covariances(moments_core, direction)
    l, v = _eigh_desc(ca)
    return companion_score(ca, cb, cab, l, v, blocks, kept)


def conditioning(moments_core, topq: float, eigenvalue_se: dict | None = None,
                 separation: float = SEPARATION) -> dict:
    """SAS's conditioning in both directions: the near-degenerate blocks of the anchor's
    eigenvalues among the kept modes and at the cut, and the companion score.

    Parameters
    ----------
    moments_core : fastsas._core.Moments
        The archive's moments.
    topq : float
        SAS's top fraction of modes.
    eigenvalue_se : dict or None
        Standard errors of the eigenvalues per direction (the audit's block jackknife); None:
        the asymptotic ``l_k sqrt(2 / n)`` of Gaussian data with independent rows.
    separation : float, default 2.0
        See :func:`eigen_blocks`.

    Returns
    -------
    dict
        ``se_method``, ``separation``; per direction (``i2t``, ``t2i``): ``sas``,
        ``companion``, ``kept``, ``blocks`` (every block of two or more modes holding a kept
        mode: ``modes`` (1-based, inclusive), ``eigenvalues``, ``se``, ``straddles_cut``,
        ``canonical_correlations``, ``rho`` (the per-mode values SAS uses there)),
        ``degenerate`` (bool), ``mode_blocks`` (every block, for the jackknife).

    Examples
    --------
    >>> import fastsas as fs
    >>> from fastsas.audit.conditioning import conditioning
    >>> x, y = fs.synthetic.paired_embeddings(20000, 64, image_only_factors=4)
    >>> c = conditioning(fs.Moments(64).update(x, y)._core, 0.1)
    >>> c["i2t"]["degenerate"], c["i2t"]["blocks"][0]["modes"]
    (True, [1, 5])
    """
    n = moments_core.count
    out: dict[str, Any] = {"se_method": "delete-a-block jackknife" if eigenvalue_se else
                           "asymptotic l_k sqrt(2/n) (Gaussian rows, independent)", "separation": separation}
    analysis = _core.analyze(moments_core, threads=1, spectral_only=True)
    for direction in ("i2t", "t2i"):
        l = np.asarray(analysis[direction]["eigenvalues"], dtype=np.float64)
        rho = np.asarray(analysis[direction]["rho"], dtype=np.float64)
        se = (np.asarray(eigenvalue_se[direction], dtype=np.float64) if eigenvalue_se
              else l * math.sqrt(2.0 / max(n, 1)))
        kept = int(np.sum(l >= _core.quantile_linear(l, p=1.0 - topq)))
        blocks = eigen_blocks(l, se, kept, separation)
        ca, cb, cab = _covariances(moments_core, direction)
        lv, vv = _eigh_desc(ca)
        value, rows = companion_score(ca, cb, cab, lv, vv, blocks, kept, detail=True)
        wide = []
        for (start, stop), row in zip([b for b in blocks if b[0] < kept], rows):
            if stop - start < 2:
                continue
            wide.append({"modes": [start + 1, stop], "eigenvalues": l[start:stop].tolist(),
                         "se": se[start:stop].tolist(), "straddles_cut": bool(start < kept < stop),
                         "share_of_variance": float(l[start:stop].sum() / l.sum()) if l.sum() > 0 else 0.0,
                         "canonical_correlations": row["canonical_correlations"],
                         "rho": np.abs(rho[start:stop]).tolist()})
        out[direction] = {"sas": float(_core.sas_from_profile(eigenvalues=l, rho=rho, q=topq)),
                          "companion": value, "kept": kept, "blocks": wide, "degenerate": bool(wide),
                          "mode_blocks": [list(b) for b in blocks]}
    return out
