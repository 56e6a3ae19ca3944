"""What an audit computes (:class:`AuditPlan`): every option checked before the pass, and
the routing of each row to its jackknife block, (subgroup, block) cell and period."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fastsas._labels import encode_labels
from fastsas._validate import check_int, check_ks, check_topq
from fastsas.audit.results import AuditResult, finalize
from fastsas.audit.state import AuditState
from fastsas.retrieval import ground_truth_codes

__all__ = ["AuditPlan", "MISSING_LABEL", "RETRIEVAL_SCOPES", "check_scope", "fill_missing"]

RETRIEVAL_SCOPES = ("both", "whole", "within", "none")


def check_scope(retrieval: Any) -> str:
    """The retrieval scope of an audit: one of RETRIEVAL_SCOPES, or True ("both") / False
    ("none")."""
    if retrieval is True or retrieval is False:
        return "both" if retrieval else "none"
    if retrieval not in RETRIEVAL_SCOPES:
        raise ValueError(f"retrieval must be one of {RETRIEVAL_SCOPES} (or True/False), got {retrieval!r}")
    return retrieval


MISSING_LABEL = "(missing)"  # the subgroup / period of rows without a value (see fill_missing)


def fill_missing(values: Any) -> Any:
    """Labels with every missing value (None, NaN, NaT, pandas NA, the empty string) replaced
    by ``"(missing)"``, so that rows without a group value form one explicitly labelled group.
    Arrays without missing values are returned as they are.

    Parameters
    ----------
    values : array_like or None
        One label per row (e.g. a metadata column).

    Returns
    -------
    ndarray or None
        The labels (an object array when something was replaced), or None for None.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsas.audit.plan import fill_missing
    >>> fill_missing(np.array([2019.0, np.nan, 2020.0])).tolist()
    [2019.0, '(missing)', 2020.0]
    """
    if values is None:
        return None
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        bad = np.isnan(arr)
    elif arr.dtype.kind in "US":
        bad = arr == arr.dtype.type("")
    elif arr.dtype.kind == "M":
        bad = np.isnat(arr)
    elif arr.dtype.kind == "O":
        bad = np.array([v is None or v == "" or (isinstance(v, float) and v != v) or type(v).__name__ in
                        ("NAType", "NaTType") for v in arr.tolist()], dtype=bool)
    else:
        return arr
    if not bad.any():
        return arr
    out = arr.astype(object)
    out[bad] = MISSING_LABEL
    return out


def _encode_with_missing_last(labels: Any, name: str, n: int) -> tuple[list, np.ndarray]:
    """encode_labels, with the "(missing)" label (if any) moved after every other label, so
    that a sorted drift stays sorted when some rows have no period."""
    classes, codes = encode_labels(labels, name, n)
    if MISSING_LABEL in classes and len(classes) > 1:
        others = [c for c in classes if c != MISSING_LABEL]
        try:
            others = sorted(others)
        except TypeError:
            pass
        order = others + [MISSING_LABEL]
        remap = np.array([order.index(c) for c in classes], dtype=np.int32)
        classes, codes = order, remap[codes]
    return classes, codes


def _cell_layout(groups: int, dim: int, blocks: int, group_codes: np.ndarray, unit_rank: np.ndarray | None,
                 max_bytes: int) -> tuple[int, np.ndarray]:
    """(blocks per subgroup, code per row) of the (subgroup, jackknife block) cells: a
    subgroup's state is the merge of its cells, and its cells are the blocks of its own
    jackknife."""
    state_bytes = 8 * (2 * dim) ** 2
    per_group = int(min(blocks, max(1, max_bytes // (state_bytes * groups))))
    if per_group < 5:  # too few blocks for a useful interval: one cell per group
        per_group = 1
    if unit_rank is not None:  # all rows of one id in one block, as for the whole archive
        block = unit_rank % per_group
    else:  # interleaved by position within the group, so group and block never alias
        counts = np.bincount(group_codes, minlength=groups)
        order = np.argsort(group_codes, kind="stable")
        position = np.empty(len(group_codes), dtype=np.int64)
        position[order] = np.arange(len(group_codes)) - np.repeat(np.cumsum(counts) - counts, counts)
        block = position % per_group
    return per_group, (group_codes.astype(np.int64) * per_group + block).astype(np.int32)


class AuditPlan:
    """What an audit computes, fixed before the pass: every option validated, and per row the
    codes that route it to its jackknife block, (subgroup, block) cell and (period, block) cell.

    Rows are accumulated into an :class:`~fastsas.audit.AuditState` with ``codes(start,
    stop)`` (the codes travel with the rows, so a cluster task needs only its slice), and
    :meth:`finalize` turns the merged state, plus a retrieval function and access to the
    rows, into the :class:`~fastsas.audit.AuditResult`. :func:`fastsas.audit` and
    :func:`fastsas.dask.audit` are this plan run in process and on a cluster.

    The unit of uncertainty is the id when ids are given (all rows of one id share a
    jackknife block), else the pair. Options too large for a small archive are adapted, and
    the adaptation is said in :attr:`notes`: fewer jackknife blocks than asked when there
    are fewer units, and no retrieval cutoff k above the gallery.

    Parameters
    ----------
    n, d : int
        Pairs (at least 2) and embedding dimension.
    groups, image_ids, text_ids, topq, periods, jackknife_blocks, mismatches, mismatch_fdr, chance_repeats, seed, retrieval, ks, max_cell_bytes, unit_name
        As :func:`fastsas.audit`.

    Raises
    ------
    TypeError, ValueError
        For any bad option, naming it (nothing has been read yet).

    Examples
    --------
    >>> import numpy as np
    >>> from fastsas.audit import AuditPlan
    >>> plan = AuditPlan(1000, 8, groups=np.arange(1000) % 3, jackknife_blocks=10, ks=5)
    >>> plan.ks, plan.group_labels, plan.sizes()
    ((5,), [0, 1, 2], {'blocks': 10, 'cells': 30, 'periods': 0, 'unit': 1})
    >>> AuditPlan(6, 8, jackknife_blocks=20).notes
    ['jackknife blocks: 6 (20 asked; the archive has 6 units)', 'retrieval cutoffs: (1, 5) (k above the gallery of 6 dropped from (1, 5, 10))']
    """

    def __init__(self, n: int, d: int, *, groups: Any = None, image_ids: Any = None, text_ids: Any = None,
                 topq: float = 0.1, periods: Any = None, jackknife_blocks: int = 20, mismatches: int = 20,
                 mismatch_fdr: float | None = 0.05, chance_repeats: int = 3, seed: int = 0,
                 retrieval: str | bool = "both", ks: Sequence[int] = (1, 5, 10), max_cell_bytes: int = 2 << 30,
                 unit_name: str | None = None):
        self.n = check_int(n, "n", low=2, meaning="pairs in the archive")
        self.d = check_int(d, "d", meaning="the embedding dimension")
        self.q = check_topq(topq)
        self.retrieval = check_scope(retrieval)
        self.notes: list[str] = []
        asked_blocks = check_int(jackknife_blocks, "jackknife_blocks", low=2,
                                 meaning="delete-a-block jackknife blocks")
        self.mismatches = check_int(mismatches, "mismatches", low=0, meaning="suspected mismatches to list")
        self.mismatch_fdr = _check_fdr(mismatch_fdr)
        self.chance_repeats = check_int(chance_repeats, "chance_repeats", low=0,
                                        meaning="repetitions of the permuted-pairing pass")
        self.seed = check_int(seed, "seed", low=0, meaning="the seed of the chance level and of the mismatch "
                                                         "test's sampled mismatches")
        max_cell_bytes = check_int(max_cell_bytes, "max_cell_bytes", meaning="memory of the subgroup cells")
        if unit_name is not None and not isinstance(unit_name, str):
            raise TypeError(f"unit_name must be a string (the id column's name) or None, got {unit_name!r}")
        # The ground truth retrieval uses, coded by the same encoder: blocks, cells and
        # suspects then agree with the ranks on which ids match.
        self.id_codes, self.text_codes = ground_truth_codes(image_ids, text_ids, self.n, self.n)
        self.image_ids, self.text_ids = image_ids, text_ids
        if self.id_codes is not None:
            # Units are the distinct ids of the image rows, numbered 0.. in code order.
            present, self.unit_rank = np.unique(self.id_codes, return_inverse=True)
            self.unit_rank = self.unit_rank.reshape(-1).astype(np.int64)
            units = int(present.size)
            lookup = np.full(int(max(self.id_codes.max(), self.text_codes.max())) + 1, -1, dtype=np.int64)
            lookup[present] = np.arange(units)
            self.text_unit_rank = lookup[self.text_codes]  # -1: a text whose id no image has
            self.unit = {"name": unit_name or "id", "count": units, "by": "id"}
        else:
            self.unit_rank = None
            self.text_unit_rank = None
            units = self.n
            self.unit = {"name": unit_name or "pair", "count": units, "by": "row"}
        if units < 2:
            raise ValueError(f"the archive has a single unit ({self.unit['name']}): jackknife intervals need at "
                             "least 2; give other ids (image_ids/text_ids) or audit the rows as pairs")
        self.jackknife_blocks = min(asked_blocks, units)
        if self.jackknife_blocks < asked_blocks:
            self.notes.append(f"jackknife blocks: {self.jackknife_blocks} ({asked_blocks} asked; the archive has "
                              f"{units} units)")
        self.unit["blocks"] = self.jackknife_blocks
        self.ks = self._fit_ks(ks)
        self.group_labels, self.group_codes = (_encode_with_missing_last(groups, "groups", self.n)
                                               if groups is not None else (None, None))
        self.period_labels, self.period_codes = (_encode_with_missing_last(periods, "periods", self.n)
                                                 if periods is not None else (None, None))
        rank = self.unit_rank if self.unit_rank is not None else np.arange(self.n)
        self.block_codes = (rank % self.jackknife_blocks).astype(np.int32)
        self.cell_blocks, self.cell_codes = (
            _cell_layout(len(self.group_labels), self.d, self.jackknife_blocks, self.group_codes, self.unit_rank,
                         max_cell_bytes) if self.group_labels else (0, None))
        self.period_blocks, self.period_cell_codes = (
            _cell_layout(len(self.period_labels), self.d, self.jackknife_blocks, self.period_codes, self.unit_rank,
                         max_cell_bytes) if self.period_labels else (0, None))

    def _fit_ks(self, ks: Any) -> tuple[int, ...]:
        try:
            return check_ks(ks, self.n, self.n)
        except ValueError:
            asked = check_ks(ks, 1 << 62, 1 << 62)  # every other check still applies
            kept = tuple(k for k in asked if k <= self.n)
            if not kept:
                raise
            self.notes.append(f"retrieval cutoffs: {kept} (k above the gallery of {self.n} dropped from {asked})")
            return kept

    def text_block_codes(self) -> np.ndarray:
        """The jackknife block of every text row: its unit's block (0 for a text whose id no
        image has: such a text is never a ranked query)."""
        if self.text_unit_rank is None:
            return self.block_codes
        return (np.maximum(self.text_unit_rank, 0) % self.jackknife_blocks).astype(np.int32)

    @property
    def tests_mismatches(self) -> bool:
        """Whether the suspected-mismatch test runs (it needs the unit-row moments of the pass)."""
        return self.mismatch_fdr is not None

    def sizes(self) -> dict[str, int]:
        """Accumulators per part of the state: jackknife blocks, subgroup cells, period cells,
        and the moments of the unit rows (1 when the mismatch test runs)."""
        return {"blocks": self.jackknife_blocks,
                "cells": len(self.group_labels) * self.cell_blocks if self.group_labels else 0,
                "periods": len(self.period_labels) * self.period_blocks if self.period_labels else 0,
                "unit": 1 if self.tests_mismatches else 0}

    def new_state(self) -> AuditState:
        """An empty state for this plan's rows (or a block of them)."""
        return AuditState(self.d, self.sizes())

    def codes(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """The routing codes of rows [start, stop) (one per row, per accumulator)."""
        out = {"blocks": self.block_codes[start:stop]}
        if self.cell_codes is not None:
            out["cells"] = self.cell_codes[start:stop]
        if self.period_cell_codes is not None:
            out["periods"] = self.period_cell_codes[start:stop]
        if self.tests_mismatches:
            out["unit"] = np.zeros(stop - start, dtype=np.int32)
        return out

    def finalize(self, state: AuditState, retrieve: Any, threads: int, progress: Any = None,
                 backend: dict | None = None, rows: Any = None, chunk_rows: int = 65536) -> AuditResult:
        """The AuditResult from the merged state of every row (see
        :func:`fastsas.audit.results.finalize` for `retrieve`, `rows` and `backend`)."""
        return finalize(self, state, retrieve, threads, progress, backend, rows, chunk_rows)


def _check_fdr(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"mismatch_fdr must be a number in (0, 1) or None (no mismatch test), got {value!r}")
    v = float(value)
    if not 0.0 < v < 1.0:
        raise ValueError(f"mismatch_fdr must be in (0, 1) (the false discovery rate, e.g. 0.05), got {value!r}")
    return v
