"""The four experiments of the SAS paper on a study's cells, each with the paper's pooled
tests and tests that respect the dependence of the cells (docs/definitions.md, "Studies"),
and paired comparisons of models on the same dataset.

Every function takes a :class:`CellTable` (the cells' numbers as model x dataset grids) and
returns plain data: the experiment's tables, with every test's unit of replication, null
hypothesis and multiple-comparison correction named in it.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from fastsas.audit.intervals import paired_difference
from fastsas.definitions import IMBALANCE_SIGN
from fastsas.study.cells import METRICS, RETRIEVAL_TARGETS
from fastsas.study.stats import (adjust_pvalues, bootstrap_models, dataset_permutation, mann_whitney, one_sample_t,
                                 percentile_interval, sign_consistency, spearman, spearman_rows,
                                 stratified_domain_permutation, stratified_spearman_permutation)

__all__ = ["CellTable", "DomainPair", "alignment_profile", "compare_models", "eigenspectrum_concentration",
           "imbalance_signature", "parse_direction", "retrieval_predictivity", "TEST_UNITS"]

# What each kind of test treats as its independent observations (written into every result).
TEST_UNITS = {
    "pooled": "cell (the SAS paper's test: every model x dataset cell counted as an independent observation, "
              "although the cells of one model, and of one dataset, are not independent)",
    "models": "model (the datasets fixed: one value per model, or a permutation stratified by model); "
              "the conclusion is about these datasets",
    "datasets": "dataset (per-dataset means; exact permutation of the domain labels over datasets): the "
                "conclusion generalises to other datasets of the domains, and with few datasets cannot reach "
                "small p-values (min_p)",
    "within_dataset": "model, within each dataset (stratified by dataset)",
}


class CellTable:
    """A study's cells as model x dataset grids.

    Parameters
    ----------
    cells : sequence of dict
        The cells (:func:`fastsas.study.evaluate_cell`), status "ok" ones used.
    models : sequence of str
        The pooled models (rows of the grids), in order.
    datasets : sequence of str
        The datasets (columns), in order.
    domains : dict
        dataset -> domain label.
    references : sequence of str, default ()
        Reference models: their grids are kept apart (:meth:`grid` with ``references=True``).

    Examples
    --------
    >>> from fastsas.study import CellTable
    >>> cells = [{"model": "a", "dataset": "COCO", "status": "ok", "alignment": {"cka": 0.5}}]
    >>> t = CellTable(cells, ["a", "b"], ["COCO"], {"COCO": "natural"})
    >>> t.grid("cka").tolist()
    [[0.5], [nan]]
    """

    def __init__(self, cells: Sequence[Mapping], models: Sequence[str], datasets: Sequence[str],
                 domains: Mapping[str, str], references: Sequence[str] = ()):
        self.models = list(models)
        self.references = list(references)
        self.datasets = list(datasets)
        self.domains = dict(domains)
        self.cells = {(c["model"], c["dataset"]): c for c in cells if c.get("status") == "ok"}

    @staticmethod
    def cell_value(cell: Mapping | None, name: str) -> float:
        """One number of a cell: an alignment key, "mmd", "rsum", "rsum_i2t", "rsum_t2i", or
        a retrieval key ("i2t_r1", ...); NaN when absent."""
        if cell is None:
            return math.nan
        if name in ("rsum_i2t", "rsum_t2i", "mmd"):
            value = cell.get(name)
        elif name in (cell.get("alignment") or {}):
            value = cell["alignment"][name]
        else:
            value = (cell.get("retrieval") or {}).get(name)
        return math.nan if value is None else float(value)

    def _rows(self, references: bool) -> list[str]:
        return self.references if references else self.models

    def grid(self, name: str, *, references: bool = False) -> np.ndarray:
        """(models, datasets) float64 grid of `name` (NaN where missing)."""
        rows = self._rows(references)
        return np.array([[self.cell_value(self.cells.get((m, d)), name) for d in self.datasets] for m in rows],
                        dtype=np.float64).reshape(len(rows), len(self.datasets))

    def interval_grid(self, name: str, *, references: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The jackknife interval (ci_low, ci_high) of an alignment key, as two grids."""
        rows = self._rows(references)
        lo = np.full((len(rows), len(self.datasets)), np.nan)
        hi = lo.copy()
        for i, m in enumerate(rows):
            for j, d in enumerate(self.datasets):
                entry = ((self.cells.get((m, d)) or {}).get("jackknife", {}).get("metrics") or {}).get(name) or {}
                lo[i, j] = _num(entry.get("ci_low"))
                hi[i, j] = _num(entry.get("ci_high"))
        return lo, hi

    def sweep(self, direction: str, *, references: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(qs, values): the SAS sweep of one direction ("i2t" or "t2i") as (q, models, datasets)."""
        rows = self._rows(references)
        qs = None
        for c in self.cells.values():
            qs = c.get("sas_sweep", {}).get("q")
            if qs:
                break
        qs = np.asarray(qs or [], dtype=np.float64)
        out = np.full((qs.size, len(rows), len(self.datasets)), np.nan)
        for i, m in enumerate(rows):
            for j, d in enumerate(self.datasets):
                sweep = (self.cells.get((m, d)) or {}).get("sas_sweep") or {}
                values = sweep.get(f"sas_{direction}")
                if values is not None and len(values) == qs.size:
                    out[:, i, j] = [_num(v) for v in values]
        return qs, out

    def grid_dict(self, name: str, with_intervals: bool = False) -> dict:
        """A grid as plain data: ``metric``, ``models``, ``datasets``, ``values`` (and
        ``ci_low``/``ci_high``), with the reference models' rows apart under ``references``."""
        out: dict[str, Any] = {"metric": name, "models": self.models, "datasets": self.datasets,
                               "values": self.grid(name).tolist()}
        ref = {"models": self.references, "values": self.grid(name, references=True).tolist()}
        if with_intervals:
            lo, hi = self.interval_grid(name)
            out.update(ci_low=lo.tolist(), ci_high=hi.tolist())
            rlo, rhi = self.interval_grid(name, references=True)
            ref.update(ci_low=rlo.tolist(), ci_high=rhi.tolist())
        out["references"] = ref
        out["dataset_means"] = _nanmean_cols(self.grid(name)).tolist()
        return out


@contextlib.contextmanager
def _quiet():
    """Means of empty or all-NaN slices are NaN here by design: no warning."""
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def _nanmean_cols(grid: np.ndarray) -> np.ndarray:
    with _quiet():
        return np.nanmean(grid, axis=0) if grid.size else np.full(grid.shape[1], np.nan)


class DomainPair:
    """The two domains a between-domain test compares: A (first) and B, and which datasets
    are in each.

    Parameters
    ----------
    table : CellTable
        The study's cells.
    a, b : str
        The domain labels.

    Examples
    --------
    >>> from fastsas.study import CellTable, DomainPair
    >>> t = CellTable([], ["m"], ["COCO", "ROCO"], {"COCO": "natural", "ROCO": "medical"})
    >>> DomainPair(t, "natural", "medical").in_a.tolist()
    [True, False]
    """

    def __init__(self, table: CellTable, a: str, b: str):
        self.a, self.b = a, b
        self.in_a = np.array([table.domains.get(d) == a for d in table.datasets], dtype=bool)
        self.in_b = np.array([table.domains.get(d) == b for d in table.datasets], dtype=bool)


def parse_direction(direction: str | None, labels: Sequence[str]) -> tuple[str, str] | None:
    """(greater, lesser): the one-sided hypothesis of the imbalance test between domains.

    Parameters
    ----------
    direction : str or None
        "A>B" (the imbalance of domain A exceeds that of B) or "A<B"; None: the SAS paper's
        "medical>natural" when both labels exist, else "<first label>><second label>".
    labels : sequence of str
        The study's domain labels.

    Returns
    -------
    tuple of str or None
        None with fewer than two domains.

    Raises
    ------
    ValueError
        When `direction` is not of that form or names a domain the study does not have.

    Examples
    --------
    >>> from fastsas.study import parse_direction
    >>> parse_direction(None, ["natural", "medical"]), parse_direction("natural < medical", ["natural", "medical"])
    (('medical', 'natural'), ('medical', 'natural'))
    """
    labels = list(labels)
    if direction is None:
        if len(labels) < 2:
            return None
        if "medical" in labels and "natural" in labels:
            return "medical", "natural"
        return labels[0], labels[1]
    text = str(direction)
    for sign in (">", "<"):
        if text.count(sign) == 1 and text.count(">" if sign == "<" else "<") == 0:
            left, right = (part.strip() for part in text.split(sign))
            greater, lesser = (left, right) if sign == ">" else (right, left)
            bad = [x for x in (greater, lesser) if x not in labels]
            if bad or greater == lesser:
                raise ValueError(f"direction {text!r} must name two of the study's domains ({', '.join(labels)})")
            return greater, lesser
    raise ValueError(f"direction must read 'A>B' or 'A<B' with two domain labels, got {text!r}")


def _domain_summary(values: np.ndarray) -> dict:
    v = values[np.isfinite(values)]
    return {"n": int(v.size), "mean": float(v.mean()) if v.size else math.nan,
            "sd": float(v.std(ddof=1)) if v.size > 1 else math.nan}


def _adjust(rows: list[dict], path: Sequence[str], correction: str) -> None:
    """Add ``p_adjusted`` beside each ``p_value`` found at `path` in `rows` (one family)."""
    def find(row):
        node = row
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
            if node is None:
                return None
        return node

    nodes = [find(r) for r in rows]
    adjusted = adjust_pvalues([_num(n.get("p_value")) if n else math.nan for n in nodes], correction)
    for node, p in zip(nodes, adjusted):
        if node is not None:
            node["p_adjusted"] = float(p)
            node["correction"] = correction


def _between_domains(table: CellTable, grid: np.ndarray, pair: DomainPair, alternative: str, permutations: int,
                     rng: np.random.Generator) -> dict:
    """The three tiers of a between-domain test of one grid: pooled (cells), stratified by
    model (models), exact over datasets (datasets)."""
    return {
        "pooled": {**mann_whitney(grid[:, pair.in_a], grid[:, pair.in_b], alternative), "unit": "cell",
                   "test": "Mann-Whitney U (the SAS paper's)"},
        "models": {**stratified_domain_permutation(grid, pair.in_a, pair.in_b, alternative=alternative,
                                                   permutations=permutations, rng=rng),
                   "test": "permutation test stratified by model"},
        "datasets": {**dataset_permutation(_nanmean_cols(grid), pair.in_a, pair.in_b, alternative=alternative),
                     "test": "exact permutation of domain labels over datasets"},
    }


def _pairs_of(table: CellTable) -> DomainPair | None:
    labels = list(dict.fromkeys(table.domains[d] for d in table.datasets if d in table.domains))
    return DomainPair(table, labels[0], labels[1]) if len(labels) >= 2 else None


def alignment_profile(table: CellTable, metrics: Sequence[str], *, correction: str = "holm",
                      permutations: int = 10000, seed: int = 0) -> dict:
    """Experiment 1, alignment profile: per domain mean and standard deviation (ddof 1) of
    every metric, the domain tests in three tiers (pooled two-sided Mann-Whitney U over cells,
    the paper's; a permutation test stratified by model; an exact permutation over datasets),
    each corrected across the metrics; the SAS(sym) grid and the per-dataset means.

    Parameters
    ----------
    table : CellTable
        The study's cells.
    metrics : sequence of str
        The metrics compared.
    correction : {"holm", "bh"}, default "holm"
        Across the metrics, per tier.
    permutations : int, default 10000
        Of the stratified permutation test.
    seed : int, default 0
        Its random seed.

    Returns
    -------
    dict
        ``domains`` (the labels; ``a`` and ``b`` compared, differences are a - b), ``rows``
        (per metric: ``per_domain``, ``tests`` with ``pooled``, ``models``, ``datasets``, each
        with ``p_value`` and ``p_adjusted``), ``grid`` (SAS(sym), references apart),
        ``dataset_means`` (per metric, per dataset), ``units`` (what each tier counts).

    Examples
    --------
    >>> from fastsas.study import CellTable, alignment_profile
    >>> cells = [{"model": m, "dataset": d, "status": "ok", "alignment": {"cka": v}}
    ...          for m, vals in (("a", (0.9, 0.5)), ("b", (0.8, 0.4)), ("c", (0.7, 0.45)))
    ...          for d, v in zip(("COCO", "ROCO"), vals)]
    >>> out = alignment_profile(CellTable(cells, ["a", "b", "c"], ["COCO", "ROCO"], {"COCO": "natural", "ROCO": "medical"}), ["cka"])
    >>> round(out["rows"][0]["tests"]["models"]["statistic"], 4), out["rows"][0]["tests"]["models"]["exact"]
    (0.35, True)
    """
    rng = np.random.default_rng(seed)
    pair = _pairs_of(table)
    labels = list(dict.fromkeys(table.domains[d] for d in table.datasets if d in table.domains))
    rows = []
    for name in metrics:
        grid = table.grid(name)
        row: dict[str, Any] = {"metric": name, "label": METRICS[name].label if name in METRICS else name,
                               "per_domain": {lab: _domain_summary(grid[:, [table.domains.get(d) == lab
                                                                            for d in table.datasets]])
                                              for lab in labels}}
        if pair is not None:
            row["difference"] = row["per_domain"][pair.a]["mean"] - row["per_domain"][pair.b]["mean"]
            row["tests"] = _between_domains(table, grid, pair, "two-sided", permutations, rng)
        rows.append(row)
    if pair is not None:
        for tier in ("pooled", "models", "datasets"):
            _adjust(rows, ("tests", tier), correction)
    return {
        "name": "alignment profile",
        "question": "Do the metrics differ between domains?",
        "domains": {"labels": labels, "a": pair.a if pair else None, "b": pair.b if pair else None},
        "rows": rows,
        "grid": table.grid_dict("sas_sym", with_intervals=True),
        "dataset_means": {"datasets": table.datasets,
                          "rows": [{"metric": m, "means": _nanmean_cols(table.grid(m)).tolist()} for m in metrics]},
        "units": {k: TEST_UNITS[k] for k in ("pooled", "models", "datasets")},
        "correction": correction,
        "note": None if pair else "fewer than two domains: no between-domain tests",
    }


def imbalance_signature(table: CellTable, *, direction: str | None = None, correction: str = "holm",
                        permutations: int = 10000, seed: int = 0) -> dict:
    """Experiment 2, imbalance signature: SAS both ways and the imbalance as grids (with each
    cell's jackknife interval and test); per domain a one-sample t test of the imbalance over
    cells (the paper's) and over models (each model's mean over the domain's datasets); the
    one-sided between-domain test in three tiers; per dataset "all of one sign", the exact
    sign test and a t test over models.

    Parameters
    ----------
    table : CellTable
        The study's cells.
    direction : str or None
        The one-sided hypothesis between domains, "A>B" or "A<B" (:func:`parse_direction`).
    correction : {"holm", "bh"}, default "holm"
        Across the domains' t tests, across the datasets' tests, across the cells' tests.
    permutations : int, default 10000
        Of the stratified permutation test.
    seed : int, default 0
        Its random seed.

    Returns
    -------
    dict
        ``grids`` (sas_i2t, sas_t2i, sas_imbalance), ``per_domain``, ``between_domains``
        (``greater``, ``lesser`` and the tiers), ``per_dataset``, ``cell_tests``,
        ``sign_convention``, ``units``.

    Examples
    --------
    >>> from fastsas.study import CellTable, imbalance_signature
    >>> cells = [{"model": m, "dataset": d, "status": "ok", "alignment": {"sas_imbalance": v}}
    ...          for m, vals in (("a", (0.1, -0.2)), ("b", (0.15, -0.3)), ("c", (0.05, -0.25)))
    ...          for d, v in zip(("COCO", "ROCO"), vals)]
    >>> out = imbalance_signature(CellTable(cells, ["a", "b", "c"], ["COCO", "ROCO"], {"COCO": "natural", "ROCO": "medical"}))
    >>> [r["sign"] for r in out["per_dataset"]], out["between_domains"]["greater"]
    (['positive', 'negative'], 'medical')
    """
    rng = np.random.default_rng(seed)
    grid = table.grid("sas_imbalance")
    labels = list(dict.fromkeys(table.domains[d] for d in table.datasets if d in table.domains))
    per_domain = []
    for lab in labels:
        cols = np.array([table.domains.get(d) == lab for d in table.datasets])
        with _quiet():
            per_model = np.nanmean(grid[:, cols], axis=1) if cols.any() else np.full(len(table.models), np.nan)
        per_domain.append({"domain": lab, **_domain_summary(grid[:, cols]),
                           "pooled": {**one_sample_t(grid[:, cols]), "unit": "cell"},
                           "models": {**one_sample_t(per_model), "unit": "model"}})
    for tier in ("pooled", "models"):
        _adjust(per_domain, (tier,), correction)
    per_dataset = []
    for j, d in enumerate(table.datasets):
        col = grid[:, j]
        per_dataset.append({"dataset": d, "domain": table.domains.get(d), **_domain_summary(col),
                            **sign_consistency(col), "t_test": {**one_sample_t(col), "unit": "model"}})
    _adjust(per_dataset, ("t_test",), correction)
    sign_p = adjust_pvalues([r["sign_test_p"] for r in per_dataset], correction)
    for r, p in zip(per_dataset, sign_p):
        r["sign_test_p_adjusted"] = float(p)
    lo, hi = table.interval_grid("sas_imbalance")
    for r, j in zip(per_dataset, range(len(table.datasets))):
        excl = (lo[:, j] > 0) | (hi[:, j] < 0)
        r["cells_interval_excludes_zero"] = int(np.sum(excl & np.isfinite(lo[:, j])))
    cell_tests = []
    for m in table.models:
        for d in table.datasets:
            test = ((table.cells.get((m, d)) or {}).get("jackknife") or {}).get("imbalance_test")
            if test:
                cell_tests.append({"model": m, "dataset": d, "t": test.get("t"), "p_value": test.get("p_value")})
    _adjust(cell_tests, (), correction)
    between: dict[str, Any] = {"note": "fewer than two domains: no between-domain test"}
    sides = parse_direction(direction, labels)
    if sides is not None:
        greater, lesser = sides
        pair = DomainPair(table, greater, lesser)
        between = {"greater": greater, "lesser": lesser, "hypothesis": f"imbalance({greater}) > imbalance({lesser})",
                   **_between_domains(table, grid, pair, "greater", permutations, rng)}
    return {
        "name": "imbalance signature",
        "question": "Is the SAS imbalance of one sign per domain, and does it differ between domains?",
        "sign_convention": IMBALANCE_SIGN,
        "grids": {k: table.grid_dict(k, with_intervals=True) for k in ("sas_i2t", "sas_t2i", "sas_imbalance")},
        "per_domain": per_domain,
        "between_domains": between,
        "per_dataset": per_dataset,
        "cell_tests": cell_tests,
        "units": {k: TEST_UNITS[k] for k in ("pooled", "models", "datasets")},
        "correction": correction,
    }


def _correlation_block(x: np.ndarray, y: np.ndarray, idx: np.ndarray, datasets: Sequence[str], permutations: int,
                       rng: np.random.Generator) -> dict:
    """Spearman rho of one metric with one target: per dataset, pooled and stratified, with
    bootstrap-over-models intervals (the same resamples `idx` for every metric and target)."""
    out: dict[str, Any] = {"per_dataset": {}}
    boot_x, boot_y = x[idx], y[idx]  # (resamples, models, datasets)
    per_dataset_boot = []
    for j, d in enumerate(datasets):
        stat = spearman(x[:, j], y[:, j])
        boot = spearman_rows(boot_x[:, :, j], boot_y[:, :, j])
        per_dataset_boot.append(boot)
        lo, hi = percentile_interval(boot)
        out["per_dataset"][d] = {**stat, "ci_low": lo, "ci_high": hi, "unit": "model"}
    pooled = spearman(x.ravel(), y.ravel())
    lo, hi = percentile_interval(spearman_rows(boot_x.reshape(len(idx), -1), boot_y.reshape(len(idx), -1)))
    out["pooled"] = {**pooled, "ci_low": lo, "ci_high": hi, "unit": "cell",
                     "interval": "bootstrap over models (all of a model's cells together)"}
    strat = stratified_spearman_permutation(x, y, permutations=permutations, rng=rng)
    with _quiet():
        boot_mean = np.nanmean(np.stack(per_dataset_boot, axis=1), axis=1) if per_dataset_boot else np.array([])
    lo, hi = percentile_interval(boot_mean)
    out["stratified"] = {"rho": strat["statistic"], "p_value": strat["p_value"], "ci_low": lo, "ci_high": hi,
                         "datasets": strat["datasets"], "unit": "model, within dataset",
                         "test": "permutation stratified by dataset"}
    return out


def _directional(sas: np.ndarray, matched: np.ndarray, opposite: np.ndarray, idx: np.ndarray,
                 datasets: Sequence[str]) -> dict:
    """|rho(SAS, matched rSum)| - |rho(SAS, opposite rSum)|, per dataset, stratified (mean of
    the per-dataset differences) and pooled, with a paired bootstrap over models."""
    resamples = len(idx)

    def one_sided(delta: float, boot: np.ndarray) -> dict:
        b = boot[np.isfinite(boot)]
        lo, hi = percentile_interval(b)
        p = float((1 + np.sum(b <= 0)) / (1 + b.size)) if b.size and math.isfinite(delta) else math.nan
        return {"delta": delta, "ci_low": lo, "ci_high": hi, "p_value": p, "resamples": int(b.size)}

    out: dict[str, Any] = {"per_dataset": {}}
    deltas, boots = [], []
    for j, d in enumerate(datasets):
        rm, ro = spearman(sas[:, j], matched[:, j])["rho"], spearman(sas[:, j], opposite[:, j])["rho"]
        boot = (np.abs(spearman_rows(sas[idx, j], matched[idx, j]))
                - np.abs(spearman_rows(sas[idx, j], opposite[idx, j])))
        delta = abs(rm) - abs(ro)
        deltas.append(delta)
        boots.append(boot)
        out["per_dataset"][d] = {"rho_matched": rm, "rho_opposite": ro, **one_sided(delta, boot)}
    with _quiet():
        strat_delta = float(np.nanmean(deltas)) if deltas else math.nan
        strat_boot = np.nanmean(np.stack(boots, axis=1), axis=1) if boots else np.array([])
    out["stratified"] = {**one_sided(strat_delta, strat_boot), "unit": "model, within dataset"}
    rm, ro = spearman(sas.ravel(), matched.ravel())["rho"], spearman(sas.ravel(), opposite.ravel())["rho"]
    flat = (lambda g: g[idx].reshape(resamples, -1))
    boot = np.abs(spearman_rows(flat(sas), flat(matched))) - np.abs(spearman_rows(flat(sas), flat(opposite)))
    out["pooled"] = {"rho_matched": rm, "rho_opposite": ro, **one_sided(abs(rm) - abs(ro), boot), "unit": "cell"}
    return out


def retrieval_predictivity(table: CellTable, metrics: Sequence[str], *, correction: str = "holm",
                           bootstrap: int = 2000, permutations: int = 10000, seed: int = 0) -> dict:
    """Experiment 3, retrieval predictivity: rSum (total, I->T, T->I) per cell; Spearman rho of
    every metric with every rSum across models, per dataset (models as units), pooled over
    cells (the paper's) and stratified (the mean of the per-dataset rhos, tested by a
    permutation stratified by dataset), each with a bootstrap-over-models interval and
    corrected across the metrics; and the directional claim as a paired bootstrap test of
    ``|rho(SAS(I->T), rSum I->T)| - |rho(SAS(I->T), rSum T->I)| > 0`` (and the same for SAS(T->I)).

    Parameters
    ----------
    table : CellTable
        The study's cells.
    metrics : sequence of str
        The metrics correlated with retrieval.
    correction : {"holm", "bh"}, default "holm"
        Across the metrics, per (target, scope).
    bootstrap : int, default 2000
        Resamples of models.
    permutations : int, default 10000
        Of the stratified permutation test.
    seed : int, default 0
        The random seed (resamples and permutations).

    Returns
    -------
    dict
        ``targets``, ``grids`` (one per target), ``correlations`` (per metric and target:
        ``per_dataset``, ``pooled``, ``stratified``), ``directional`` (per SAS direction:
        ``per_dataset``, ``stratified``, ``pooled`` with ``delta``, its interval and one-sided
        ``p_value``), ``units``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsas.study import CellTable, retrieval_predictivity
    >>> q = np.linspace(0, 1, 6)
    >>> cells = [{"model": f"m{i}", "dataset": d, "status": "ok", "alignment": {"delta_cos": v + 0.01 * j},
    ...           "retrieval": {"rsum": 100 * v + j}, "rsum_i2t": 50 * v, "rsum_t2i": 50 * v}
    ...          for i, v in enumerate(q) for j, d in enumerate(("COCO", "ROCO"))]
    >>> t = CellTable(cells, [f"m{i}" for i in range(6)], ["COCO", "ROCO"], {})
    >>> out = retrieval_predictivity(t, ["delta_cos"], bootstrap=200, permutations=200)
    >>> out["correlations"][0]["per_dataset"]["COCO"]["rho"]
    1.0
    """
    rng = np.random.default_rng(seed)
    idx = bootstrap_models(len(table.models), bootstrap, rng)
    targets = {t: table.grid(t) for t in RETRIEVAL_TARGETS}
    correlations = []
    for target, y in targets.items():
        rows = []
        for name in metrics:
            rows.append({"metric": name, "target": target,
                         **_correlation_block(table.grid(name), y, idx, table.datasets, permutations, rng)})
        for d in table.datasets:
            _adjust(rows, ("per_dataset", d), correction)
        _adjust(rows, ("pooled",), correction)
        _adjust(rows, ("stratified",), correction)
        correlations.extend(rows)
    directional = []
    for sas_key, matched, opposite in (("sas_i2t", "rsum_i2t", "rsum_t2i"), ("sas_t2i", "rsum_t2i", "rsum_i2t")):
        directional.append({"metric": sas_key, "matched": matched, "opposite": opposite,
                            "hypothesis": f"|rho({sas_key}, {matched})| > |rho({sas_key}, {opposite})|",
                            **_directional(table.grid(sas_key), targets[matched], targets[opposite], idx,
                                           table.datasets)})
    return {
        "name": "retrieval predictivity",
        "question": "Which metrics track retrieval across models, and does each SAS direction track its own "
                    "retrieval direction better than the other?",
        "targets": list(RETRIEVAL_TARGETS),
        "grids": {t: table.grid_dict(t) for t in RETRIEVAL_TARGETS},
        "correlations": correlations,
        "directional": directional,
        "bootstrap": bootstrap,
        "permutations": permutations,
        "units": {"per_dataset": TEST_UNITS["within_dataset"], "pooled": TEST_UNITS["pooled"],
                  "stratified": TEST_UNITS["within_dataset"],
                  "directional": "model (paired bootstrap: both correlations from the same resample of models); "
                                 "p = (1 + resamples with delta <= 0) / (1 + resamples)"},
        "correction": correction,
    }


def _separation(values_a: np.ndarray, values_b: np.ndarray) -> float:
    a, b = values_a[np.isfinite(values_a)], values_b[np.isfinite(values_b)]
    return float(a.mean() - b.mean()) if a.size and b.size else math.nan


def _auc(values_a: np.ndarray, values_b: np.ndarray, sign: float) -> tuple[float, int]:
    a, b = values_a[np.isfinite(values_a)], values_b[np.isfinite(values_b)]
    if not (a.size and b.size):
        return math.nan, 0
    diff = sign * (a[:, None] - b[None, :])
    return float(np.mean((diff > 0) + 0.5 * (diff == 0))), int(diff.size)


def _best_q(sweep: np.ndarray, rows: np.ndarray, cols_a: np.ndarray, cols_b: np.ndarray) -> tuple[int, float]:
    """The q index maximising |mean over A cells - mean over B cells| on the given rows (ties:
    the smaller q), and the sign of that difference."""
    diffs = np.array([_separation(sweep[k][np.ix_(rows, cols_a)], sweep[k][np.ix_(rows, cols_b)])
                      for k in range(sweep.shape[0])])
    score = np.where(np.isfinite(diffs), np.abs(diffs), -np.inf)
    k = int(np.argmax(score))
    return k, float(np.sign(diffs[k])) if math.isfinite(diffs[k]) and diffs[k] != 0 else 1.0


def _cv_summary(folds: list[dict], pairs: list[tuple[float, int]], qs: np.ndarray) -> dict:
    from scipy import stats

    seps = np.array([f["separation"] for f in folds], dtype=np.float64)
    seps = seps[np.isfinite(seps)]
    out: dict[str, Any] = {"folds": folds, "held_out_separation": float(seps.mean()) if seps.size else math.nan,
                           "se": float(seps.std(ddof=1) / math.sqrt(seps.size)) if seps.size > 1 else math.nan}
    if seps.size > 1 and out["se"] > 0:
        t_crit = float(stats.t.ppf(0.975, seps.size - 1))
        out.update(ci_low=out["held_out_separation"] - t_crit * out["se"],
                   ci_high=out["held_out_separation"] + t_crit * out["se"],
                   **{k: v for k, v in one_sample_t(seps, alternative="greater").items() if k in ("t", "p_value")})
    weights = sum(w for _, w in pairs)
    out["held_out_auc"] = float(sum(a * w for a, w in pairs if math.isfinite(a)) / weights) if weights else math.nan
    chosen = [f["q"] for f in folds if f.get("q") is not None]
    out["chosen_q"] = {f"{q:g}": chosen.count(q) for q in dict.fromkeys(sorted(chosen))}
    return out


def _cv_models(sweep: np.ndarray, qs: np.ndarray, models: Sequence[str], pair: DomainPair) -> dict:
    folds, pairs = [], []
    all_rows = np.arange(len(models))
    for i, m in enumerate(models):
        train = all_rows[all_rows != i]
        k, sign = _best_q(sweep, train, pair.in_a, pair.in_b)
        a, b = sweep[k][i, pair.in_a], sweep[k][i, pair.in_b]
        auc, w = _auc(a, b, sign)
        folds.append({"held_out": m, "q": float(qs[k]), "sign": sign, "separation": sign * _separation(a, b),
                      "auc": auc})
        pairs.append((auc, w))
    return _cv_summary(folds, pairs, qs)


def _cv_datasets(sweep: np.ndarray, qs: np.ndarray, datasets: Sequence[str], pair: DomainPair) -> dict:
    folds, pairs = [], []
    rows = np.arange(sweep.shape[1])
    for ja in np.flatnonzero(pair.in_a):
        for jb in np.flatnonzero(pair.in_b):
            train_a, train_b = pair.in_a.copy(), pair.in_b.copy()
            train_a[ja] = train_b[jb] = False
            if not (train_a.any() and train_b.any()):
                continue
            k, sign = _best_q(sweep, rows, train_a, train_b)
            va, vb = sweep[k][:, ja], sweep[k][:, jb]
            ok = np.isfinite(va) & np.isfinite(vb)
            sep = sign * float(np.mean(va[ok] - vb[ok])) if ok.any() else math.nan
            auc, w = _auc(va, vb, sign)
            folds.append({"held_out": [datasets[ja], datasets[jb]], "q": float(qs[k]), "sign": sign,
                          "separation": sep, "auc": auc})
            pairs.append((auc, w))
    out = _cv_summary(folds, pairs, qs)
    if not folds:
        out["note"] = "needs two datasets or more in each domain"
    return out


def eigenspectrum_concentration(table: CellTable, *, pair: DomainPair | None = None) -> dict:
    """Experiment 4, eigenspectrum concentration: SAS both ways for every q of the sweep, per
    domain (mean and sd over cells); the q that best separates the domains (|mean A - mean B|
    largest) in sample, as the paper reports it, and chosen by cross-validation: leaving out
    one model at a time (q chosen on the other models, separation measured on the one left
    out) and leaving out one dataset of each domain at a time (chosen on the other datasets).

    Parameters
    ----------
    table : CellTable
        The study's cells.
    pair : DomainPair or None
        The domains compared (None: the first two labels).

    Returns
    -------
    dict
        ``qs``; per direction (``i2t``, ``t2i``): ``curves`` (per domain mean, sd, n per q,
        also the imbalance's), ``in_sample`` (best q, the difference per q), ``cv_models``
        and ``cv_datasets`` (``folds`` with the chosen q and the held-out separation,
        sign-aligned with the training difference; ``held_out_separation`` with its interval
        and one-sided t test over folds; ``held_out_auc``; ``chosen_q`` counts).

    Examples
    --------
    >>> from fastsas.study import CellTable, eigenspectrum_concentration
    >>> qs = [0.1, 0.5, 1.0]
    >>> cells = [{"model": m, "dataset": d, "status": "ok",
    ...           "sas_sweep": {"q": qs, "sas_i2t": [0.9 - s, 0.8 - s / 2, 0.7], "sas_t2i": [0.5, 0.5, 0.5]}}
    ...          for m in ("a", "b", "c") for d, s in (("COCO", 0.0), ("ROCO", 0.4))]
    >>> t = CellTable(cells, ["a", "b", "c"], ["COCO", "ROCO"], {"COCO": "natural", "ROCO": "medical"})
    >>> out = eigenspectrum_concentration(t)
    >>> out["i2t"]["in_sample"]["q"], out["i2t"]["cv_models"]["chosen_q"]
    (0.1, {'0.1': 3})
    """
    pair = pair or _pairs_of(table)
    labels = list(dict.fromkeys(table.domains[d] for d in table.datasets if d in table.domains))
    out: dict[str, Any] = {"name": "eigenspectrum concentration",
                           "question": "How does SAS change with q per domain, and which q separates the domains?",
                           "domains": {"labels": labels, "a": pair.a if pair else None, "b": pair.b if pair else None}}
    qs_i2t, i2t = table.sweep("i2t")
    _, t2i = table.sweep("t2i")
    out["qs"] = qs_i2t.tolist()
    for direction, sweep in (("i2t", i2t), ("t2i", t2i), ("imbalance", i2t - t2i)):
        curves = {}
        for lab in labels:
            cols = np.array([table.domains.get(d) == lab for d in table.datasets])
            stats_q = [_domain_summary(sweep[k][:, cols]) for k in range(sweep.shape[0])]
            curves[lab] = {key: [s[key] for s in stats_q] for key in ("mean", "sd", "n")}
        block: dict[str, Any] = {"curves": curves}
        if pair is not None and sweep.shape[0] and direction != "imbalance":
            rows = np.arange(sweep.shape[1])
            diffs = [_separation(sweep[k][:, pair.in_a], sweep[k][:, pair.in_b]) for k in range(sweep.shape[0])]
            k, _ = _best_q(sweep, rows, pair.in_a, pair.in_b)
            block["in_sample"] = {"q": float(qs_i2t[k]), "difference": diffs,
                                  "note": "chosen and measured on the same cells (biased upward, as in the paper)"}
            block["cv_models"] = _cv_models(sweep, qs_i2t, table.models, pair)
            block["cv_datasets"] = _cv_datasets(sweep, qs_i2t, table.datasets, pair)
        out[direction] = block
    out["units"] = {"cv_models": "model (each model's cells held out in turn)",
                    "cv_datasets": "dataset pair (one dataset of each domain held out in turn)"}
    return out


def compare_models(table: CellTable, pairs: Sequence[Sequence[str]], metrics: Sequence[str], *,
                   correction: str = "holm") -> list[dict]:
    """Paired comparisons of two models on each dataset both have: for every alignment metric,
    the paired delete-a-block jackknife of the difference over the same blocks
    (:func:`fastsas.audit.paired_difference` of the cells' leave-one-out values), corrected
    across the metrics of each (pair, dataset).

    The cells must hold the same items in the same order (the same pairs of rows, or the
    same ids): the number of pairs and the ids' fingerprint are checked.

    Parameters
    ----------
    table : CellTable
        The study's cells (reference models may be compared too).
    pairs : sequence of (str, str)
        The (model a, model b) pairs; differences are a - b.
    metrics : sequence of str
        The metrics compared (those with a jackknife).
    correction : {"holm", "bh"}, default "holm"
        Across the metrics of each (pair, dataset).

    Returns
    -------
    list of dict
        One per (pair, dataset): ``model_a``, ``model_b``, ``dataset``, ``status``,
        ``blocks``, ``metrics`` (per metric: ``value``, ``se``, ``ci_low``, ``ci_high``,
        ``t``, ``df``, ``p_value``, ``p_adjusted``).

    Examples
    --------
    >>> from fastsas.study import CellTable, compare_models
    >>> cell = lambda m, v, r: {"model": m, "dataset": "ROCO", "status": "ok", "n_pairs": 10,
    ...     "alignment": {"cka": v}, "jackknife": {"blocks": 3, "replicates": {"cka": r}}}
    >>> t = CellTable([cell("a", 0.8, [0.79, 0.8, 0.81]), cell("b", 0.5, [0.5, 0.49, 0.51])], ["a", "b"], ["ROCO"], {})
    >>> out = compare_models(t, [("a", "b")], ["cka"])
    >>> round(out[0]["metrics"]["cka"]["value"], 12), out[0]["blocks"]
    (0.3, 3)
    """
    out = []
    for a, b in pairs:
        for d in table.datasets:
            ca, cb = table.cells.get((a, d)), table.cells.get((b, d))
            if ca is None or cb is None:
                continue
            row: dict[str, Any] = {"model_a": a, "model_b": b, "dataset": d}
            ja, jb = ca.get("jackknife") or {}, cb.get("jackknife") or {}
            same_items = (ca.get("n_pairs") == cb.get("n_pairs") and ja.get("blocks") == jb.get("blocks")
                          and ca.get("items") == cb.get("items"))
            if not same_items or "replicates" not in ja or "replicates" not in jb:
                row["status"] = ("not comparable: the cells do not hold the same items in the same jackknife blocks "
                                 f"({ca.get('n_pairs')} vs {cb.get('n_pairs')} pairs, ids "
                                 f"{'equal' if ca.get('items') == cb.get('items') else 'different'})")
                out.append(row)
                continue
            row.update(status="ok", blocks=ja["blocks"], metrics={})
            for name in metrics:
                ra, rb = ja["replicates"].get(name), jb["replicates"].get(name)
                if ra is None or rb is None:
                    continue
                row["metrics"][name] = paired_difference(CellTable.cell_value(ca, name), CellTable.cell_value(cb, name),
                                                         [_num(v) for v in ra], [_num(v) for v in rb])
            names = list(row["metrics"])
            adjusted = adjust_pvalues([row["metrics"][k]["p_value"] for k in names], correction)
            for k, p in zip(names, adjusted):
                row["metrics"][k].update(p_adjusted=float(p), correction=correction)
            out.append(row)
    return out


def default_comparisons(models: Sequence[str], limit: int = 5) -> list[tuple[str, str]]:
    """Every pair of the pooled models when there are at most `limit` of them, else none."""
    return list(itertools.combinations(models, 2)) if len(models) <= limit else []
