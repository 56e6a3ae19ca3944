"""Delete-a-block jackknife intervals of SAS (both ways), the imbalance and CKA, from
per-block moments: each block's state is merged with every other block's, never
subtracted, so the leave-one-out states are exact (docs/definitions.md, "Audits"). The
same formulas serve any statistic with leave-one-out replicates (:func:`interval`), and
intervals of bounded metrics are clipped to their range."""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from fastsas import _core
from fastsas.moments import Moments

__all__ = ["JACKKNIFE_METRICS", "RANGES", "interval", "jackknife", "leave_one_out", "merge_all"]

JACKKNIFE_METRICS = ("sas_i2t", "sas_t2i", "sas_imbalance", "cka")

# The range of each bounded statistic: its interval is clipped to it.
RANGES = {"sas_i2t": (0.0, 1.0), "sas_t2i": (0.0, 1.0), "sas_imbalance": (-1.0, 1.0), "cka": (0.0, 1.0),
          "cka_unbiased": (-1.0, 1.0), "sas_companion_i2t": (0.0, 1.0), "sas_companion_t2i": (0.0, 1.0), "recall": (0.0, 1.0)}


def _scores(moments_core, topq: float, threads: int, eigenvalues: bool = False) -> dict[str, Any]:
    a = _core.analyze(moments_core, threads=threads, spectral_only=True)
    i2t = float(_core.sas_from_profile(eigenvalues=a["i2t"]["eigenvalues"], rho=a["i2t"]["rho"], q=topq))
    t2i = float(_core.sas_from_profile(eigenvalues=a["t2i"]["eigenvalues"], rho=a["t2i"]["rho"], q=topq))
    out: dict[str, Any] = {"sas_i2t": i2t, "sas_t2i": t2i, "sas_imbalance": i2t - t2i, "cka": float(a["cka"])}
    cka_u, undefined = Moments._from_core(moments_core).unbiased_cka()
    if undefined is None:
        out["cka_unbiased"] = cka_u
    if eigenvalues:
        out["eigenvalues"] = {k: np.asarray(a[k]["eigenvalues"], dtype=np.float64) for k in ("i2t", "t2i")}
    return out


def interval(value: float, replicates: Sequence[float], bounds: tuple[float, float] | None = None) -> dict:
    """The delete-a-block jackknife of one statistic from its leave-one-out replicates:
    ``value``, ``se``, ``ci_low``, ``ci_high`` (95%, Student t with B - 1 degrees of
    freedom), the interval clipped to `bounds` when given (``clipped`` says whether it was).

    Parameters
    ----------
    value : float
        The statistic on every row.
    replicates : sequence of float
        The statistic without each block (B >= 2 values).
    bounds : (float, float) or None
        The statistic's range.

    Returns
    -------
    dict
        ``value``, ``se``, ``ci_low``, ``ci_high``, and ``clipped`` when `bounds` are given.

    Examples
    --------
    >>> from fastsas.audit import interval
    >>> out = interval(0.99, [0.98, 1.0, 0.99, 0.97, 1.0], bounds=(0.0, 1.0))
    >>> out["ci_high"], out["clipped"]
    (1.0, True)
    """
    from scipy import stats

    values = np.asarray(replicates, dtype=np.float64)
    count = values.size
    if count < 2:
        raise ValueError("the jackknife needs at least 2 blocks")
    se = math.sqrt((count - 1) / count * float(np.sum((values - values.mean()) ** 2)))
    t_crit = float(stats.t.ppf(0.975, count - 1))
    low, high = value - t_crit * se, value + t_crit * se
    out = {"value": value, "se": se, "ci_low": low, "ci_high": high}
    if bounds is not None:
        out["ci_low"], out["ci_high"] = max(low, bounds[0]), min(high, bounds[1])
        out["clipped"] = bool(out["ci_low"] != low or out["ci_high"] != high)
    return out


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


def merge_all(states: Sequence):
    """One core Moments: the merge of `states` (a copy of the first, the rest merged in)."""
    out = states[0].copy()
    for s in states[1:]:
        out.merge(s)
    return out


def _merged(a, b):
    out = a.copy()
    out.merge(b)
    return out


def jackknife(blocks: Sequence, topq: float, threads: int, full: dict[str, float], *,
              extra: Callable[[Any], dict[str, float]] | None = None, eigenvalues: bool = False,
              replicates: bool = False, progress: Any = None) -> dict:
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
        The full-archive values of JACKKNIFE_METRICS (e.g. :func:`fastsas.alignment`), and of
        the statistics `extra` returns.
    extra : callable or None
        ``extra(moments) -> {name: value}``: more statistics of a leave-one-out state, given
        intervals too.
    eigenvalues : bool, default False
        Also the jackknife standard error of every anchor eigenvalue (``eigenvalue_se``:
        per direction a list, modes by decreasing eigenvalue).
    replicates : bool, default False
        Also every statistic's leave-one-out values (``replicates``).
    progress : callable or None
        ``progress(iterable, description, total)``: the leave-one-out states, one by one.

    Returns
    -------
    dict
        ``blocks``, ``method``, ``confidence`` (0.95); per metric of JACKKNIFE_METRICS (and of
        `extra`) a dict of ``value``, ``se``, ``ci_low``, ``ci_high``, ``clipped`` (intervals
        of bounded metrics are clipped to their range, RANGES); ``imbalance_test``: ``t``,
        ``df``, ``p_value``, ``null``.

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
    loo = []
    states = leave_one_out(blocks)
    if progress is not None:
        states = progress(states, f"jackknife ({count} blocks left out in turn)", count)
    for m in states:
        scores = _scores(m, topq, threads, eigenvalues)
        if extra is not None:
            scores.update(extra(m))
        loo.append(scores)
    out: dict[str, Any] = {"blocks": count, "method": "delete-a-block jackknife", "confidence": 0.95}
    keys = list(JACKKNIFE_METRICS) + [k for k in loo[0] if k not in JACKKNIFE_METRICS and k != "eigenvalues"]
    # The unbiased CKA gets an interval where it is defined on the archive and on every
    # leave-one-out state (docs/definitions.md); elsewhere it is left out, never NaN.
    if "cka_unbiased" in keys and ("cka_unbiased" not in full or not all("cka_unbiased" in s for s in loo)):
        keys.remove("cka_unbiased")
    for key in keys:
        out[key] = interval(full[key], [s[key] for s in loo], RANGES.get(key))
    imb = out["sas_imbalance"]
    t_stat = imb["value"] / imb["se"] if imb["se"] > 0 else math.copysign(math.inf, imb["value"] or 1.0)
    p_value = float(2.0 * stats.t.sf(abs(t_stat), count - 1)) if math.isfinite(t_stat) else 0.0
    out["imbalance_test"] = {"t": t_stat, "df": count - 1, "p_value": p_value,
                             "null": "SAS(I->T) == SAS(T->I)"}
    if eigenvalues:
        out["eigenvalue_se"] = {}
        for direction in ("i2t", "t2i"):
            values = np.stack([s["eigenvalues"][direction] for s in loo])
            values = -np.sort(-values, axis=1)
            se = np.sqrt((count - 1) / count * np.sum((values - values.mean(axis=0)) ** 2, axis=0))
            out["eigenvalue_se"][direction] = se.tolist()
    if replicates:
        out["replicates"] = {k: [s[k] for s in loo] for k in keys}
    return out
