"""What an audit found (:class:`AuditResult`), and how the merged state of the pass, plus
retrieval, becomes it (:func:`finalize`): the whole archive's metrics with jackknife
intervals, subgroups, drift, the SAS profile and sweep, suspected mismatches."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from fastsas import _core
from fastsas.audit.intervals import jackknife, merge_all
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
        ``blocks``, ``method``, ``confidence``; per metric of ``JACKKNIFE_METRICS`` its
        ``value``, ``se``, ``ci_low``, ``ci_high`` (95%, Student t with blocks - 1 degrees of
        freedom); ``imbalance_test``: ``t``, ``df``, ``p_value``, ``null``.
    groups : list of dict
        Per subgroup: ``group`` (the label), ``n``, ``status`` ("ok", "too_small: ...",
        "failed: ..."), ``alignment``, ``uncertainty`` (when the subgroup has enough rows
        per block), ``retrieval_whole`` (its queries against the whole gallery),
        ``retrieval_within`` (retrieval inside the subgroup).
    mismatches : list of dict
        The pairs whose own match ranks worst in both directions: ``row``, ``i2t_rank``,
        ``t2i_rank`` and ``id`` (with ids).
    drift : list of dict
        One row per period (sorted), as ``groups``.
    profiles : dict
        Per direction ("i2t", "t2i"): ``eigenvalues`` and per-mode ``rho`` (lists).
    sas_sweep : dict
        SAS both ways for q = 0.1 ... 1.0: lists under ``q``, ``sas_i2t``, ``sas_t2i``.
    backend : dict
        Which engine computed ``moments`` and ``retrieval`` ("cpu", "cuda", "dask").
    definitions_version : str
        The version of docs/definitions.md the numbers follow.

    Examples
    --------
    >>> import fastsas as fs, numpy as np
    >>> x, y = fs.synthetic.paired_embeddings(3000, 16, image_only_factors=2)
    >>> result = fs.audit(x, y, groups=np.arange(3000) % 2, backend="cpu")
    >>> print(result)  # doctest: +ELLIPSIS
    AuditResult(n=3000, dim=16, topq=0.1, SAS(I->T)=0.2853 [...], SAS(T->I)=0.9889 [...], ..., 2 subgroups, 0 periods, 20 suspected mismatches, backend moments=cpu retrieval=cpu)
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
        parts += [f"{len(self.groups)} subgroups", f"{len(self.drift)} periods",
                  f"{len(self.mismatches)} suspected mismatches",
                  "backend " + " ".join(f"{k}={v}" for k, v in self.backend.items())]
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


def _suspects(ret: dict, icodes: np.ndarray, tcodes: np.ndarray, image_ids, count: int) -> list[dict]:
    """Image rows whose match ranks badly both ways: score = min(i2t rank of the image,
    best t2i rank among its matching texts). Pairs retrieved at rank 1 either way are not
    suspects."""
    n_images, n_texts = len(icodes), len(tcodes)
    i2t = np.zeros(n_images, dtype=np.int64)
    i2t[ret["i2t_queries"]] = ret["i2t_ranks"]
    t2i = np.zeros(n_texts, dtype=np.int64)
    t2i[ret["t2i_queries"]] = ret["t2i_ranks"]
    # best t2i rank per id, then per image through its id
    big = np.iinfo(np.int64).max
    best_t2i = np.full(int(max(icodes.max(initial=0), tcodes.max(initial=0))) + 1, big, dtype=np.int64)
    matched_texts = t2i > 0
    np.minimum.at(best_t2i, tcodes[matched_texts], t2i[matched_texts])
    back = best_t2i[icodes]
    ok = (i2t > 0) & (back < big)
    score = np.where(ok, np.minimum(i2t, back), 0)
    order = np.lexsort((-(i2t + np.where(ok, back, 0)), -score))  # worst first
    out = []
    for row in order[:count]:
        if score[row] <= 1:
            break
        item = {"row": int(row), "i2t_rank": int(i2t[row]), "t2i_rank": int(back[row])}
        if image_ids is not None:
            item["id"] = np.asarray(image_ids)[row].item()
        out.append(item)
    return out


def _group_results(d, retrieve, labels, codes, cells_by_group, q, whole_ret, image_ids, text_ids, ks, threads,
                   within, progress=None) -> tuple[list[dict], dict | None]:
    """Per-group rows, and (when `within`) every group's within-group ranks gathered into
    whole-archive row numbers, in the layout fs.retrieval(return_ranks=True) uses."""
    if labels is None:
        return [], None
    out = []
    gathered: dict[str, list] = {"i2t_ranks": [], "i2t_queries": [], "t2i_ranks": [], "t2i_queries": []}
    items = list(enumerate(labels))
    if progress is not None and within:
        items = progress(items, "subgroups (alignment, retrieval within)", len(items))
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
            if len(cells) >= 2 and all(c.count >= 2 for c in cells):
                row["uncertainty"] = jackknife(cells, q, threads, row["alignment"])
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
        if within and len(members) > max(ks):
            ids = (None, None) if image_ids is None else (np.asarray(image_ids)[members], np.asarray(text_ids)[members])
            try:
                r = retrieve(members, ids[0], ids[1])
            except ValueError as exc:
                row["retrieval_within"] = {"status": f"failed: {exc}"}
            else:
                row["retrieval_within"] = _summary(r)
                for side in ("i2t", "t2i"):
                    gathered[f"{side}_ranks"].append(r[f"{side}_ranks"])
                    gathered[f"{side}_queries"].append(members[r[f"{side}_queries"]])
        out.append(row)
    if not within or not gathered["i2t_ranks"]:
        return out, None
    merged = {}
    for side in ("i2t", "t2i"):
        queries = np.concatenate(gathered[f"{side}_queries"])
        order = np.argsort(queries, kind="stable")
        merged[f"{side}_queries"] = queries[order]
        merged[f"{side}_ranks"] = np.concatenate(gathered[f"{side}_ranks"])[order]
    return out, merged


def finalize(plan: Any, state: Any, retrieve: Any, threads: int, progress: Any = None,
             backend: dict | None = None) -> AuditResult:
    """The AuditResult of an :class:`~fastsas.audit.AuditPlan` from the merged
    :class:`~fastsas.audit.AuditState` of every row.

    retrieve(rows, image_ids, text_ids) returns ``fs.retrieval(..., return_ranks=True)`` over
    the whole archive (rows None) or over the given rows (sorted row numbers, with those
    rows' ids or None). backend: which engine ran the moments and the retrieval, recorded
    in the result.
    """
    n, d, q = plan.n, plan.d, plan.q
    if state.count != n:
        raise ValueError(f"the merged audit state holds {state.count} rows, the plan {n}: a block is missing")
    block_states = state.states("blocks")
    whole = Moments._from_core(merge_all(block_states))
    alignment = whole.alignment(q)
    uncertainty = jackknife(block_states, q, threads, alignment)
    profiles = {}
    for direction in ("i2t", "t2i"):
        prof = whole.spectral_profile(direction)
        profiles[direction] = {"eigenvalues": prof.eigenvalues.tolist(), "rho": prof.rho.tolist()}
    sas_sweep = {k: np.asarray(v).tolist() for k, v in whole.sas_sweep().items()}

    ret = None
    if plan.retrieval in ("both", "whole"):
        steps = progress([None], "retrieval, whole gallery", 1) if progress else [None]
        for _ in steps:
            ret = retrieve(None, plan.image_ids, plan.text_ids)
    within = plan.retrieval in ("both", "within") and plan.group_labels is not None
    group_cells = None
    if plan.group_labels:
        cells = state.states("cells")
        b = plan.cell_blocks
        group_cells = [cells[g * b:(g + 1) * b] for g in range(len(plan.group_labels))]
    group_rows, within_ranks = _group_results(d, retrieve, plan.group_labels, plan.group_codes, group_cells, q,
                                              ret, plan.image_ids, plan.text_ids, plan.ks, threads, within,
                                              progress)
    period_cells = [[s] for s in state.states("periods")] if plan.period_labels else None
    drift, _ = _group_results(d, retrieve, plan.period_labels, plan.period_codes, period_cells, q, None, None,
                              None, plan.ks, threads, False)
    suspects: list[dict] = []
    rank_source = ret if ret is not None else within_ranks
    if rank_source is not None and plan.mismatches:
        if plan.image_ids is None:  # default ground truth: row i <-> row i
            id_codes = text_codes = np.arange(n, dtype=np.int64)
        else:
            id_codes, text_codes = plan.id_codes, plan.text_codes
        suspects = _suspects(rank_source, id_codes, text_codes, plan.image_ids, plan.mismatches)
    return AuditResult(n=int(n), dim=int(d), topq=q, alignment=alignment,
                       retrieval=_summary(ret) if ret is not None else None, uncertainty=uncertainty,
                       groups=group_rows, mismatches=suspects, drift=drift, profiles=profiles,
                       sas_sweep=sas_sweep,
                       backend=dict(backend or CPU_ONLY))
