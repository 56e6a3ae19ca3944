"""Audits: whole-archive and per-subgroup alignment and retrieval, jackknife uncertainty,
suspected mismatches and drift over time, from one streaming pass over the moments."""
from __future__ import annotations

import math
import struct
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from fastsas import _core
from fastsas._validate import as_pair, check_topq, one_per_row, rename_bad_rows, resolve_backend, resolve_threads
from fastsas.moments import Moments
from fastsas.retrieval import _codes as id_codes_of

JACKKNIFE_METRICS = ("sas_i2t", "sas_t2i", "sas_imbalance", "cka")


CPU_ONLY = {"moments": "cpu", "retrieval": "cpu"}  # AuditResult.backend of an all-CPU audit


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
    # Which backend computed what: the moments always run on the CPU core (or Dask workers);
    # retrieval follows the `backend` argument.
    backend: dict = field(default_factory=lambda: dict(CPU_ONLY))
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
    backend: str = "auto",
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
    backend: "auto" | "cpu" | "cuda" for the retrieval (the n^2 part); the moments run on the
    CPU core. The result's `backend` says which ran.
    groups: optional label per pair (modality, body part, site, ...). periods: optional
    time-like label per pair (year, month): one drift point per period. image_ids /
    text_ids: retrieval ground truth (default row i <-> row i); with ids, jackknife blocks
    keep all rows of one id together. The moments of the whole archive, every subgroup,
    every period and every jackknife block come from one pass in `chunk_rows` chunks.
    The pass is AuditPlan.new_state() / AuditState.accumulate / merge, and the rest is
    AuditPlan.finalize: fastsas.dask maps the same pieces over a cluster.

    >>> import fastsas as fs, numpy as np
    >>> x, y = fs.synthetic.paired_embeddings(4000, 32, image_only_factors=3)
    >>> r = fs.audit(x, y, groups=np.arange(4000) % 2)
    >>> [g["n"] for g in r.groups]
    [2000, 2000]
    """
    nthreads = resolve_threads(threads)
    retrieval_backend = resolve_backend(backend)
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
    chunk_rows = _check_count(chunk_rows, "chunk_rows", "a positive integer", low=1)
    plan = AuditPlan(n, d, groups=groups, image_ids=image_ids, text_ids=text_ids, topq=topq, periods=periods,
                     jackknife_blocks=jackknife_blocks, mismatches=mismatches, retrieval=retrieval, ks=ks,
                     max_cell_bytes=max_cell_bytes)

    state = plan.new_state()
    if source is not None:
        chunks = _counted(source.iter_chunks(chunk_rows), n)
    else:
        chunks = ((s, x[s:s + chunk_rows], y[s:s + chunk_rows]) for s in range(0, n, chunk_rows))
    chunk_count = -(-n // chunk_rows)
    for start, cx, cy in (progress(chunks, "moments (one pass)", chunk_count) if progress else chunks):
        state.accumulate(cx, cy, plan.codes(start, start + len(cx)), nthreads, offset=start)

    if plan.retrieval != "none" and source is not None:
        x, y = source.arrays()

    def retrieve(rows, image_ids, text_ids):
        if rows is None:
            return _retrieval_with_ranks(x, y, image_ids, text_ids, plan.ks, nthreads, retrieval_backend)
        return _retrieval_with_ranks(np.asarray(x[rows]), np.asarray(y[rows]), image_ids, text_ids, plan.ks,
                                     nthreads, retrieval_backend)

    return plan.finalize(state, retrieve, nthreads, progress,
                         backend={"moments": "cpu", "retrieval": retrieval_backend})


def _check_count(value: Any, name: str, expected: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low \
            or (high is not None and value > high):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return int(value)


class AuditPlan:
    """What an audit computes, fixed before the pass: validated options and, per row, the
    codes that route it to its jackknife block, (subgroup, block) cell and period. Rows
    are accumulated into an AuditState with `codes(start, stop)` (the codes travel with
    the rows, so a cluster task needs only its slice), and `finalize` turns the merged
    state, plus a retrieval function, into the AuditResult."""

    def __init__(self, n: int, d: int, *, groups: Any = None, image_ids: Any = None, text_ids: Any = None,
                 topq: float = 0.1, periods: Any = None, jackknife_blocks: int = 20, mismatches: int = 20,
                 retrieval: str | bool = "both", ks: Sequence[int] = (1, 5, 10), max_cell_bytes: int = 2 << 30):
        self.n, self.d = int(n), int(d)
        self.q = check_topq(topq)
        if retrieval is True or retrieval is False:
            retrieval = "both" if retrieval else "none"
        if retrieval not in RETRIEVAL_SCOPES:
            raise ValueError(f"retrieval must be one of {RETRIEVAL_SCOPES} (or True/False), got {retrieval!r}")
        self.retrieval = retrieval
        self.ks = ks
        self.jackknife_blocks = _check_count(jackknife_blocks, "jackknife_blocks",
                                             f"an integer in [2, n={n}]", low=2, high=n)
        self.mismatches = _check_count(mismatches, "mismatches", "a non-negative integer", low=0)
        if (image_ids is None) != (text_ids is None):
            raise ValueError("give both image_ids and text_ids, or neither (default: row i <-> row i)")
        self.image_ids, self.text_ids = image_ids, text_ids

        self.group_labels, self.group_codes = _codes(groups, n, "groups") if groups is not None else (None, None)
        self.period_labels, self.period_codes = (_codes(periods, n, "periods") if periods is not None
                                                 else (None, None))
        self.id_codes = self.text_codes = None
        if image_ids is not None:
            # The same id coding retrieval uses for its ground truth: blocks, cells and suspects
            # then agree with the ranks on which ids match.
            self.id_codes, self.text_codes = id_codes_of(image_ids, text_ids, n, n)
            self.block_codes = (self.id_codes % self.jackknife_blocks).astype(np.int32)
        else:
            self.block_codes = (np.arange(n) % self.jackknife_blocks).astype(np.int32)
        self.cell_blocks, self.cell_codes = (
            _cell_layout(len(self.group_labels), d, self.jackknife_blocks, self.group_codes, self.id_codes,
                         max_cell_bytes) if self.group_labels else (0, None))

    def _sizes(self) -> dict[str, int]:
        return {"blocks": self.jackknife_blocks,
                "cells": len(self.group_labels) * self.cell_blocks if self.group_labels else 0,
                "periods": len(self.period_labels) if self.period_labels else 0}

    def new_state(self) -> "AuditState":
        return AuditState(self.d, self._sizes())

    def codes(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """The routing codes of rows [start, stop) (one per row, per accumulator)."""
        out = {"blocks": self.block_codes[start:stop]}
        if self.cell_codes is not None:
            out["cells"] = self.cell_codes[start:stop]
        if self.period_codes is not None:
            out["periods"] = self.period_codes[start:stop]
        return out

    def finalize(self, state: "AuditState", retrieve: Any, threads: int, progress: Any = None,
                 backend: dict | None = None) -> AuditResult:
        """The AuditResult from the merged state of every row. retrieve(rows, image_ids, text_ids)
        returns fs.retrieval(..., return_ranks=True) over the whole archive (rows None) or over
        the given rows (sorted row numbers, with those rows' ids or None). backend: which
        backend ran the moments and the retrieval, recorded in the result."""
        n, d, q = self.n, self.d, self.q
        if state.count != n:
            raise ValueError(f"the merged audit state holds {state.count} rows, the plan {n}: a block is missing")
        block_states = state.states("blocks")
        whole = Moments._from_core(_merge_all(block_states))
        alignment = whole.alignment(q)
        uncertainty = jackknife(block_states, q, threads, alignment)
        profiles = {}
        for direction in ("i2t", "t2i"):
            prof = whole.spectral_profile(direction)
            profiles[direction] = {"eigenvalues": prof.eigenvalues.tolist(), "rho": prof.rho.tolist()}
        sas_sweep = {k: np.asarray(v).tolist() for k, v in whole.sas_sweep().items()}

        ret = None
        if self.retrieval in ("both", "whole"):
            steps = progress([None], "retrieval, whole gallery", 1) if progress else [None]
            for _ in steps:
                ret = retrieve(None, self.image_ids, self.text_ids)
        within = self.retrieval in ("both", "within") and self.group_labels is not None
        group_cells = None
        if self.group_labels:
            cells = state.states("cells")
            b = self.cell_blocks
            group_cells = [cells[g * b:(g + 1) * b] for g in range(len(self.group_labels))]
        group_rows, within_ranks = _group_results(d, retrieve, self.group_labels, self.group_codes, group_cells, q,
                                                  ret, self.image_ids, self.text_ids, self.ks, threads, within,
                                                  progress)
        period_cells = [[s] for s in state.states("periods")] if self.period_labels else None
        drift, _ = _group_results(d, retrieve, self.period_labels, self.period_codes, period_cells, q, None, None,
                                  None, self.ks, threads, False)
        suspects: list[dict] = []
        rank_source = ret if ret is not None else within_ranks
        if rank_source is not None and self.mismatches:
            if self.image_ids is None:  # default ground truth: row i <-> row i
                id_codes = text_codes = np.arange(n, dtype=np.int64)
            else:
                id_codes, text_codes = self.id_codes, self.text_codes
            suspects = _suspects(rank_source, id_codes, text_codes, self.image_ids, self.mismatches)
        return AuditResult(n=int(n), dim=int(d), topq=q, alignment=alignment,
                           retrieval=_summary(ret) if ret is not None else None, uncertainty=uncertainty,
                           groups=group_rows, mismatches=suspects, drift=drift, profiles=profiles,
                           sas_sweep=sas_sweep,
                           backend=dict(backend or CPU_ONLY))


_STATE_MAGIC = b"FSASAUD"
_STATE_VERSION = 1
_STATE_HEADER = struct.Struct("<7sBqq")  # magic, version, dim, number of parts
_PARTS = ("blocks", "cells", "periods")


class AuditState:
    """The mergeable partial state of an audit's pass: Moments per jackknife block, per
    (subgroup, block) cell and per period. accumulate() adds rows (with their codes from
    AuditPlan.codes), merge() adds another state, to_bytes()/from_bytes() is a compact
    versioned byte form (empty accumulators take 8 bytes) to ship between processes."""

    def __init__(self, dim: int, sizes: dict[str, int]):
        self.dim = int(dim)
        self._sizes = {k: int(sizes.get(k, 0)) for k in _PARTS}
        self._groups = {k: _core.MomentsGroups(v, self.dim, True) for k, v in self._sizes.items() if v}
        self._lists: dict[str, list] | None = None  # after a merge: one core Moments per accumulator
        self._rows = 0

    @property
    def count(self) -> int:
        """Rows accumulated (every row lands in exactly one jackknife block)."""
        return self._rows

    def accumulate(self, x: Any, y: Any, codes: dict[str, np.ndarray], threads: int, offset: int = 0) -> None:
        """Add rows x, y (paired, one chunk) routed by `codes`; bad rows raise ValueError naming
        them as rows of the whole archive (`offset`: the chunk's first row)."""
        if self._lists is not None:
            raise RuntimeError("accumulate() after merge(): accumulate into a new state and merge it")
        try:
            for part, groups in self._groups.items():
                groups.update(x, y, codes[part], threads)
        except _core.BadRowsError as exc:
            raise rename_bad_rows(exc, {"x": "images", "y": "texts"}, offset=offset) from None
        self._rows += len(x)

    def states(self, part: str) -> list:
        """The core Moments of every accumulator of `part` ("blocks", "cells", "periods")."""
        self._freeze()
        return self._lists[part]

    def _freeze(self) -> None:
        if self._lists is None:
            self._lists = {k: [g.group(i) for i in range(g.size)] for k, g in self._groups.items()}
            self._lists.update({k: [] for k in _PARTS if k not in self._lists})
            self._groups = {}

    def merge(self, other: "AuditState") -> "AuditState":
        if not isinstance(other, AuditState):
            raise TypeError(f"other must be an AuditState, got {type(other).__name__}")
        if other.dim != self.dim or other._sizes != self._sizes:
            raise ValueError(f"cannot merge audit states of different plans: dim {other.dim} vs {self.dim}, "
                             f"accumulators {other._sizes} vs {self._sizes}")
        for part in _PARTS:
            for mine, theirs in zip(self.states(part), other.states(part)):
                if theirs.count:
                    mine.merge(theirs)
        self._rows += other._rows
        return self

    def to_bytes(self) -> bytes:
        out = [_STATE_HEADER.pack(_STATE_MAGIC, _STATE_VERSION, self.dim, len(_PARTS))]
        for part in _PARTS:
            states = self.states(part)
            out.append(struct.pack("<q", len(states)))
            for s in states:
                body = Moments._from_core(s).to_bytes() if s.count else b""
                out.append(struct.pack("<q", len(body)))
                out.append(body)
        return b"".join(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> "AuditState":
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        data = memoryview(data).cast("B")
        if bytes(data[:7]) != _STATE_MAGIC[:len(data)] or not len(data):
            raise ValueError("data is not a fastsas audit state byte form (bad magic)")
        if len(data) < _STATE_HEADER.size:
            raise ValueError(f"audit state byte form is truncated: {len(data)} bytes, shorter than its "
                             f"{_STATE_HEADER.size}-byte header")
        _, version, dim, parts = _STATE_HEADER.unpack_from(data)
        if version != _STATE_VERSION or parts != len(_PARTS):
            raise ValueError(f"audit state byte form version {version} with {parts} parts is not supported "
                             f"(this fastsas reads version {_STATE_VERSION})")
        if dim < 1:
            raise ValueError(f"audit state byte form is corrupt: dim {dim} in its header")
        pos = _STATE_HEADER.size
        lists: dict[str, list] = {}

        def read_q() -> int:
            nonlocal pos
            if pos + 8 > len(data):
                raise ValueError("audit state byte form is truncated")
            (value,) = struct.unpack_from("<q", data, pos)
            pos += 8
            return value

        for part in _PARTS:
            states = []
            for _ in range(read_q()):
                size = read_q()
                if size < 0 or pos + size > len(data):
                    raise ValueError("audit state byte form is truncated")
                if size:
                    m = Moments.from_bytes(data[pos:pos + size])
                    if m.dim != dim or not m.tracks_unit_rows:
                        raise ValueError(f"audit state byte form is corrupt: a {part} state of dim {m.dim} "
                                         f"(unit rows tracked: {m.tracks_unit_rows}) in a state of dim {dim}")
                    states.append(m._core)
                else:
                    states.append(_core.Moments(dim, True))
                pos += size
            lists[part] = states
        if pos != len(data):
            raise ValueError(f"audit state byte form has {len(data) - pos} trailing bytes")
        out = cls(dim, {})
        out._sizes = {k: len(v) for k, v in lists.items()}
        out._lists = lists
        out._rows = int(sum(s.count for s in lists["blocks"]))
        return out

    def __reduce__(self):
        return (AuditState.from_bytes, (self.to_bytes(),))


def _counted(chunks: Iterable, n: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    start = 0
    for cx, cy in chunks:
        yield start, cx, cy
        start += len(cx)
    if start != n:
        raise ValueError(f"the source yielded {start} rows but declares n={n}")


def _cell_layout(groups: int, dim: int, blocks: int, group_codes: np.ndarray, id_codes: np.ndarray | None,
                 max_bytes: int) -> tuple[int, np.ndarray]:
    """(blocks per subgroup, code per row) of the (subgroup, jackknife block) cells: a
    subgroup's state is the merge of its cells, and its cells are the blocks of its own
    jackknife."""
    state_bytes = 8 * (2 * dim) ** 2
    per_group = int(min(blocks, max(1, max_bytes // (state_bytes * groups))))
    if per_group < 5:  # too few blocks for a useful interval: one cell per group
        per_group = 1
    if id_codes is not None:  # all rows of one id in one block, as for the whole archive
        block = id_codes % per_group
    else:  # interleaved by position within the group, so group and block never alias
        counts = np.bincount(group_codes, minlength=groups)
        order = np.argsort(group_codes, kind="stable")
        position = np.empty(len(group_codes), dtype=np.int64)
        position[order] = np.arange(len(group_codes)) - np.repeat(np.cumsum(counts) - counts, counts)
        block = position % per_group
    return per_group, (group_codes.astype(np.int64) * per_group + block).astype(np.int32)


def _merge_all(states: Sequence):
    out = states[0].copy()
    for s in states[1:]:
        out.merge(s)
    return out


def _retrieval_with_ranks(x, y, image_ids, text_ids, ks, threads, backend: str = "cpu") -> dict:
    from fastsas.retrieval import retrieval as run

    return run(x, y, image_ids=image_ids, text_ids=text_ids, ks=ks, return_ranks=True, threads=threads,
               backend=backend)


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
        core = _merge_all(cells) if cells else _core.Moments(d, True)
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
