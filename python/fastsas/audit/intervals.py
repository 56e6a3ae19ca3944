"""Delete-a-block jackknife intervals from per-block moments: each block's state is merged
with every other block's, never subtracted, so the leave-one-out states are exact
(docs/definitions.md, "Audits"). Intervals of bounded metrics are clipped to their range.

- :func:`jackknife`: the audit's intervals of SAS (both ways), the imbalance and CKA;
- :func:`interval`: the interval and t test of any one statistic from its leave-one-out
  values (:func:`t_test` the test's one rule);
- :func:`paired_jackknife`: the interval and test of the difference of a statistic between
  two archives of the same items (two models on one dataset), over the same blocks;
  :func:`paired_difference` is the same from leave-one-out values already computed (what
  ``fastsas compare`` and the study's model comparisons use)."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from fastsas import _core
from fastsas.moments import Moments

__all__ = ["JACKKNIFE_METRICS", "RANGES", "interval", "jackknife", "leave_one_out", "merge_all", "paired_difference",
           "paired_jackknife", "t_test"]

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


def t_test(value: float, se: float, df: int) -> tuple[float, float]:
    """(t, two-sided p) of `value` against 0 with standard error `se` and `df` degrees of
    freedom, Student t; a zero standard error gives t = +-inf and p = 0, or t = 0 and p = 1
    for a zero value (no spread and nothing to test: e.g. a model against itself).

    Examples
    --------
    >>> from fastsas.audit.intervals import t_test
    >>> t, p = t_test(2.0, 1.0, 9)
    >>> t, round(p, 4), t_test(0.0, 0.0, 9)
    (2.0, 0.0766, (0.0, 1.0))
    """
    from scipy import stats

    if se > 0:
        t = value / se
        return t, float(2.0 * stats.t.sf(abs(t), df))
    return (math.copysign(math.inf, value) if value else 0.0), (0.0 if value else 1.0)


def interval(value: float, replicates: Sequence[float], bounds: tuple[float, float] | None = None, *,
             confidence: float = 0.95) -> dict:
    """The delete-a-block jackknife of one statistic from its leave-one-out values
    (docs/definitions.md, "Audits"): standard error, Student-t interval around `value`
    (clipped to `bounds` when given), and the t test of the null hypothesis that the
    statistic is 0.

    Parameters
    ----------
    value : float
        The statistic on all blocks.
    replicates : sequence of float, length B >= 2
        The statistic with each block left out in turn (the same blocks, in any order).
    bounds : (float, float) or None
        The statistic's range: the interval is clipped to it.
    confidence : float, default 0.95
        The interval's coverage, in (0, 1).

    Returns
    -------
    dict
        ``value``, ``se`` = sqrt((B - 1) / B * sum_b (replicate_b - mean)^2), ``ci_low``,
        ``ci_high`` (value -/+ t_{(1 + confidence) / 2, B - 1} se), ``t`` and ``p_value``
        (:func:`t_test` of value / se, B - 1 degrees of freedom), ``df`` = B - 1, ``blocks`` =
        B, and with `bounds` ``clipped`` (whether the interval was). With a non-finite value
        or replicate every number but ``value`` is NaN.

    Raises
    ------
    ValueError
        With fewer than 2 replicates, or `confidence` outside (0, 1).

    Examples
    --------
    >>> from fastsas.audit import interval
    >>> out = interval(1.0, [0.9, 1.1, 1.0, 1.0])
    >>> round(out["se"], 6), out["df"], out["ci_low"] < 1.0 < out["ci_high"]
    (0.122474, 3, True)
    >>> out = interval(0.99, [0.98, 1.0, 0.99, 0.97, 1.0], bounds=(0.0, 1.0))
    >>> out["ci_high"], out["clipped"]
    (1.0, True)
    """
    from scipy import stats

    values = np.asarray(replicates, dtype=np.float64).ravel()
    count = values.size
    if count < 2:
        raise ValueError(f"the jackknife needs at least 2 blocks (leave-one-out values), got {count}")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    value = float(value)
    out = {"value": value, "se": math.nan, "ci_low": math.nan, "ci_high": math.nan, "t": math.nan,
           "df": count - 1, "p_value": math.nan, "blocks": count}
    if bounds is not None:
        out["clipped"] = False
    if not (np.isfinite(values).all() and math.isfinite(value)):
        return out
    se = math.sqrt((count - 1) / count * float(np.sum((values - values.mean()) ** 2)))
    t_crit = float(stats.t.ppf(0.5 + 0.5 * float(confidence), count - 1))
    low, high = value - t_crit * se, value + t_crit * se
    t_stat, p_value = t_test(value, se, count - 1)
    out.update(se=se, ci_low=low, ci_high=high, t=t_stat, p_value=p_value)
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
    t_stat, p_value = t_test(imb["value"], imb["se"], count - 1)
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


def paired_difference(full_a: float, full_b: float, replicates_a: Sequence[float], replicates_b: Sequence[float],
                      confidence: float = 0.95) -> dict:
    """The paired jackknife of a difference ``theta_a - theta_b`` from the leave-one-out
    values of both statistics over the same blocks (block b left out of both): the jackknife
    of the per-block differences, so what the two share cancels.

    Parameters
    ----------
    full_a, full_b : float
        The statistic of each archive on all blocks.
    replicates_a, replicates_b : sequence of float, length B >= 2
        Their leave-one-out values, block b at position b in both.
    confidence : float, default 0.95
        The interval's coverage.

    Returns
    -------
    dict
        :func:`interval` of the difference (its ``t`` and ``p_value`` test the
        null hypothesis that the two statistics are equal), plus ``null``.

    Raises
    ------
    ValueError
        When the two have different numbers of blocks, or fewer than 2.

    Examples
    --------
    >>> from fastsas.audit import paired_difference
    >>> out = paired_difference(0.8, 0.5, [0.79, 0.81, 0.80], [0.49, 0.51, 0.50])
    >>> round(out["value"], 12), out["se"] < 1e-9
    (0.3, True)
    """
    a = np.asarray(replicates_a, dtype=np.float64).ravel()
    b = np.asarray(replicates_b, dtype=np.float64).ravel()
    if a.size != b.size:
        raise ValueError(f"a paired jackknife needs the same blocks on both sides: {a.size} leave-one-out values "
                         f"against {b.size}")
    out = interval(float(full_a) - float(full_b), a - b, confidence=confidence)
    out["null"] = "the two statistics are equal"
    return out


def paired_jackknife(blocks_a: Sequence, blocks_b: Sequence, statistic: Callable[[Any], Any], *,
                     confidence: float = 0.95) -> Any:
    """The paired delete-a-block jackknife of the difference of a statistic between two
    archives of the same items (e.g. two models' embeddings of one dataset), with the same
    blocks on both sides: block b is left out of both at once.

    Parameters
    ----------
    blocks_a, blocks_b : sequence of fastsas._core.Moments
        The per-block states of each archive, block b holding the same items in both (at
        least 2 blocks).
    statistic : callable
        ``statistic(core_moments) -> float`` (or a dict of floats: then every key is
        compared), computed on the merge of all blocks and of all blocks but one.
    confidence : float, default 0.95
        The interval's coverage.

    Returns
    -------
    dict
        :func:`paired_difference` of the statistic (``value`` = statistic(a) -
        statistic(b), ``se``, ``ci_low``, ``ci_high``, ``t``, ``df``, ``p_value``, ``blocks``,
        ``null``); with a dict-valued statistic, one such dict per key.

    Raises
    ------
    ValueError
        When the two sides have different numbers of blocks, or fewer than 2.

    Examples
    --------
    >>> import numpy as np, fastsas as fs
    >>> from fastsas.audit import paired_jackknife
    >>> x, y = fs.synthetic.paired_embeddings(2000, 16, image_only_factors=2, dtype=np.float64)
    >>> blocks = lambda a, b: [fs.Moments(16).update(a[i::10], b[i::10])._core for i in range(10)]
    >>> sas = lambda core: fs.Moments._from_core(core).alignment()["sas_i2t"]
    >>> noisier = y + np.random.default_rng(0).standard_normal(y.shape)
    >>> out = paired_jackknife(blocks(x, y), blocks(x, noisier), sas)  # model a aligns better
    >>> out["value"] > 0 and out["p_value"] < 0.05
    True
    """
    if len(blocks_a) != len(blocks_b):
        raise ValueError(f"a paired jackknife needs the same blocks on both sides: {len(blocks_a)} blocks against "
                         f"{len(blocks_b)}")
    if len(blocks_a) < 2:
        raise ValueError("the jackknife needs at least 2 blocks")
    full = [statistic(merge_all(list(blocks))) for blocks in (blocks_a, blocks_b)]
    loo = [[statistic(m) for m in leave_one_out(blocks)] for blocks in (blocks_a, blocks_b)]
    if isinstance(full[0], Mapping):
        return {key: paired_difference(full[0][key], full[1][key], [r[key] for r in loo[0]],
                                       [r[key] for r in loo[1]], confidence) for key in full[0]}
    return paired_difference(full[0], full[1], loo[0], loo[1], confidence)
