"""Delete-a-block jackknife intervals of SAS (both ways), the imbalance and CKA, from
per-block moments: each block's state is merged with every other block's, never
subtracted, so the leave-one-out states are exact (docs/definitions.md, "Audits")."""
from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import numpy as np

from fastsas import _core

__all__ = ["JACKKNIFE_METRICS", "jackknife", "leave_one_out"]

JACKKNIFE_METRICS = ("sas_i2t", "sas_t2i", "sas_imbalance", "cka")


def _scores(moments_core, topq: float, threads: int) -> dict[str, float]:
    a = _core.analyze(moments_core, threads=threads, spectral_only=True)
    i2t = float(_core.sas_from_profile(eigenvalues=a["i2t"]["eigenvalues"], rho=a["i2t"]["rho"], q=topq))
    t2i = float(_core.sas_from_profile(eigenvalues=a["t2i"]["eigenvalues"], rho=a["t2i"]["rho"], q=topq))
    return {"sas_i2t": i2t, "sas_t2i": t2i, "sas_imbalance": i2t - t2i, "cka": float(a["cka"])}


def leave_one_out(blocks: Sequence) -> Iterator:
    """For each block b, the merge of every other block: prefix and suffix merges, exact (no
    subtraction of moments), 3B merges in all.

    Parameters
    ----------
    blocks : sequence of fastsas._core.Moments
        The per-block states (at least 2).

    Yields
    ------
    fastsas._core.Moments
        The state of all blocks but b, for b = 0, 1, ...

    Examples
    --------
    >>> import fastsas as fs
    >>> from fastsas.audit import leave_one_out
    >>> x, y = fs.synthetic.paired_embeddings(300, 16)
    >>> blocks = [fs.Moments(16).update(x[i::3], y[i::3])._core for i in range(3)]
    >>> [m.count for m in leave_one_out(blocks)]
    [200, 200, 200]
    """
    count = len(blocks)
    suffix = [None] * (count + 1)
    for b in range(count - 1, -1, -1):
        nxt = suffix[b + 1]
        suffix[b] = blocks[b].copy() if nxt is None else _merged(blocks[b], nxt)
    prefix = None
    for b in range(count):
        rest = suffix[b + 1]
        if prefix is None:
            yield rest
        elif rest is None:
            yield prefix
        else:
            yield _merged(prefix, rest)
        prefix = blocks[b].copy() if prefix is None else _merged(prefix, blocks[b])


def _merged(a, b):
    out = a.copy()
    out.merge(b)
    return out


def jackknife(blocks: Sequence, topq: float, threads: int, full: dict[str, float]) -> dict:
    """The delete-a-block jackknife of SAS both ways, the imbalance and CKA
    (docs/definitions.md, "Audits").

    Parameters
    ----------
    blocks : sequence of fastsas._core.Moments
        The per-block states, at least 2.
    topq : float
        SAS's top fraction of anchor modes.
    threads : int
        Worker threads of the eigensolvers.
    full : dict
        The full-archive values of JACKKNIFE_METRICS (e.g. :func:`fastsas.alignment`).

    Returns
    -------
    dict
        ``blocks``, ``method``, ``confidence`` (0.95); per metric of JACKKNIFE_METRICS a dict
        of ``value``, ``se``, ``ci_low``, ``ci_high``; ``imbalance_test``: ``t``, ``df``,
        ``p_value``, ``null``.

    Raises
    ------
    ValueError
        With fewer than 2 blocks.

    Examples
    --------
    >>> import fastsas as fs
    >>> from fastsas.audit import jackknife
    >>> x, y = fs.synthetic.paired_embeddings(2000, 16, image_only_factors=2)
    >>> blocks = [fs.Moments(16).update(x[i::10], y[i::10])._core for i in range(10)]
    >>> out = jackknife(blocks, 0.1, 1, fs.alignment(x, y, backend="cpu"))
    >>> out["blocks"], out["sas_i2t"]["ci_low"] < out["sas_i2t"]["value"] < out["sas_i2t"]["ci_high"]
    (10, True)
    """
    from scipy import stats

    count = len(blocks)
    if count < 2:
        raise ValueError("the jackknife needs at least 2 blocks")
    loo = [_scores(m, topq, threads) for m in leave_one_out(blocks)]
    t_crit = float(stats.t.ppf(0.975, count - 1))
    out: dict[str, Any] = {"blocks": count, "method": "delete-a-block jackknife", "confidence": 0.95}
    for key in JACKKNIFE_METRICS:
        values = np.array([s[key] for s in loo])
        se = math.sqrt((count - 1) / count * float(np.sum((values - values.mean()) ** 2)))
        out[key] = {"value": full[key], "se": se, "ci_low": full[key] - t_crit * se,
                    "ci_high": full[key] + t_crit * se}
    imb = out["sas_imbalance"]
    t_stat = imb["value"] / imb["se"] if imb["se"] > 0 else math.copysign(math.inf, imb["value"] or 1.0)
    p_value = float(2.0 * stats.t.sf(abs(t_stat), count - 1)) if math.isfinite(t_stat) else 0.0
    out["imbalance_test"] = {"t": t_stat, "df": count - 1, "p_value": p_value,
                             "null": "SAS(I->T) == SAS(T->I)"}
    return out
