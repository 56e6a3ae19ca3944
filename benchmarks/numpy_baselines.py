"""NumPy baselines for the benchmarks: the floor (only the irreducible work) and the
straightforward way a user computes the SAS family."""
from __future__ import annotations

import numpy as np


def floor_alignment(z: np.ndarray, d: int) -> None:
    """The irreducible work of the full alignment dict: the joint second moments of
    Z = [X Y] (one SYRK) and eigh of the four d x d matrices the metrics need (two
    covariances, two correlation matrices), in the input's precision."""
    g = z.T @ z  # NumPy detects the transposed self-product and calls SYRK
    cx, cy = g[:d, :d], g[d:, d:]
    for c in (cx, cy):
        np.linalg.eigh(c)
        s = 1.0 / np.sqrt(np.diag(c))
        np.linalg.eigh(c * s[:, None] * s[None, :])


def _sas_direction(a: np.ndarray, b: np.ndarray, q: float) -> float:
    ac, bc = a - a.mean(0), b - b.mean(0)
    cov = np.cov(ac, rowvar=False, bias=True)
    l, v = np.linalg.eigh(cov)
    l, v = np.clip(l[::-1], 0, None), v[:, ::-1]
    pa, pb = ac @ v, bc @ v  # project both modalities onto the anchor eigenbasis
    cross = (pa * pb).mean(0)
    var_b = (pb * pb).mean(0)
    rho = cross / np.sqrt(l * var_b + 1e-8)
    keep = l >= np.quantile(l, 1 - q)
    return float(np.clip(np.sum(l[keep] * np.abs(rho[keep])) / np.sum(l[keep]), 0, 1))


def sas_family_straightforward(x: np.ndarray, y: np.ndarray, q: float = 0.1) -> dict:
    """SAS(I->T), SAS(T->I), SAS(sym), CKA and CORAL the way a user writes them."""
    i2t, t2i = _sas_direction(x, y, q), _sas_direction(y, x, q)
    xc, yc = x - x.mean(0), y - y.mean(0)
    cka = np.linalg.norm(xc.T @ yc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    coral = np.linalg.norm(np.cov(x, rowvar=False) - np.cov(y, rowvar=False))
    return {"sas_i2t": i2t, "sas_t2i": t2i, "sas_sym": (i2t + t2i) / 2, "cka": float(cka), "coral": float(coral)}
