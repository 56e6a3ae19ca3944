"""The statistics of a study (docs/definitions.md, "Studies"), on grids of cell values: one
row per model, one column per dataset, NaN where a cell is missing.

Every test says what its unit of replication is: the cells (the SAS paper's pooled tests,
which treat the cells of one model, or of one dataset, as independent), the models (with
the datasets fixed: stratified permutation tests, paired bootstraps over models), or the
datasets (exact permutation of the domain labels over datasets). Tests come from
scipy.stats where it has them; the permutation tests and the bootstrap are written here.
"""
from __future__ import annotations

import functools
import itertools
import math
from typing import Any, Callable, Sequence

import numpy as np

from fastsas._multiple_tests import CORRECTIONS, adjust_pvalues  # re-exported: the study's corrections

__all__ = ["ALTERNATIVES", "CORRECTIONS", "EXACT_SPEARMAN_MAX", "adjust_pvalues", "bootstrap_models", "dataset_permutation",
           "mann_whitney", "one_sample_t", "percentile_interval", "sign_consistency", "spearman", "spearman_rows",
           "stratified_domain_permutation", "stratified_spearman_permutation"]

ALTERNATIVES = ("two-sided", "greater", "less")


def _check_alternative(alternative: str) -> str:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    return alternative


def _finite(values: Any) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    return v[np.isfinite(v)]


def mann_whitney(a: Sequence[float], b: Sequence[float], alternative: str = "two-sided") -> dict:
    """The Mann-Whitney U test of two samples (scipy.stats.mannwhitneyu; NaN dropped).

    Parameters
    ----------
    a, b : sequence of float
        The two samples (each needs 2 values or more).
    alternative : {"two-sided", "greater", "less"}, default "two-sided"
        "greater": the values of `a` tend to exceed those of `b`.

    Returns
    -------
    dict
        ``u`` (the U statistic of `a`), ``p_value``, ``n_a``, ``n_b``, ``alternative``,
        ``rank_biserial`` = 2 U / (n_a n_b) - 1 (from -1 to 1: the effect size). NaN with
        fewer than 2 values on a side.

    Examples
    --------
    >>> from fastsas.study.stats import mann_whitney
    >>> r = mann_whitney([5, 6, 7, 8], [1, 2, 3, 4], "greater")
    >>> r["u"], round(r["p_value"], 4), r["rank_biserial"]
    (16.0, 0.0143, 1.0)
    """
    from scipy import stats

    _check_alternative(alternative)
    x, y = _finite(a), _finite(b)
    out = {"u": math.nan, "p_value": math.nan, "n_a": int(x.size), "n_b": int(y.size), "alternative": alternative,
           "rank_biserial": math.nan}
    if x.size < 2 or y.size < 2:
        return out
    res = stats.mannwhitneyu(x, y, alternative=alternative)
    out.update(u=float(res.statistic), p_value=float(res.pvalue),
               rank_biserial=2.0 * float(res.statistic) / (x.size * y.size) - 1.0)
    return out


def one_sample_t(values: Sequence[float], mu: float = 0.0, alternative: str = "two-sided") -> dict:
    """The one-sample t test of the mean (scipy.stats.ttest_1samp; NaN dropped).

    Parameters
    ----------
    values : sequence of float
        The sample (its units: cells, or one value per model).
    mu : float, default 0
        The mean under the null hypothesis.
    alternative : {"two-sided", "greater", "less"}, default "two-sided"
        The alternative hypothesis on the mean.

    Returns
    -------
    dict
        ``n``, ``mean``, ``sd`` (ddof 1), ``t``, ``df``, ``p_value``; NaN with fewer than 2
        values (or no spread: t is then +-inf and p 0 when the mean differs from `mu`).

    Examples
    --------
    >>> from fastsas.study.stats import one_sample_t
    >>> r = one_sample_t([0.1, 0.2, 0.3])
    >>> round(r["t"], 4), round(r["p_value"], 4)
    (3.4641, 0.0742)
    """
    from scipy import stats

    _check_alternative(alternative)
    v = _finite(values)
    out = {"n": int(v.size), "mean": float(v.mean()) if v.size else math.nan,
           "sd": float(v.std(ddof=1)) if v.size > 1 else math.nan, "t": math.nan, "df": max(int(v.size) - 1, 0),
           "p_value": math.nan, "alternative": alternative, "null": f"mean == {mu:g}"}
    if v.size < 2:
        return out
    if out["sd"] <= 1e-13 * abs(out["mean"]):  # no spread beyond rounding: t is not a t statistic
        out["sd"] = 0.0
        if out["mean"] == mu:
            return out
        t = math.copysign(math.inf, out["mean"] - mu)
        wrong = (alternative == "greater" and t < 0) or (alternative == "less" and t > 0)
        out.update(t=t, p_value=1.0 if wrong else 0.0)
        return out
    res = stats.ttest_1samp(v, mu, alternative=alternative)
    out.update(t=float(res.statistic), p_value=float(res.pvalue))
    return out


def _tail(null: np.ndarray, observed: float, alternative: str) -> np.ndarray:
    """Which null statistics are at least as extreme as `observed` (a relative tolerance
    keeps ties, which are exact in exact arithmetic, counted despite rounding)."""
    tol = 1e-12 * max(1.0, abs(observed))
    if alternative == "greater":
        return null >= observed - tol
    if alternative == "less":
        return null <= observed + tol
    return np.abs(null) >= abs(observed) - tol


def _row_differences(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """mean of values where labels, minus mean where not; labels (..., k) bool."""
    n_a = labels.sum(axis=-1)
    return (values * labels).sum(axis=-1) / n_a - (values * ~labels).sum(axis=-1) / (labels.shape[-1] - n_a)


def stratified_domain_permutation(grid: np.ndarray, in_a: Sequence[bool], in_b: Sequence[bool], *,
                                  alternative: str = "two-sided", permutations: int = 10000,
                                  rng: np.random.Generator | None = None) -> dict:
    """Domain difference with the models as units and the datasets fixed: a permutation test
    stratified by model.

    For each model (row), ``d_m`` = the mean of its cells in domain A minus the mean of its
    cells in domain B; the statistic is the mean of ``d_m`` over the models that have cells
    in both. Null hypothesis: within each model, its cells' values do not depend on the
    domain (their domain labels are exchangeable among that model's datasets); the labels are
    permuted within each model, independently across models. Exact (every relabelling) when
    there are at most `permutations` of them, else Monte Carlo with p = (1 + extreme) /
    (1 + permutations).

    Parameters
    ----------
    grid : ndarray, shape (models, datasets)
        Cell values, NaN where missing.
    in_a, in_b : sequence of bool, one per dataset
        Which datasets are in domain A and in domain B (neither: left out).
    alternative : {"two-sided", "greater", "less"}, default "two-sided"
        "greater": A above B.
    permutations : int, default 10000
        Monte Carlo relabellings (and the limit for the exact test).
    rng : numpy.random.Generator or None
        The random generator (None: seed 0).

    Returns
    -------
    dict
        ``statistic``, ``p_value``, ``alternative``, ``units`` (models used), ``exact``,
        ``permutations`` (relabellings evaluated), ``per_model`` (each used model's d_m,
        NaN for the others), ``unit`` = "model", ``null``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsas.study.stats import stratified_domain_permutation
    >>> grid = np.array([[0.9, 0.8, 0.5, 0.4], [0.7, 0.8, 0.4, 0.3], [0.8, 0.9, 0.3, 0.4]])
    >>> r = stratified_domain_permutation(grid, [1, 1, 0, 0], [0, 0, 1, 1], alternative="greater")
    >>> round(r["statistic"], 4), r["exact"], round(r["p_value"], 4)
    (0.4333, True, 0.0046)
    """
    _check_alternative(alternative)
    rng = rng if rng is not None else np.random.default_rng(0)
    g = np.asarray(grid, dtype=np.float64)
    a, b = np.asarray(in_a, dtype=bool), np.asarray(in_b, dtype=bool)
    rows = []
    per_model = np.full(g.shape[0], np.nan)
    for r in range(g.shape[0]):
        usable = np.isfinite(g[r]) & (a | b)
        labels = a[usable]
        if labels.any() and (~labels).any():
            rows.append((r, g[r, usable], labels))
            per_model[r] = _row_differences(g[r, usable], labels)
    out = {"statistic": math.nan, "p_value": math.nan, "alternative": alternative, "units": len(rows),
           "exact": False, "permutations": 0, "per_model": per_model.tolist(), "unit": "model",
           "null": "within each model, values do not depend on the domain of the dataset"}
    if not rows:
        return out
    observed = float(np.mean([per_model[r] for r, _, _ in rows]))
    sizes = [math.comb(len(labels), int(labels.sum())) for _, _, labels in rows]
    total = math.prod(sizes)
    if total <= permutations:
        choices = []
        for _, values, labels in rows:
            k, n_a = len(labels), int(labels.sum())
            masks = np.zeros((math.comb(k, n_a), k), dtype=bool)
            for i, idx in enumerate(itertools.combinations(range(k), n_a)):
                masks[i, list(idx)] = True
            choices.append(_row_differences(values[None, :], masks))
        null = np.zeros(total)
        for i, combo in enumerate(itertools.product(*choices)):
            null[i] = sum(combo) / len(rows)
        p = float(np.mean(_tail(null, observed, alternative)))
        out.update(exact=True, permutations=int(total))
    else:
        null = np.zeros(permutations)
        for _, values, labels in rows:
            keys = rng.random((permutations, len(labels)))
            shuffled = labels[np.argsort(keys, axis=1)]
            null += _row_differences(values[None, :], shuffled)
        null /= len(rows)
        p = float((1 + np.sum(_tail(null, observed, alternative))) / (1 + permutations))
        out["permutations"] = int(permutations)
    out.update(statistic=observed, p_value=p)
    return out


def dataset_permutation(means: Sequence[float], in_a: Sequence[bool], in_b: Sequence[bool], *,
                        alternative: str = "two-sided") -> dict:
    """Domain difference with the datasets as units: the exact permutation test of the
    difference of domain means of the per-dataset means, over every assignment of the domain
    labels to the datasets.

    With few datasets the test cannot reach small p-values: ``min_p`` is the smallest p any
    assignment could give (1/3 two-sided, 1/6 one-sided with two datasets per domain).

    Parameters
    ----------
    means : sequence of float, one per dataset
        Each dataset's value (its mean over models), NaN for none.
    in_a, in_b : sequence of bool
        Domain membership of each dataset.
    alternative : {"two-sided", "greater", "less"}, default "two-sided"
        "greater": A above B.

    Returns
    -------
    dict
        ``statistic`` (mean over A datasets - mean over B datasets), ``p_value``, ``min_p``,
        ``assignments``, ``units`` (datasets), ``unit`` = "dataset", ``alternative``, ``null``.

    Examples
    --------
    >>> from fastsas.study.stats import dataset_permutation
    >>> r = dataset_permutation([0.9, 0.8, 0.4, 0.3], [1, 1, 0, 0], [0, 0, 1, 1], alternative="greater")
    >>> r["assignments"], round(r["p_value"], 4), round(r["min_p"], 4)
    (6, 0.1667, 0.1667)
    """
    _check_alternative(alternative)
    m = np.asarray(means, dtype=np.float64)
    a, b = np.asarray(in_a, dtype=bool), np.asarray(in_b, dtype=bool)
    usable = np.isfinite(m) & (a | b)
    values, labels = m[usable], a[usable]
    out = {"statistic": math.nan, "p_value": math.nan, "min_p": math.nan, "assignments": 0,
           "units": int(usable.sum()), "unit": "dataset", "alternative": alternative,
           "null": "the domain labels are exchangeable across datasets"}
    k, n_a = len(labels), int(labels.sum())
    if n_a == 0 or n_a == k:
        return out
    masks = np.zeros((math.comb(k, n_a), k), dtype=bool)
    for i, idx in enumerate(itertools.combinations(range(k), n_a)):
        masks[i, list(idx)] = True
    null = _row_differences(values[None, :], masks)
    observed = float(_row_differences(values, labels))
    p_each = np.array([np.mean(_tail(null, t, alternative)) for t in null])
    out.update(statistic=observed, p_value=float(np.mean(_tail(null, observed, alternative))),
               min_p=float(p_each.min()), assignments=int(len(null)))
    return out


EXACT_SPEARMAN_MAX = 9


@functools.lru_cache(maxsize=None)
def _spearman_null(n: int) -> np.ndarray:
    """|rho| of every permutation of n distinct ranks (the exact null distribution), sorted."""
    perms = np.array(list(itertools.permutations(range(n))), dtype=np.int64)
    d2 = np.sum((perms - np.arange(n)) ** 2, axis=1)
    return np.sort(np.abs(1.0 - 6.0 * d2 / (n * (n * n - 1.0))))


def spearman(x: Sequence[float], y: Sequence[float]) -> dict:
    """Spearman's rank correlation of the finite pairs (scipy.stats.spearmanr); NaN with
    fewer than 3 pairs or a constant side. The two-sided p-value is exact (every
    permutation of the ranks) for at most EXACT_SPEARMAN_MAX pairs without ties, else
    scipy's t approximation (``p_method`` says which).

    Parameters
    ----------
    x, y : sequence of float
        Paired values.

    Returns
    -------
    dict
        ``rho``, ``p_value``, ``n``, ``p_method`` ("exact" or "t approximation").

    Examples
    --------
    >>> from fastsas.study.stats import spearman
    >>> r = spearman([1, 2, 3, 4, 5], [2, 4, 5, 9, 10])
    >>> round(r["rho"], 12), r["n"], round(r["p_value"], 4), r["p_method"]
    (1.0, 5, 0.0167, 'exact')
    """
    from scipy import stats

    a, b = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    out = {"rho": math.nan, "p_value": math.nan, "n": int(a.size), "p_method": None}
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return out
    res = stats.spearmanr(a, b)
    rho = float(res.statistic)
    out.update(rho=rho, p_value=float(res.pvalue), p_method="t approximation")
    if a.size <= EXACT_SPEARMAN_MAX and np.unique(a).size == a.size and np.unique(b).size == b.size:
        null = _spearman_null(int(a.size))
        extreme = null.size - np.searchsorted(null, abs(rho) - 1e-12 * max(1.0, abs(rho)), side="left")
        out.update(p_value=float(extreme / null.size), p_method="exact")
    return out


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair of two (r, n) arrays, over the columns where both are
    finite (average ranks for ties); NaN for a row with fewer than 3 such columns or a
    constant side. Vectorised (the bootstrap and permutation tests call it on thousands of rows).

    Parameters
    ----------
    x, y : ndarray, shape (r, n)
        The paired values, row by row (broadcast against each other).

    Returns
    -------
    ndarray, shape (r,)

    Examples
    --------
    >>> import numpy as np
    >>> from fastsas.study.stats import spearman_rows
    >>> spearman_rows(np.array([[1., 2, 3, 4], [1, 2, 3, 4]]), np.array([[1., 3, 2, 4], [4, 3, 2, 1]])).tolist()
    [0.8, -1.0]
    """
    from scipy import stats

    x, y = np.broadcast_arrays(np.atleast_2d(np.asarray(x, dtype=np.float64)),
                               np.atleast_2d(np.asarray(y, dtype=np.float64)))
    ok = np.isfinite(x) & np.isfinite(y)
    xs, ys = np.where(ok, x, np.nan), np.where(ok, y, np.nan)
    rx = stats.rankdata(xs, axis=1, nan_policy="omit")
    ry = stats.rankdata(ys, axis=1, nan_policy="omit")
    n = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = np.where(ok, rx - np.nansum(rx, axis=1, keepdims=True) / n[:, None], 0.0)
        cy = np.where(ok, ry - np.nansum(ry, axis=1, keepdims=True) / n[:, None], 0.0)
        num = (cx * cy).sum(axis=1)
        den = np.sqrt((cx * cx).sum(axis=1) * (cy * cy).sum(axis=1))
        rho = num / den
    rho[(n < 3) | ~(den > 0)] = np.nan
    return np.clip(rho, -1.0, 1.0)


def bootstrap_models(models: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, models) row indices: models drawn with replacement, the unit of a
    bootstrap over models (each draw keeps all of a model's cells together).

    Parameters
    ----------
    models : int
        How many models.
    resamples : int
        Bootstrap resamples.
    rng : numpy.random.Generator
        The random generator.

    Returns
    -------
    ndarray of int64

    Examples
    --------
    >>> import numpy as np
    >>> from fastsas.study.stats import bootstrap_models
    >>> bootstrap_models(5, 3, np.random.default_rng(0)).shape
    (3, 5)
    """
    return rng.integers(0, models, size=(resamples, models))


def percentile_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap values (NaN resamples dropped); (NaN, NaN) when
    none is finite.

    Parameters
    ----------
    values : sequence of float
        Bootstrap replicates.
    confidence : float, default 0.95
        The coverage.

    Returns
    -------
    tuple of float
        (low, high).

    Examples
    --------
    >>> from fastsas.study.stats import percentile_interval
    >>> [round(v, 6) for v in percentile_interval(range(101))]
    [2.5, 97.5]
    """
    v = _finite(values)
    if v.size == 0:
        return math.nan, math.nan
    half = 50.0 * (1.0 - confidence)
    return float(np.percentile(v, half)), float(np.percentile(v, 100.0 - half))


def stratified_spearman_permutation(x: np.ndarray, y: np.ndarray, *, permutations: int = 10000,
                                    rng: np.random.Generator | None = None,
                                    statistic: Callable[[np.ndarray], np.ndarray] | None = None) -> dict:
    """Association within datasets, the models as units: the permutation test of the mean
    over datasets of Spearman's rho between two grids, stratified by dataset.

    Null hypothesis: within every dataset, the metric is unrelated to the target (the
    metric's values are permuted among the models of each dataset, independently across
    datasets). Two-sided, Monte Carlo: p = (1 + |T*| >= |T|) / (1 + permutations).

    Parameters
    ----------
    x, y : ndarray, shape (models, datasets)
        The metric and the target, NaN where missing.
    permutations : int, default 10000
        Relabellings.
    rng : numpy.random.Generator or None
        The random generator (None: seed 0).
    statistic : callable or None
        How per-dataset rhos (an array (..., datasets)) combine: default their mean.

    Returns
    -------
    dict
        ``statistic``, ``p_value``, ``datasets`` (with 3 models or more), ``permutations``,
        ``unit`` = "model, within dataset", ``null``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsas.study.stats import stratified_spearman_permutation
    >>> x = np.tile(np.arange(8.0)[:, None], (1, 3))
    >>> r = stratified_spearman_permutation(x, x ** 2, permutations=999)
    >>> r["statistic"], r["p_value"] < 0.01
    (1.0, True)
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    combine = statistic or (lambda rhos: np.nanmean(rhos, axis=-1))
    gx, gy = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    observed_rhos, null_rhos = [], []
    for s in range(gx.shape[1]):
        ok = np.isfinite(gx[:, s]) & np.isfinite(gy[:, s])
        if ok.sum() < 3:
            continue
        xs, ys = gx[ok, s], gy[ok, s]
        observed_rhos.append(spearman_rows(xs[None, :], ys[None, :])[0])
        order = np.argsort(rng.random((permutations, xs.size)), axis=1)
        null_rhos.append(spearman_rows(xs[order], ys[None, :]))
    out = {"statistic": math.nan, "p_value": math.nan, "datasets": len(observed_rhos), "permutations": permutations,
           "unit": "model, within dataset", "null": "within every dataset the metric is unrelated to the target"}
    if not observed_rhos:
        return out
    with np.errstate(invalid="ignore"):
        observed = float(combine(np.array(observed_rhos)))
        null = np.asarray(combine(np.stack(null_rhos, axis=-1)))
    if not math.isfinite(observed):
        return out
    null = null[np.isfinite(null)]
    p = float((1 + np.sum(_tail(null, observed, "two-sided"))) / (1 + null.size))
    out.update(statistic=observed, p_value=p)
    return out


def sign_consistency(values: Sequence[float]) -> dict:
    """Whether a sample is all of one sign, and the exact two-sided sign test of the null
    hypothesis that positive and negative values are equally likely (scipy.stats.binomtest;
    zeros dropped).

    Parameters
    ----------
    values : sequence of float
        E.g. the imbalance of every model on one dataset.

    Returns
    -------
    dict
        ``n``, ``positive``, ``negative``, ``all_positive``, ``all_negative``, ``sign``
        ("positive", "negative" or "mixed"), ``sign_test_p``.

    Examples
    --------
    >>> from fastsas.study.stats import sign_consistency
    >>> r = sign_consistency([-0.1, -0.2, -0.05, -0.3, -0.1, -0.2])
    >>> r["sign"], round(r["sign_test_p"], 4)
    ('negative', 0.0312)
    """
    from scipy import stats

    v = _finite(values)
    pos, neg = int(np.sum(v > 0)), int(np.sum(v < 0))
    p = float(stats.binomtest(pos, pos + neg, 0.5).pvalue) if pos + neg else math.nan
    sign = "positive" if pos and not neg else "negative" if neg and not pos else "mixed"
    return {"n": int(v.size), "positive": pos, "negative": neg, "all_positive": bool(v.size and pos == v.size),
            "all_negative": bool(v.size and neg == v.size), "sign": sign, "sign_test_p": p}
