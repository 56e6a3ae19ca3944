"""Audits: whole-archive and per-subgroup alignment and retrieval, jackknife uncertainty,
suspected mismatches and drift over time, from one streaming pass over the moments."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from fastsas import _core
from fastsas._validate import as_pair, check_topq, one_per_row, rename_bad_rows, resolve_threads
from fastsas.moments import Moments
from fastsas.retrieval import _codes as id_codes_of

JACKKNIFE_METRICS = ("sas_i2t", "sas_t2i", "sas_imbalance", "cka")


@dataclass(frozen=True)
class AuditResult:
    """Everything an audit found; `to_dict()` is JSON-serialisable.

    alignment: fs.alignment dict of the whole archive.
    retrieval: whole-gallery retrieval summary (None when retrieval=False).
    uncertainty: per metric in JACKKNIFE_METRICS: value, se, ci_low, ci_high (95%,
        Student t with blocks - 1 degrees of freedom), plus the test of imbalance != 0.
    groups: per subgroup: label, n, status ("ok" or "too_small: ..."), alignment,
        retrieval within the subgroup and the subgroup's queries against the whole gallery.
    mismatches: the pairs whose matched similarity ranks worst in both directions.
    drift: one point per period (sorted), when periods were given.
    profiles: per direction ("i2t", "t2i") the anchor eigenvalues and per-mode rho (lists).
    sas_sweep: SAS both ways for q = 0.1 ... 1.0 (lists under "q", "sas_i2t", "sas_t2i").
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
    definitions_version: str = _core.DEFINITIONS_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    def group(self, label: Any) -> dict:
        for g in self.groups:
            if g["group"] == label:
                return g
        raise KeyError(f"no subgroup {label!r}; subgroups: {[g['group'] for g in self.groups]}")


# -- labels ---------------------------------------------------------------------------------
def _codes(labels: Any, n: int, name: str) -> tuple[list, np.ndarray]:
    """(sorted distinct labels as plain Python values, int32 code per row)."""
    arr = one_per_row(labels, name, n, item="label", per="pair")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise ValueError(f"{name} has NaN labels at rows {np.flatnonzero(np.isnan(arr))[:10].tolist()}; "
                         "use a string such as 'unknown' for missing labels")
    try:
        uniques, inverse = np.unique(arr, return_inverse=True)
    except TypeError:
        raise TypeError(f"{name} must hold sortable labels of one kind (all strings or all numbers)") from None
    return [u.item() if hasattr(u, "item") else u for u in uniques], inverse.reshape(-1).astype(np.int32)


# -- jackknife ----------------------------------------------------------------------------------
def _scores(moments_core, topq: float, threads: int) -> dict[str, float]:
    a = _core.analyze(moments_core, threads, 10, True)
    i2t = float(_core.sas_from_profile(a["i2t"]["eigenvalues"], a["i2t"]["rho"], topq))
    t2i = float(_core.sas_from_profile(a["t2i"]["eigenvalues"], a["t2i"]["rho"], topq))
    return {"sas_i2t": i2t, "sas_t2i": t2i, "sas_imbalance": i2t - t2i, "cka": float(a["cka"])}


def leave_one_out(blocks: Sequence) -> Iterator:
    """For each block b, the merge of every other block (prefix/suffix merges: exact, no
    subtraction of moments, 3B merges in all)."""
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
    """Delete-a-block jackknife of the SAS scores and CKA over per-block core moments."""
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


# -- the audit ------------------------------------------------------------------------------------
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


RETRIEVAL_SCOPES = ("both", "whole", "within", "none")


def _is_source(obj: Any) -> bool:
    return all(hasattr(obj, a) for a in ("n", "dim", "iter_chunks", "arrays"))


def audit(
    images: Any,
    texts: Any = None,
    groups: Any = None,
    image_ids: Any = None,
    text_ids: Any = None,
    topq: float = 0.1,
    *,
    periods: Any = None,
    jackknife_blocks: int = 20,
    mismatches: int = 20,
    retrieval: str | bool = "both",
    ks: Sequence[int] = (1, 5, 10),
    chunk_rows: int = 65536,
    threads: int | None = None,
    progress: Any = None,
    max_cell_bytes: int = 2 << 30,
) -> AuditResult:
    """Audit paired embeddings: whole archive, subgroups, uncertainty, mismatches, drift.

    images, texts: (n, d) arrays (in memory or np.load(..., mmap_mode="r")), paired by row;
    or `images` is a paired source (fastsas.io.NpyPairSource, the store) and `texts` is
    None: the moments are then streamed from it in chunks (bounded memory), and retrieval
    reads its memory-mapped arrays.
    retrieval: "both" (whole gallery and within each subgroup), "whole", "within" or
    "none" (False). Suspected mismatches come from the whole-gallery ranks, or from the
    within-subgroup ranks when only those are computed.
    Subgroups get jackknife intervals too: their rows are kept per (subgroup, block) cell,
    whose merge is the subgroup. The cells' memory is capped by `max_cell_bytes` (a state is
    (2d)^2 float64), using fewer blocks per subgroup when needed (at least 5, else none).
    progress: optional callable progress(iterable, description, total) -> iterable that
    wraps each long step (the CLI passes rich progress bars).
    groups: optional label per pair (modality, body part, site, ...). periods: optional
    time-like label per pair (year, month): one drift point per period. image_ids /
    text_ids: retrieval ground truth (default row i <-> row i); with ids, jackknife blocks
    keep all rows of one id together. The moments of the whole archive, every subgroup,
    every period and every jackknife block come from one pass in `chunk_rows` chunks.

    >>> import fastsas as fs, numpy as np
    >>> x, y = fs.synthetic.paired_embeddings(4000, 32, image_only_factors=3)
    >>> r = fs.audit(x, y, groups=np.arange(4000) % 2)
    >>> [g["n"] for g in r.groups]
    [2000, 2000]
    """
    q = check_topq(topq)
    nthreads = resolve_threads(threads)
    if retrieval is True or retrieval is False:
        retrieval = "both" if retrieval else "none"
    if retrieval not in RETRIEVAL_SCOPES:
        raise ValueError(f"retrieval must be one of {RETRIEVAL_SCOPES} (or True/False), got {retrieval!r}")
    source = images if texts is None and _is_source(images) else None
    if source is not None:
        n, d = int(source.n), int(source.dim)
        if n < 2:
            raise ValueError(f"the source needs at least 2 pairs, has {n}")
        x = y = None
    elif texts is None:
        raise TypeError("give images and texts arrays, or a paired source (e.g. fastsas.io.NpyPairSource) as images")
    else:
        x, y = as_pair(images, texts)
        n, d = x.shape
    if isinstance(jackknife_blocks, bool) or not isinstance(jackknife_blocks, (int, np.integer)) \
            or not 2 <= jackknife_blocks <= n:
        raise ValueError(f"jackknife_blocks must be an integer in [2, n={n}], got {jackknife_blocks!r}")
    if isinstance(mismatches, bool) or not isinstance(mismatches, (int, np.integer)) or mismatches < 0:
        raise ValueError(f"mismatches must be a non-negative integer, got {mismatches!r}")
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    if (image_ids is None) != (text_ids is None):
        raise ValueError("give both image_ids and text_ids, or neither (default: row i <-> row i)")

    group_labels, group_codes = _codes(groups, n, "groups") if groups is not None else (None, None)
    period_labels, period_codes = _codes(periods, n, "periods") if periods is not None else (None, None)
    if image_ids is not None:
        # The same id coding retrieval uses for its ground truth: blocks, cells and suspects
        # then agree with the ranks on which ids match.
        id_codes, text_codes = id_codes_of(image_ids, text_ids, n, n)
        block_codes = (id_codes % jackknife_blocks).astype(np.int32)
    else:
        block_codes = (np.arange(n) % jackknife_blocks).astype(np.int32)

    # One pass: every chunk feeds the jackknife blocks (whose merge is the whole archive),
    # the subgroups and the periods.
    blocks = _core.MomentsGroups(int(jackknife_blocks), d, True)
    by_group = (_GroupCells(len(group_labels), d, jackknife_blocks, group_codes,
                            id_codes if image_ids is not None else None, max_cell_bytes)
                if group_labels else None)
    by_period = _core.MomentsGroups(len(period_labels), d, True) if period_labels else None
    if source is not None:
        chunks = _counted(source.iter_chunks(chunk_rows), n)
    else:
        chunks = ((s, x[s:s + chunk_rows], y[s:s + chunk_rows]) for s in range(0, n, chunk_rows))
    chunk_count = -(-n // chunk_rows)
    for start, cx, cy in (progress(chunks, "moments (one pass)", chunk_count) if progress else chunks):
        stop = start + len(cx)
        try:
            blocks.update(cx, cy, block_codes[start:stop], nthreads)
            if by_group is not None:
                by_group.update(cx, cy, start, nthreads)
            if by_period is not None:
                by_period.update(cx, cy, period_codes[start:stop], nthreads)
        except _core.BadRowsError as exc:
            raise rename_bad_rows(exc, {"x": "images", "y": "texts"}, offset=start) from None

    block_states = [blocks.group(b) for b in range(blocks.size)]
    group_cells = by_group.cells() if by_group is not None else None
    whole = Moments._from_core(_merge_all(block_states))
    alignment = whole.alignment(q)
    uncertainty = jackknife(block_states, q, nthreads, alignment)
    profiles = {}
    for direction in ("i2t", "t2i"):
        prof = whole.spectral_profile(direction)
        profiles[direction] = {"eigenvalues": prof.eigenvalues.tolist(), "rho": prof.rho.tolist()}
    sas_sweep = {k: np.asarray(v).tolist() for k, v in whole.sas_sweep().items()}

    if retrieval != "none" and source is not None:
        x, y = source.arrays()
    ret = None
    if retrieval in ("both", "whole"):
        steps = progress([None], "retrieval, whole gallery", 1) if progress else [None]
        for _ in steps:
            ret = _retrieval_with_ranks(x, y, image_ids, text_ids, ks, nthreads)
    within = retrieval in ("both", "within") and group_labels is not None
    group_rows, within_ranks = _group_results(x, y, group_labels, group_codes, group_cells, q, ret, image_ids,
                                              text_ids, ks, nthreads, within, progress)
    period_cells = [[by_period.group(p)] for p in range(by_period.size)] if by_period is not None else None
    drift, _ = _group_results(x, y, period_labels, period_codes, period_cells, q, None, None, None, ks,
                              nthreads, False)
    suspects: list[dict] = []
    rank_source = ret if ret is not None else within_ranks
    if rank_source is not None and mismatches:
        if image_ids is None:  # default ground truth: row i <-> row i
            id_codes = text_codes = np.arange(n, dtype=np.int64)
        suspects = _suspects(rank_source, id_codes, text_codes, image_ids, mismatches)
    return AuditResult(n=int(n), dim=int(d), topq=q, alignment=alignment,
                       retrieval=_summary(ret) if ret is not None else None, uncertainty=uncertainty,
                       groups=group_rows, mismatches=suspects, drift=drift, profiles=profiles,
                       sas_sweep=sas_sweep)


def _counted(chunks: Iterable, n: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    start = 0
    for cx, cy in chunks:
        yield start, cx, cy
        start += len(cx)
    if start != n:
        raise ValueError(f"the source yielded {start} rows but declares n={n}")


class _GroupCells:
    """Moments per (group, jackknife block) cell in one grouped accumulator: a group's state
    is the merge of its cells, and its cells are the blocks of its own jackknife."""

    def __init__(self, groups: int, dim: int, blocks: int, group_codes: np.ndarray, id_codes: np.ndarray | None,
                 max_bytes: int):
        state_bytes = 8 * (2 * dim) ** 2
        self.blocks = int(min(blocks, max(1, max_bytes // (state_bytes * groups))))
        if self.blocks < 5:  # too few blocks for a useful interval: one cell per group
            self.blocks = 1
        self.groups = groups
        if id_codes is not None:  # all rows of one id in one block, as for the whole archive
            block = id_codes % self.blocks
        else:  # interleaved by position within the group, so group and block never alias
            counts = np.bincount(group_codes, minlength=groups)
            order = np.argsort(group_codes, kind="stable")
            position = np.empty(len(group_codes), dtype=np.int64)
            position[order] = np.arange(len(group_codes)) - np.repeat(np.cumsum(counts) - counts, counts)
            block = position % self.blocks
        self.codes = (group_codes.astype(np.int64) * self.blocks + block).astype(np.int32)
        self.core = _core.MomentsGroups(groups * self.blocks, dim, True)

    def update(self, x, y, start: int, threads: int) -> None:
        self.core.update(x, y, self.codes[start:start + len(x)], threads)

    def cells(self) -> list[list]:
        return [[self.core.group(g * self.blocks + b) for b in range(self.blocks)] for g in range(self.groups)]


def _merge_all(states: Sequence):
    out = states[0].copy()
    for s in states[1:]:
        out.merge(s)
    return out


def _retrieval_with_ranks(x, y, image_ids, text_ids, ks, threads) -> dict:
    from fastsas.retrieval import retrieval as run

    return run(x, y, image_ids=image_ids, text_ids=text_ids, ks=ks, return_ranks=True, threads=threads)


def _group_results(x, y, labels, codes, cells_by_group, q, whole_ret, image_ids, text_ids, ks, threads,
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
        core = _merge_all(cells) if cells else _core.Moments(x.shape[1] if x is not None else 1, True)
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
            from fastsas.retrieval import retrieval as run

            try:
                r = run(np.asarray(x[members]), np.asarray(y[members]), image_ids=ids[0], text_ids=ids[1], ks=ks,
                        return_ranks=True, threads=threads)
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
