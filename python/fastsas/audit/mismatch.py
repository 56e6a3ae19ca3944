"""The suspected-mismatch test of an audit (docs/definitions.md, "Suspected mismatches").

For every unit (an id, or a pair), how far its matched similarity stands above what its
own non-matches give, in both directions, standardised by the mean and standard deviation
of the query's similarities to every non-matching row of the gallery. Those come exactly
from the moments of the unit rows (their sum and second moment): O(n d^2), never an n x n
matrix. The statistic of a mismatched unit is sampled exactly (a unit's images against
another unit's texts); the statistics of all units are a mixture of that known law and an
unknown law of the genuine units, fitted by maximum likelihood; a unit is flagged on its
posterior probability of being genuine, at a stated false discovery rate. The test also
says how likely a swapped pair would be flagged (its power), and when that is low it says
the archive gives it no power instead of listing anything.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

__all__ = ["MISMATCH_SAMPLES", "POWER_FLOOR", "jf_skew_t_cdf", "jf_skew_t_logpdf", "mismatch_test",
           "select_by_lfdr", "unit_statistics"]

MISMATCH_SAMPLES = 20000   # sampled mismatched units: the known component of the mixture
POWER_FLOOR = 0.5          # below this power the test says it cannot find mismatches here
FIT_POINTS = 50000         # units per region of the weighted maximum-likelihood fit
_KDE_GRID = 4096


# ----------------------------------------------------------------------------- the genuine law
def jf_skew_t_logpdf(x: np.ndarray, a: float, b: float, loc: float, scale: float) -> np.ndarray:
    """Log density of the Jones-Faddy skew-t law (a, b > 0: the left and right tails' weights;
    ``scipy.stats.jf_skew_t`` is the same law), in a form that does not overflow.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import stats
    >>> from fastsas.audit.mismatch import jf_skew_t_logpdf
    >>> x = np.linspace(-5, 5, 11)
    >>> bool(np.allclose(jf_skew_t_logpdf(x, 3.0, 5.0, 0.5, 2.0), stats.jf_skew_t.logpdf(x, 3.0, 5.0, 0.5, 2.0)))
    True
    """
    from scipy.special import betaln

    t = (np.asarray(x, dtype=np.float64) - loc) / scale
    r = t / np.sqrt(a + b + t * t)
    norm = (a + b - 1.0) * math.log(2.0) + float(betaln(a, b)) + 0.5 * math.log(a + b) + math.log(scale)
    return (a + 0.5) * np.log1p(r) + (b + 0.5) * np.log1p(-r) - norm


def jf_skew_t_cdf(x: np.ndarray, a: float, b: float, loc: float, scale: float) -> np.ndarray:
    """Distribution function of the Jones-Faddy skew-t law (a regularised incomplete beta).

    Examples
    --------
    >>> from fastsas.audit.mismatch import jf_skew_t_cdf
    >>> [round(float(jf_skew_t_cdf(t, 4.0, 4.0, 0.0, 1.0)), 6) for t in (-1e9, 0.0, 1e9)]  # symmetric when a = b
    [0.0, 0.5, 1.0]
    """
    from scipy.special import betainc

    t = (np.asarray(x, dtype=np.float64) - loc) / scale
    return betainc(a, b, 0.5 * (1.0 + t / np.sqrt(a + b + t * t)))


def _log_density_of_samples(samples: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The log of a Gaussian kernel density estimate of `samples` (Scott's bandwidth),
    tabulated on a grid and interpolated; outside the grid the density is that of the
    kernel around the extreme samples."""
    from scipy import stats

    kde = stats.gaussian_kde(samples)
    bw = float(np.sqrt(kde.covariance[0, 0]))
    lo, hi = float(samples.min()) - 6 * bw, float(samples.max()) + 6 * bw
    grid = np.linspace(lo, hi, _KDE_GRID)
    log_dens = np.log(np.maximum(kde(grid), 1e-300))
    # Beyond the grid: the kernel of the extreme sample alone (mass 1 / samples).
    edge = -math.log(samples.size) - 0.5 * math.log(2 * math.pi) - math.log(bw)

    def log_f1(t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        out = np.interp(t, grid, log_dens)
        below, above = t < lo, t > hi
        out[below] = edge - 0.5 * ((t[below] - samples.min()) / bw) ** 2
        out[above] = edge - 0.5 * ((t[above] - samples.max()) / bw) ** 2
        return out

    return log_f1


def _fit_mixture(stat: np.ndarray, log_f1: Callable, sample_hi: float, seed: int) -> dict:
    """Maximum likelihood of stat ~ pi1 f1 + (1 - pi1) JF-skew-t(a, b, loc, scale), pi1 <= 1/2,
    on a weighted subsample when there are many units: every unit up to FIT_POINTS in the
    region where mismatches lie (stat <= sample_hi), as many of the rest, each weighted by
    its region's sampling rate, so the likelihood is that of all units in expectation."""
    from scipy import optimize

    rng = np.random.default_rng(seed)
    points, weights = [], []
    for part in (stat[stat <= sample_hi], stat[stat > sample_hi]):
        if part.size == 0:
            continue
        take = part if part.size <= FIT_POINTS else rng.choice(part, FIT_POINTS, replace=False)
        points.append(take)
        weights.append(np.full(take.size, part.size / take.size))
    t = np.concatenate(points)
    w = np.concatenate(weights)
    l1 = log_f1(t)
    center = float(np.median(stat))
    spread = float(1.4826 * np.median(np.abs(stat - center))) or float(np.std(stat)) or 1.0

    def unpack(theta):
        logit, log_a, log_b, loc, log_scale = theta
        pi1 = 0.5 / (1.0 + math.exp(-logit))
        return pi1, math.exp(min(max(log_a, -3.0), 7.0)), math.exp(min(max(log_b, -3.0), 7.0)), loc, math.exp(log_scale)

    def nll(theta):
        pi1, a, b, loc, scale = unpack(theta)
        l0 = jf_skew_t_logpdf(t, a, b, loc, scale)
        return -float(np.sum(w * np.logaddexp(math.log(pi1) + l1, math.log1p(-pi1) + l0)))

    start = np.array([-6.0, math.log(5.0), math.log(5.0), center, math.log(spread)])
    res = optimize.minimize(nll, start, method="Nelder-Mead",
                            options={"maxiter": 4000, "xatol": 1e-5, "fatol": 1e-4})
    pi1, a, b, loc, scale = unpack(res.x)
    return {"pi1": pi1, "a": a, "b": b, "loc": float(loc), "scale": scale, "converged": bool(res.success),
            "fit_points": int(t.size)}


def select_by_lfdr(lfdr: np.ndarray, fdr: float) -> np.ndarray:
    """The flagged units: those of smallest local false discovery rate (posterior probability
    of being genuine), as many as keep the mean of their lfdr (the estimated FDR of the set)
    at most `fdr`, and none whose lfdr exceeds 1/2 (a unit more likely genuine than not is
    never flagged). Returns the units' indices, lowest lfdr first.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsas.audit.mismatch import select_by_lfdr
    >>> select_by_lfdr(np.array([0.9, 0.0, 0.01, 0.2, 0.6]), 0.05).tolist()
    [1, 2]
    """
    order = np.argsort(lfdr, kind="stable")
    sorted_lfdr = lfdr[order]
    running = np.cumsum(sorted_lfdr) / np.arange(1, sorted_lfdr.size + 1)
    ok = np.flatnonzero((running <= fdr) & (sorted_lfdr <= 0.5))
    return order[: int(ok[-1]) + 1] if ok.size else order[:0]


# ----------------------------------------------------------------------------- the statistic
class _Side:
    """The per-query moments of one direction: for every query row its mean similarity to
    every gallery row and the variance of those similarities (from the gallery's unit-row
    moments), so the non-matches' mean and variance follow by removing the matches."""

    def __init__(self, gallery_rows: int):
        self.gallery_rows = gallery_rows
        self.mean_all: np.ndarray | None = None
        self.var_all: np.ndarray | None = None

    def z(self, query_rows: np.ndarray, best: np.ndarray, match_sum: np.ndarray, match_sumsq: np.ndarray,
          matches: np.ndarray) -> np.ndarray:
        """z = (best - mu) / sd of the queries `query_rows` whose matches have these sums."""
        g = float(self.gallery_rows)
        mean_all, var_all = self.mean_all[query_rows], self.var_all[query_rows]
        rest = g - matches
        with np.errstate(divide="ignore", invalid="ignore"):
            mu = (g * mean_all - match_sum) / rest
            var = (g * (var_all + mean_all * mean_all) - match_sumsq) / rest - mu * mu
            return np.where((rest > 0) & (var > 0), (best - mu) / np.sqrt(np.where(var > 0, var, 1.0)), np.nan)


def _unit(a: np.ndarray) -> np.ndarray:
    wide = np.asarray(a, dtype=np.float64)
    return wide / np.sqrt(np.einsum("ij,ij->i", wide, wide))[:, None]


def _projection(cov: np.ndarray, dtype) -> np.ndarray:
    """W with W W^T = cov (cov's eigenvectors scaled by the root of its eigenvalues), so a
    query's variance of similarities is the squared norm of its row times W."""
    values, vectors = np.linalg.eigh(cov)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))).astype(dtype)


class _Units:
    """The units of the test: ids present on both sides (or pairs), with their image and text
    rows; single-row units are handled as arrays, the others one by one."""

    def __init__(self, plan: Any):
        n = plan.n
        if plan.unit_rank is None:
            self.count = n
            self.image_start = np.arange(n + 1)
            self.text_start = np.arange(n + 1)
            self.image_rows = self.text_rows = np.arange(n)
            self.paired = True
        else:
            units = plan.unit["count"]
            tr = plan.text_unit_rank
            self.image_rows = np.argsort(plan.unit_rank, kind="stable")
            self.image_start = np.concatenate([[0], np.cumsum(np.bincount(plan.unit_rank, minlength=units))])
            keep = tr >= 0
            self.text_rows = np.flatnonzero(keep)[np.argsort(tr[keep], kind="stable")]
            self.text_start = np.concatenate([[0], np.cumsum(np.bincount(tr[keep], minlength=units))])
            self.count = units
            self.paired = False
        self.image_count = np.diff(self.image_start)
        self.text_count = np.diff(self.text_start)
        self.tested = np.flatnonzero((self.image_count > 0) & (self.text_count > 0))

    def images_of(self, u: int) -> np.ndarray:
        return self.image_rows[self.image_start[u]:self.image_start[u + 1]]

    def texts_of(self, u: int) -> np.ndarray:
        return self.text_rows[self.text_start[u]:self.text_start[u + 1]]

    def single(self, u: np.ndarray) -> np.ndarray:
        return (self.image_count[u] == 1) & (self.text_count[u] == 1)


def _pair_statistics(image_units: np.ndarray, text_units: np.ndarray, units: _Units, rows: Any,
                     sides: tuple[_Side, _Side], self_sim: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """(statistic, z I->T, z T->I) of the unit pairs (image unit u, text unit v): u's images
    queried against v's texts as their matches, and v's texts against u's images. u == v is a
    unit's own statistic; u != v a mismatched one."""
    count = image_units.size
    z_i, z_t = np.full(count, np.nan), np.full(count, np.nan)
    single = units.single(image_units) & units.single(text_units)
    k = np.flatnonzero(single)
    if k.size:
        qi = units.image_rows[units.image_start[image_units[k]]]
        qt = units.text_rows[units.text_start[text_units[k]]]
        if self_sim is not None and np.all(qi == qt):
            s = self_sim[qi]
        else:
            s = np.einsum("ij,ij->i", _unit(rows.images(qi)), _unit(rows.texts(qt)))
        one = np.ones(k.size)
        z_i[k] = sides[0].z(qi, s, s, s * s, one)
        z_t[k] = sides[1].z(qt, s, s, s * s, one)
    for j in np.flatnonzero(~single):
        ri, rt = units.images_of(int(image_units[j])), units.texts_of(int(text_units[j]))
        sim = _unit(rows.images(ri)) @ _unit(rows.texts(rt)).T  # |images| x |texts|
        zi = sides[0].z(ri, sim.max(axis=1), sim.sum(axis=1), (sim * sim).sum(axis=1), np.full(ri.size, rt.size))
        zt = sides[1].z(rt, sim.max(axis=0), sim.sum(axis=0), (sim * sim).sum(axis=0), np.full(rt.size, ri.size))
        z_i[j], z_t[j] = float(np.mean(zi)), float(np.mean(zt))
    return (z_i + z_t) / math.sqrt(2.0), z_i, z_t


def _query_moments(plan: Any, unit_state: Any, rows: Any, chunk_rows: int, progress: Any) -> tuple:
    """One pass over the rows: each query's mean similarity to the whole gallery and the
    variance of those similarities, both directions; and (pairs as units) each pair's own
    similarity."""
    n, d = plan.n, plan.d
    count = float(unit_state.count)
    mean = np.asarray(unit_state.mean(), dtype=np.float64)
    cov = np.asarray(unit_state.centered_scatter(), dtype=np.float64) / count
    mean_x, mean_y = mean[:d], mean[d:]
    image_side, text_side = _Side(n), _Side(n)
    for side in (image_side, text_side):
        side.mean_all = np.empty(n)
        side.var_all = np.empty(n)
    self_sim = np.empty(n) if plan.unit_rank is None else None
    chunks = rows.chunks(chunk_rows)
    total = -(-n // chunk_rows)
    if progress is not None:
        chunks = progress(chunks, "mismatch statistic (rows read again)", total)
    w_y = w_x = None
    for start, cx, cy in chunks:
        dtype = np.float64 if cx.dtype == np.float64 else np.float32
        if w_y is None:
            w_y, w_x = _projection(cov[d:, d:], dtype), _projection(cov[:d, :d], dtype)
        ux, uy = _unit(cx), _unit(cy)
        stop = start + len(cx)
        image_side.mean_all[start:stop] = ux @ mean_y
        text_side.mean_all[start:stop] = uy @ mean_x
        # A variance as a sum of squares: no cancellation, so the chunk's own precision keeps it.
        image_side.var_all[start:stop] = np.sum(np.square(ux.astype(dtype) @ w_y, dtype=np.float64), axis=1)
        text_side.var_all[start:stop] = np.sum(np.square(uy.astype(dtype) @ w_x, dtype=np.float64), axis=1)
        if self_sim is not None:
            self_sim[start:stop] = np.einsum("ij,ij->i", ux, uy)
    return (image_side, text_side), self_sim


def unit_statistics(plan: Any, unit_state: Any, rows: Any, pairs: tuple[np.ndarray, np.ndarray] | None = None, *,
                    chunk_rows: int = 65536, progress: Any = None) -> dict:
    """The mismatch statistic of every tested unit (docs/definitions.md, "Suspected
    mismatches"), or of given (image unit, text unit) pairs.

    Parameters
    ----------
    plan : AuditPlan
        The plan (its units: ids, or pairs).
    unit_state : fastsas._core.Moments
        The moments of the unit rows (the audit state's part ``unit``).
    rows : ArchiveRows
        The rows.
    pairs : (ndarray, ndarray) or None
        Image units and text units (unit numbers, as in ``units``) to score as if the text
        unit were the image unit's match; None: every tested unit with its own texts.
    chunk_rows : int
        Rows per chunk of the pass.
    progress : callable or None
        The audit's progress hook.

    Returns
    -------
    dict
        ``units`` (the tested units, or the pairs' image units), ``statistic``, ``z_i2t``,
        ``z_t2i`` (NaN where undefined).

    Examples
    --------
    >>> import fastsas as fs
    >>> from fastsas.audit import AuditPlan
    >>> from fastsas.audit.rows import ArchiveRows
    >>> from fastsas.audit.mismatch import unit_statistics
    >>> x, y = fs.synthetic.paired_embeddings(500, 16)
    >>> plan = AuditPlan(500, 16)
    >>> state = plan.new_state(); state.accumulate(x, y, plan.codes(0, 500), threads=1)
    >>> out = unit_statistics(plan, state.states("unit")[0], ArchiveRows(x, y))
    >>> out["statistic"].shape, bool((out["statistic"] > 1).mean() > 0.9)
    ((500,), True)
    """
    units = _Units(plan)
    sides, self_sim = _query_moments(plan, unit_state, rows, chunk_rows, progress)
    image_units, text_units = (units.tested, units.tested) if pairs is None else pairs
    stat, z_i, z_t = _pair_statistics(np.asarray(image_units), np.asarray(text_units), units, rows, sides,
                                      self_sim if pairs is None else None)
    return {"units": np.asarray(image_units), "statistic": stat, "z_i2t": z_i, "z_t2i": z_t}


def mismatch_test(plan: Any, unit_state: Any, rows: Any, *, chunk_rows: int = 65536, progress: Any = None,
                  ranks: dict | None = None) -> tuple[dict, list[dict]]:
    """The suspected-mismatch test of an audit (docs/definitions.md, "Suspected mismatches").

    Parameters
    ----------
    plan : AuditPlan
        The audit's plan (units, ids, ``mismatch_fdr``, ``mismatches`` to list, ``seed``).
    unit_state : fastsas._core.Moments
        The merged moments of the unit rows (the state's part ``unit``).
    rows : ArchiveRows
        The archive's rows, read again once in order and, for the units of several rows
        and the sampled mismatches, gathered.
    chunk_rows : int
        Rows per chunk of the pass.
    progress : callable or None
        The audit's progress hook.
    ranks : dict or None
        Whole-gallery retrieval with ranks, to show each flagged unit's ranks.

    Returns
    -------
    (dict, list of dict)
        The test (``definition``, ``unit``, ``units_tested``, ``fdr``, ``flagged`` (every
        unit flagged; never capped), ``shown``, ``estimated_fdr``, ``expected_mismatches``,
        ``null`` (the fitted law of genuine units), ``power``, ``has_power``, ``status``,
        ...), and the flagged units to list (at most ``plan.mismatches``, lowest lfdr first;
        none when the test has no power).
    """
    units = _Units(plan)
    sides, self_sim = _query_moments(plan, unit_state, rows, chunk_rows, progress)
    tested = units.tested
    stat, z_i, z_t = _pair_statistics(tested, tested, units, rows, sides, self_sim)
    finite = np.isfinite(stat)
    rng = np.random.default_rng(plan.seed)
    samples = min(MISMATCH_SAMPLES, max(2000, 4 * tested.size))
    u = tested[rng.integers(0, tested.size, samples)]
    v = tested[rng.integers(0, tested.size, samples)]
    keep = u != v
    mism, _, _ = _pair_statistics(u[keep], v[keep], units, rows, sides, None)  # the mismatch law
    mism = mism[np.isfinite(mism)]
    info: dict[str, Any] = {
        "definition": ("per unit: (mean z I->T + mean z T->I) / sqrt(2), z = (matched similarity - mean of the "
                       "query's non-matches) / their standard deviation; flagged by the posterior probability "
                       "of being genuine (local fdr) under a two-component mixture: mismatches (law sampled "
                       "exactly) and genuine units (Jones-Faddy skew-t fitted by maximum likelihood)"),
        "unit": plan.unit["name"], "units": int(units.count), "units_tested": int(finite.sum()),
        "fdr": plan.mismatch_fdr, "null": "H0: the unit is genuine; its statistic follows the fitted genuine law",
        "sampled_mismatches": int(mism.size), "seed": plan.seed,
    }
    if finite.sum() < 10 or mism.size < 10:
        info.update(flagged=0, shown=0, has_power=False, power=0.0, status="not tested: too few units")
        return info, []
    values = stat[finite]
    log_f1 = _log_density_of_samples(mism)
    steps = progress([None], f"mismatch test: mixture fit on {min(values.size, 2 * FIT_POINTS):,} units", 1) \
        if progress is not None else [None]
    for _ in steps:
        fit = _fit_mixture(values, log_f1, float(np.quantile(mism, 0.999)), plan.seed)
    a, b, loc, scale, pi1 = fit["a"], fit["b"], fit["loc"], fit["scale"], fit["pi1"]

    def lfdr_at(t: np.ndarray, prior: float) -> np.ndarray:
        l0 = math.log1p(-prior) + jf_skew_t_logpdf(t, a, b, loc, scale)
        l1 = math.log(prior) + log_f1(t)
        return np.exp(l0 - np.logaddexp(l0, l1))

    lfdr = lfdr_at(values, max(pi1, 1e-300))
    chosen = select_by_lfdr(lfdr, plan.mismatch_fdr)
    # Power: a swapped unit flagged at the set's lfdr cutoff, with at least one swap expected.
    prior = max(pi1, 1.0 / values.size)
    cutoff = max(plan.mismatch_fdr, float(lfdr[chosen].max()) if chosen.size else 0.0)
    power = float(np.mean(lfdr_at(mism, prior) <= cutoff))
    has_power = power >= POWER_FLOOR
    if not has_power:  # the two laws are not told apart: the model's flags mean nothing
        info["model_flagged"] = int(chosen.size)
        chosen = chosen[:0]
    info.update({
        "flagged": int(chosen.size),
        "estimated_fdr": float(np.mean(lfdr[chosen])) if chosen.size else 0.0,
        "expected_mismatches": float(pi1 * values.size),
        "null_fit": {"law": "Jones-Faddy skew-t", "a": a, "b": b, "loc": loc, "scale": scale,
                     "mismatch_share": pi1, "converged": fit["converged"], "fit_points": fit["fit_points"]},
        "mismatch_law": {"median": float(np.median(mism)), "q01": float(np.quantile(mism, 0.01)),
                         "q99": float(np.quantile(mism, 0.99))},
        "genuine_median": float(np.median(values)),
        "lfdr_cutoff": cutoff, "power": power, "power_floor": POWER_FLOOR, "has_power": bool(has_power),
        "status": "ok" if has_power else (
            f"no power: a swapped pair would be flagged with probability {power:.0%} on this archive, so "
            "nothing is flagged"),
    })
    listed: list[dict] = []
    if has_power:
        index = np.flatnonzero(finite)
        image_ids = None if plan.image_ids is None else np.asarray(plan.image_ids)
        rank_of = _rank_lookup(ranks, plan) if ranks is not None else None
        for k in chosen[: plan.mismatches]:
            unit = int(tested[index[k]])
            row = int(units.images_of(unit)[0])
            item: dict[str, Any] = {"row": row}
            if image_ids is not None:
                item["id"] = image_ids[row].item()
            item.update({"statistic": float(values[k]), "z_i2t": float(z_i[index[k]]),
                         "z_t2i": float(z_t[index[k]]),
                         "p_value": float(jf_skew_t_cdf(values[k], a, b, loc, scale)), "lfdr": float(lfdr[k])})
            if rank_of is not None:
                item["i2t_rank"], item["t2i_rank"] = rank_of(units, unit)
            listed.append(item)
    info["shown"] = len(listed)
    return info, listed


def _rank_lookup(ret: dict, plan: Any) -> Callable:
    """(best I->T rank among the unit's images, best T->I rank among its texts)."""
    i2t = np.zeros(plan.n, dtype=np.int64)
    i2t[ret["i2t_queries"]] = ret["i2t_ranks"]
    t2i = np.zeros(plan.n, dtype=np.int64)
    t2i[ret["t2i_queries"]] = ret["t2i_ranks"]

    def ranks_of(units: _Units, unit: int) -> tuple[int, int]:
        a, b = i2t[units.images_of(unit)], t2i[units.texts_of(unit)]
        a, b = a[a > 0], b[b > 0]
        return (int(a.min()) if a.size else 0), (int(b.min()) if b.size else 0)

    return ranks_of
