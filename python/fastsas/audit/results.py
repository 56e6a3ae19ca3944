"""What an audit found (:class:`AuditResult`), and how the merged state of the pass, plus
retrieval and the passes that read the rows again, becomes it (:func:`finalize`): the whole
archive's metrics with jackknife intervals and their chance level, SAS's conditioning,
subgroups against the rest, drift with a trend test, the SAS profile and sweep, and the
suspected-mismatch test."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from fastsas import _core
from fastsas.audit.chance import chance_alignment, chance_recall
from fastsas.audit.conditioning import companion_of, conditioning
from fastsas.audit.contrasts import group_contrasts, recall_interval, trend
from fastsas.audit.intervals import RANGES, interval, jackknife, leave_one_out, merge_all
from fastsas.audit.mismatch import mismatch_test
from fastsas.moments import Moments

__all__ = ["AuditResult", "CPU_ONLY", "finalize", "merge_all"]

CPU_ONLY = {"moments": "cpu", "retrieval": "cpu"}  # AuditResult.backend of an all-CPU audit


@dataclass(frozen=True)
class AuditResult:
    """Everything an audit found; :meth:`to_dict` is JSON-serialisable, and printing one
    shows a summary (the full arrays are in the attributes).

    Attributes
    ----------
    n, dim : int
        Pairs and embedding dimension.
    topq : float
        SAS's top fraction of anchor modes.
    alignment : dict
        :func:`fastsas.alignment` of the whole archive.
    retrieval : dict or None
        Whole-gallery retrieval summary (:func:`fastsas.retrieval` without the rank
        arrays), None when retrieval was not computed over the whole gallery.
    uncertainty : dict
        ``blocks``, ``method``, ``confidence``; per metric of ``JACKKNIFE_METRICS`` (and the
        companion scores ``sas_companion_i2t``, ``sas_companion_t2i``) its ``value``, ``se``,
        ``ci_low``, ``ci_high`` (95%, Student t with blocks - 1 degrees of freedom, clipped to
        the metric's range), ``clipped``; ``imbalance_test``: ``t``, ``df``, ``p_value``,
        ``null``; ``eigenvalue_se`` per direction; ``retrieval``: intervals of R@k.
    unit : dict
        The unit of uncertainty: ``name`` (the id column, or "pair"), ``count`` (units),
        ``by`` ("id" or "row"), ``blocks`` (jackknife blocks).
    notes : list of str
        Options adapted to the archive (fewer jackknife blocks, dropped cutoffs), in words.
    groups : list of dict
        Per subgroup: ``group`` (the label; "(missing)" for rows without one), ``n``,
        ``status`` ("ok", "too_small: ...", "failed: ..."), ``alignment``, ``uncertainty``
        (when the subgroup has enough rows per block), ``retrieval_whole`` (its queries
        against the whole gallery) with ``retrieval_whole_uncertainty``,
        ``retrieval_within`` (retrieval inside the subgroup).
    contrasts : list of dict
        Each subgroup against the rest of the archive (:func:`fastsas.audit.contrasts.group_contrasts`).
    mismatches : list of dict
        The flagged units to show (at most `mismatches`, most certain first): ``row``, ``id``
        (with ids), ``statistic``, ``z_i2t``, ``z_t2i``, ``p_value``, ``lfdr``, and with
        whole-gallery retrieval ``i2t_rank``, ``t2i_rank``.
    mismatch_test : dict
        The test behind them: ``flagged`` (every flagged unit, never capped), ``shown``,
        ``fdr``, ``estimated_fdr``, ``power``, ``has_power``, ``status``, the fitted laws.
    drift : list of dict
        One row per period (sorted; "(missing)" last), as ``groups``, with intervals.
    drift_trend : dict or None
        The slope over the periods with its interval and test.
    conditioning : dict
        Near-degenerate anchor eigenvalues and the companion score per direction
        (:func:`fastsas.audit.conditioning.conditioning`).
    chance : dict
        The metrics with the pairing destroyed (``alignment``: mean, min, max over the
        re-pairings; ``retrieval``: expected R@k by chance; ``ideal`` values).
    profiles : dict
        Per direction ("i2t", "t2i"): ``eigenvalues`` and per-mode ``rho`` (lists).
    sas_sweep : dict
        SAS both ways for q = 0.1 ... 1.0: lists under ``q``, ``sas_i2t``, ``sas_t2i``.
    backend : dict
        Which engine computed ``moments`` and ``retrieval`` ("cpu", "cuda", "dask").
    definitions_version : str
        The version of docs/definitions.md the numbers follow.
    neighbourhood : dict or None
        With ``neighbourhood=topk``: the neighbourhood family of the whole archive (``topk``,
        ``status``, mutual/cycle/LCS/edit-distance k-NN, ``cknna``, ``cknna_biased``); each
        subgroup's row then has its own ``neighbourhood``. None when not asked for.

    Examples
    --------
    >>> import fastsas as fs, numpy as np
    >>> x, y = fs.synthetic.paired_embeddings(3000, 16, image_only_factors=2)
    >>> result = fs.audit(x, y, groups=np.arange(3000) % 2, backend="cpu")
    >>> print(result)  # doctest: +ELLIPSIS
    AuditResult(n=3000, dim=16, topq=0.1, SAS(I->T)=0.2853 [...], SAS(T->I)=0.9889 [...], ..., 2 subgroups, 0 periods, 0 suspected mismatches (test: ...), unit pair (3,000), backend moments=cpu retrieval=cpu)
    """

    n: int
    dim: int
    topq: float
    alignment: dict
    retrieval: dict | None
    uncertainty: dict
    groups: list = field(default_factory=list)
    mismatches: list = field(default_factory=list)
    drift: list = field(default_factory=list)
    profiles: dict = field(default_factory=dict)
    sas_sweep: dict = field(default_factory=dict)
    # Which backend computed what: the moments always run on the CPU core (or Dask workers);
    # retrieval follows the `backend` argument.
    backend: dict = field(default_factory=lambda: dict(CPU_ONLY))
    definitions_version: str = _core.DEFINITIONS_VERSION
    unit: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    contrasts: list = field(default_factory=list)
    mismatch_test: dict = field(default_factory=dict)
    drift_trend: dict | None = None
    conditioning: dict = field(default_factory=dict)
    chance: dict = field(default_factory=dict)
    neighbourhood: dict | None = None

    def to_dict(self) -> dict:
        """Every field as plain data (dicts, lists, numbers, strings)."""
        return asdict(self)

    def group(self, label: Any) -> dict:
        """The row of subgroup `label`; KeyError lists the subgroups."""
        for g in self.groups:
            if g["group"] == label:
                return g
        raise KeyError(f"no subgroup {label!r}; subgroups: {[g['group'] for g in self.groups]}")

    def __repr__(self) -> str:
        a, unc = self.alignment, self.uncertainty

        def shown(key: str, name: str) -> str:
            u = unc.get(key) if isinstance(unc, dict) else None
            ci = f" [{u['ci_low']:.4f}, {u['ci_high']:.4f}]" if isinstance(u, dict) else ""
            return f"{name}={a[key]:.4f}{ci}"

        p = (unc.get("imbalance_test") or {}).get("p_value") if isinstance(unc, dict) else None
        parts = [f"n={self.n}", f"dim={self.dim}", f"topq={self.topq:g}", shown("sas_i2t", "SAS(I->T)"),
                 shown("sas_t2i", "SAS(T->I)"), shown("sas_imbalance", "imbalance")]
        if p is not None:
            parts.append(f"imbalance test p={p:.2g}")
        if self.retrieval:
            parts.append(f"rsum={self.retrieval.get('rsum', float('nan')):.2f}")
        test = self.mismatch_test or {}
        status = test.get("status", "not run")
        parts += [f"{len(self.groups)} subgroups", f"{len(self.drift)} periods",
                  f"{test.get('flagged', 0)} suspected mismatches (test: {status.split(':')[0]})"]
        if self.unit:
            parts.append(f"unit {self.unit.get('name')} ({self.unit.get('count', 0):,})")
        parts.append("backend " + " ".join(f"{k}={v}" for k, v in self.backend.items()))
        return "AuditResult(" + ", ".join(parts) + ")"


def _summary(r: dict) -> dict:
    return {k: v for k, v in r.items() if not isinstance(v, np.ndarray)}


def _recall(ranks: np.ndarray, ks: Sequence[int], prefix: str) -> dict:
    if ranks.size == 0:
        return {f"{prefix}_queries": 0}
    out = {f"{prefix}_r{k}": float(np.mean(ranks <= k)) for k in ks}
    out[f"{prefix}_median_rank"] = float(np.median(ranks))
    out[f"{prefix}_queries"] = int(ranks.size)
    return out


def _group_results(d, retrieve, labels, codes, cells_by_group, q, whole_ret, image_ids, text_ids, ks, threads,
                   within, progress=None, cell_blocks=None, per_group=0) -> tuple[list[dict], dict | None, dict]:
    """Per-group rows; (when `within`) every group's within-group ranks gathered into
    whole-archive row numbers, in the layout fs.retrieval(return_ranks=True) uses; and the
    jackknife replicates of every group with an interval (for the contrasts and the trend)."""
    replicates: dict[int, dict] = {}
    if labels is None:
        return [], None, replicates
    out = []
    gathered: dict[str, list] = {"i2t_ranks": [], "i2t_queries": [], "t2i_ranks": [], "t2i_queries": []}
    items = list(enumerate(labels))
    if progress is not None:
        items = progress(items, "subgroups (alignment with intervals" + (", retrieval within)" if within else ")"),
                         len(items))
    for g, label in items:
        cells = [c for c in cells_by_group[g] if c.count > 0]
        core = merge_all(cells) if cells else _core.Moments(d, track_unit_rows=True)
        row: dict[str, Any] = {"group": label, "n": int(core.count)}
        if core.count < 2:
            row["status"] = f"too_small: {core.count} pair(s), alignment needs at least 2"
            out.append(row)
            continue
        try:
            row["alignment"] = Moments._from_core(core).alignment(q)
            row["status"] = "ok"
            if len(cells) == len(cells_by_group[g]) >= 2 and all(c.count >= 2 for c in cells):
                unc = jackknife(cells, q, threads, row["alignment"], replicates=True)
                replicates[g] = unc.pop("replicates")
                row["uncertainty"] = unc
            elif len(cells_by_group[g]) > 1:
                row["uncertainty_note"] = "too few rows per jackknife block for an interval"
        except ValueError as exc:
            row["status"] = f"failed: {exc}"
            out.append(row)
            continue
        members = np.flatnonzero(codes == g)
        if whole_ret is not None:
            in_group = np.zeros(len(codes), dtype=bool)
            in_group[members] = True
            row["retrieval_whole"] = {
                **_recall(whole_ret["i2t_ranks"][in_group[whole_ret["i2t_queries"]]], ks, "i2t"),
                # rows are paired, so text row i belongs to the group of pair i
                **_recall(whole_ret["t2i_ranks"][in_group[whole_ret["t2i_queries"]]], ks, "t2i"),
            }
            if per_group >= 2 and cell_blocks is not None:
                row["retrieval_whole_uncertainty"] = recall_interval(whole_ret, cell_blocks, cell_blocks, per_group,
                                                                     ks, in_group)
        if within and len(members) > max(ks):
            ids = (None, None) if image_ids is None else (np.asarray(image_ids)[members], np.asarray(text_ids)[members])
            try:
                r = retrieve(members, ids[0], ids[1])
            except ValueError as exc:
                row["retrieval_within"] = {"status": f"failed: {exc}"}
            else:
                row["retrieval_within"] = _summary(r)
                if per_group >= 2 and cell_blocks is not None:
                    local = {f"{side}_{part}": (r[f"{side}_{part}"] if part == "ranks" else members[r[f"{side}_queries"]])
                             for side in ("i2t", "t2i") for part in ("ranks", "queries")}
                    row["retrieval_within_uncertainty"] = recall_interval(local, cell_blocks, cell_blocks, per_group,
                                                                          ks)
                for side in ("i2t", "t2i"):
                    gathered[f"{side}_ranks"].append(r[f"{side}_ranks"])
                    gathered[f"{side}_queries"].append(members[r[f"{side}_queries"]])
        out.append(row)
    if not within or not gathered["i2t_ranks"]:
        return out, None, replicates
    merged = {}
    for side in ("i2t", "t2i"):
        queries = np.concatenate(gathered[f"{side}_queries"])
        order = np.argsort(queries, kind="stable")
        merged[f"{side}_queries"] = queries[order]
        merged[f"{side}_ranks"] = np.concatenate(gathered[f"{side}_ranks"])[order]
    return out, merged, replicates


def _split(cells: list, count: int, per: int) -> list[list]:
    return [cells[g * per:(g + 1) * per] for g in range(count)]


def finalize(plan: Any, state: Any, retrieve: Any, threads: int, progress: Any = None,
             backend: dict | None = None, rows: Any = None, chunk_rows: int = 65536) -> AuditResult:
    """The AuditResult of an :class:`~fastsas.audit.AuditPlan` from the merged
    :class:`~fastsas.audit.AuditState` of every row.

    retrieve(rows, image_ids, text_ids) returns ``fs.retrieval(..., return_ranks=True)`` over
    the whole archive (rows None) or over the given rows (sorted row numbers, with those
    rows' ids or None). rows: an :class:`~fastsas.audit.rows.ArchiveRows` for the passes
    that read the rows again (the mismatch statistic, the chance level); None leaves both
    out. backend: which engine ran the moments and the retrieval, recorded in the result.
    """
    n, d, q = plan.n, plan.d, plan.q
    if state.count != n:
        raise ValueError(f"the merged audit state holds {state.count} rows, the plan {n}: a block is missing")
    block_states = state.states("blocks")
    whole_core = merge_all(block_states)
    whole = Moments._from_core(whole_core)
    alignment = whole.alignment(q)
    uncertainty = jackknife(block_states, q, threads, alignment, eigenvalues=True, replicates=True,
                            progress=progress)
    sas_reps = uncertainty["replicates"]  # kept: paired comparisons of archives over the same blocks
    cond = conditioning(whole_core, q, uncertainty["eigenvalue_se"])
    # The companion scores' intervals: the same blocks left out, the mode blocks fixed by
    # the whole archive. With every kept mode well separated the companion is SAS.
    reps: dict[str, list[float]] = {k: list(sas_reps[f"sas_{k}"]) for k in ("i2t", "t2i") if not cond[k]["degenerate"]}
    if len(reps) < 2:
        steps = leave_one_out(block_states)
        if progress is not None:
            steps = progress(steps, "jackknife of the companion score", len(block_states))
        todo = [k for k in ("i2t", "t2i") if k not in reps]
        for k in todo:
            reps[k] = []
        for m in steps:
            for k in todo:
                reps[k].append(companion_of(m, k, [tuple(b) for b in cond[k]["mode_blocks"]], cond[k]["kept"]))
    for k in ("i2t", "t2i"):
        key = f"sas_companion_{k}"
        uncertainty[key] = interval(cond[k]["companion"], reps[k], RANGES[key])
        sas_reps[key] = list(reps[k])
        cond[k]["companion_interval"] = uncertainty[key]
    profiles = {}
    for direction in ("i2t", "t2i"):
        prof = whole.spectral_profile(direction)
        profiles[direction] = {"eigenvalues": prof.eigenvalues.tolist(), "rho": prof.rho.tolist()}
    sas_sweep = {k: np.asarray(v).tolist() for k, v in whole.sas_sweep().items()}

    ret = None
    if plan.retrieval in ("both", "whole"):
        ret = retrieve(None, plan.image_ids, plan.text_ids)
        uncertainty["retrieval"] = recall_interval(ret, plan.block_codes, plan.text_block_codes(),
                                                   plan.jackknife_blocks, plan.ks, keep_replicates=True)
    within = plan.retrieval in ("both", "within") and plan.group_labels is not None
    group_cells = None
    cell_blocks = None
    if plan.group_labels:
        group_cells = _split(state.states("cells"), len(plan.group_labels), plan.cell_blocks)
        cell_blocks = (plan.cell_codes % plan.cell_blocks).astype(np.int64)
    group_rows, within_ranks, group_reps = _group_results(
        d, retrieve, plan.group_labels, plan.group_codes, group_cells, q, ret, plan.image_ids, plan.text_ids,
        plan.ks, threads, within, progress, cell_blocks, plan.cell_blocks)
    contrasts = (group_contrasts(plan.group_labels, group_cells, group_rows, group_reps, q, threads, ret,
                                 plan.group_codes, cell_blocks, plan.cell_blocks, progress)
                 if plan.group_labels else [])
    drift, drift_trend = [], None
    if plan.period_labels:
        period_cells = _split(state.states("periods"), len(plan.period_labels), plan.period_blocks)
        drift, _, period_reps = _group_results(d, retrieve, plan.period_labels, plan.period_codes, period_cells, q,
                                               None, None, None, plan.ks, threads, False)
        drift_trend = trend(plan.period_labels, drift, period_reps, plan.period_blocks)

    chance: dict[str, Any] = {"retrieval": chance_recall(plan.id_codes, plan.text_codes, n, plan.ks)}
    test: dict[str, Any] = {"status": "not run (mismatch_fdr=None)"}
    suspects: list[dict] = []
    if rows is None:
        chance["alignment"] = None
        chance["note"] = "the permuted-pairing pass needs the rows again, which this run did not give"
        if plan.tests_mismatches:
            test = {"status": "not run: the rows were not available again after the pass"}
    else:
        if plan.chance_repeats:
            chance["alignment"] = chance_alignment(rows, d, q, plan.chance_repeats, plan.seed, threads, progress)
        if plan.tests_mismatches:
            unit_state = state.states("unit")[0]
            test, suspects = mismatch_test(plan, unit_state, rows, chunk_rows=chunk_rows, progress=progress,
                                           ranks=ret if ret is not None else within_ranks)
    return AuditResult(n=int(n), dim=int(d), topq=q, alignment=alignment,
                       retrieval=_summary(ret) if ret is not None else None, uncertainty=uncertainty,
                       groups=group_rows, mismatches=suspects, drift=drift, profiles=profiles,
                       sas_sweep=sas_sweep, backend=dict(backend or CPU_ONLY), unit=dict(plan.unit),
                       notes=list(plan.notes), contrasts=contrasts, mismatch_test=test, drift_trend=drift_trend,
                       conditioning=cond, chance=chance)
