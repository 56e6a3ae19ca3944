"""Tests between parts of an archive (docs/definitions.md, "Audits"): each subgroup against
the rest of the archive, a trend over periods, and block-jackknife intervals of retrieval
recall. Every test is a delete-a-block jackknife over the same blocks on both sides (the
units of uncertainty), so rows of one unit never count as independent."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fastsas._multiple_tests import adjust_pvalues
from fastsas.audit.intervals import RANGES, interval, jackknife, merge_all, t_test  # t_test: re-exported
from fastsas.moments import Moments

__all__ = ["CONTRAST_METRICS", "MAX_CONTRAST_GROUPS", "group_contrasts", "recall_interval", "t_test",
           "recall_replicates", "trend"]

CONTRAST_METRICS = ("sas_i2t", "sas_t2i", "cka")
MAX_CONTRAST_GROUPS = 50  # subgroups tested against the rest (each costs a jackknife of the rest)


def recall_replicates(ranks: np.ndarray, blocks: np.ndarray, count: int, k: int) -> tuple[float, list[float]]:
    """(R@k, its leave-one-block-out values) of queries with these ranks in these blocks."""
    hits = (ranks <= k).astype(np.float64)
    h = np.bincount(blocks, weights=hits, minlength=count)
    q = np.bincount(blocks, minlength=count).astype(np.float64)
    rest_q = q.sum() - q
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = (h.sum() - h) / rest_q
    return float(h.sum() / q.sum()), [float(r) for r in reps if np.isfinite(r)]


def recall_interval(ret: dict, image_blocks: np.ndarray, text_blocks: np.ndarray, count: int,
                    ks: Sequence[int], query_mask: np.ndarray | None = None, keep_replicates: bool = False) -> dict:
    """Block-jackknife 95% intervals (clipped to [0, 1]) of ``i2t_r{k}``, ``t2i_r{k}`` of a
    retrieval with ranks; `query_mask` (per row) keeps the queries of a part of the archive;
    `keep_replicates` also keeps the leave-one-block-out values (``replicates``)."""
    out: dict[str, Any] = {}
    for side, blocks in (("i2t", image_blocks), ("t2i", text_blocks)):
        rows = ret[f"{side}_queries"]
        ranks = ret[f"{side}_ranks"]
        if query_mask is not None:
            keep = query_mask[rows]
            rows, ranks = rows[keep], ranks[keep]
        if rows.size == 0:
            continue
        for k in ks:
            value, reps = recall_replicates(ranks, blocks[rows], count, k)
            if len(reps) >= 2:
                out[f"{side}_r{k}"] = interval(value, reps, RANGES["recall"])
                if keep_replicates and len(reps) == count:
                    out[f"{side}_r{k}"]["replicates"] = reps
    return out


def group_contrasts(labels: list, cells_by_group: list, group_rows: list[dict], group_replicates: dict,
                    topq: float, threads: int, ret: dict | None, group_codes: np.ndarray,
                    cell_block_of_row: np.ndarray, per_group: int, progress: Any = None) -> list[dict]:
    """Every subgroup against the rest of the archive: the difference of SAS both ways and
    CKA (moments of the group's cells against the merge of every other group's cells of the
    same blocks) and of whole-gallery R@1 both ways, with a paired delete-a-block jackknife
    interval, a two-sided t test (blocks - 1 degrees of freedom) and Holm's correction over
    the subgroups of each metric. Only with at least 2 blocks per subgroup."""
    if per_group < 2 or len(labels) < 2:
        return []
    tested = [g for g, row in enumerate(group_rows) if g in group_replicates][:MAX_CONTRAST_GROUPS]
    items = progress(tested, "subgroups against the rest", len(tested)) if progress is not None else tested
    out: list[dict] = []
    for g in items:
        rest_blocks = []
        for b in range(per_group):
            cells = [cells_by_group[h][b] for h in range(len(labels)) if h != g and cells_by_group[h][b].count > 0]
            if not cells:
                break
            rest_blocks.append(merge_all(cells))
        if len(rest_blocks) < per_group or any(c.count < 2 for c in rest_blocks):
            continue
        rest_value = Moments._from_core(merge_all(rest_blocks)).alignment(topq)
        try:
            rest = jackknife(rest_blocks, topq, threads, rest_value, replicates=True)
        except ValueError:
            continue
        row = {"group": labels[g], "tests": {}}
        mine = group_rows[g]["alignment"]
        for key in CONTRAST_METRICS:
            diff = mine[key] - rest_value[key]
            reps = np.asarray(group_replicates[g][key]) - np.asarray(rest["replicates"][key])
            row["tests"][key] = _difference(diff, reps, mine[key], rest_value[key])
        if ret is not None:
            in_group = group_codes == g
            for side in ("i2t", "t2i"):
                rows, ranks = ret[f"{side}_queries"], ret[f"{side}_ranks"]
                mask = in_group[rows]
                if mask.all() or not mask.any():
                    continue
                v_g, rep_g = recall_replicates(ranks[mask], cell_block_of_row[rows[mask]], per_group, 1)
                v_r, rep_r = recall_replicates(ranks[~mask], cell_block_of_row[rows[~mask]], per_group, 1)
                if len(rep_g) == len(rep_r) == per_group:
                    row["tests"][f"{side}_r1"] = _difference(v_g - v_r, np.asarray(rep_g) - np.asarray(rep_r), v_g,
                                                             v_r)
        out.append(row)
    for key in list(CONTRAST_METRICS) + ["i2t_r1", "t2i_r1"]:
        having = [r for r in out if key in r["tests"]]
        for r, p in zip(having, adjust_pvalues([r["tests"][key]["p_value"] for r in having], "holm").tolist()):
            r["tests"][key]["p_holm"] = p
            r["tests"][key]["significant"] = bool(p < 0.05)
    return out


def _difference(diff: float, reps: np.ndarray, group_value: float, rest_value: float) -> dict:
    ci = interval(float(diff), reps.tolist())
    t, p = t_test(float(diff), ci["se"], len(reps) - 1)
    return {"group": float(group_value), "rest": float(rest_value), "difference": float(diff), "se": ci["se"],
            "ci_low": ci["ci_low"], "ci_high": ci["ci_high"], "t": t, "df": len(reps) - 1, "p_value": p,
            "null": "the subgroup's value equals the rest of the archive's"}


def trend(periods: list, period_rows: list[dict], replicates: dict, blocks: int) -> dict | None:
    """The linear trend of SAS both ways and CKA over the periods: the least-squares slope
    of the periods' values on the periods (their values when every period is a number, else
    their order), with a delete-a-block jackknife interval (the same blocks in every
    period) and a two-sided t test of a zero slope (blocks - 1 degrees of freedom)."""
    ok = [p for p, row in enumerate(period_rows) if p in replicates and row.get("status") == "ok"]
    if len(ok) < 3 or blocks < 2:
        return None
    labels = [periods[p] for p in ok]
    numeric = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in labels)
    x = np.asarray(labels if numeric else range(len(ok)), dtype=np.float64)
    xc = x - x.mean()
    denom = float(xc @ xc)
    out: dict[str, Any] = {"periods": len(ok), "x": "period value" if numeric else "period order",
                           "method": "least-squares slope per period unit; delete-a-block jackknife",
                           "null": "no linear trend (slope 0)"}
    for key in CONTRAST_METRICS:
        values = np.array([period_rows[p]["alignment"][key] for p in ok])
        reps = np.array([replicates[p][key] for p in ok])  # periods x blocks
        if reps.ndim != 2 or reps.shape[1] != blocks:
            return None
        slope = float(xc @ values / denom)
        rep_slopes = xc @ reps / denom
        ci = interval(slope, rep_slopes.tolist())
        t, p_value = t_test(slope, ci["se"], blocks - 1)
        out[key] = {"slope": slope, "se": ci["se"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"], "t": t,
                    "df": blocks - 1, "p_value": p_value,
                    "first": float(values[0]), "last": float(values[-1])}
    return out
