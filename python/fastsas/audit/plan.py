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

__all__ = ["AuditPlan", "RETRIEVAL_SCOPES", "check_scope"]

RETRIEVAL_SCOPES = ("both", "whole", "within", "none")


def check_scope(retrieval: Any) -> str:
    """The retrieval scope of an audit: one of RETRIEVAL_SCOPES, or True ("both") / False
    ("none")."""
    if retrieval is True or retrieval is False:
        return "both" if retrieval else "none"
    if retrieval not in RETRIEVAL_SCOPES:
        raise ValueError(f"retrieval must be one of {RETRIEVAL_SCOPES} (or True/False), got {retrieval!r}")
    return retrieval


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


class AuditPlan:
    """What an audit computes, fixed before the pass: every option validated, and per row the
    codes that route it to its jackknife block, (subgroup, block) cell and period.

    Rows are accumulated into an :class:`~fastsas.audit.AuditState` with ``codes(start,
    stop)`` (the codes travel with the rows, so a cluster task needs only its slice), and
    :meth:`finalize` turns the merged state, plus a retrieval function, into the
    :class:`~fastsas.audit.AuditResult`. :func:`fastsas.audit` and :func:`fastsas.dask.audit`
    are this plan run in process and on a cluster.

    Parameters
    ----------
    n, d : int
        Pairs (at least 2) and embedding dimension.
    groups, image_ids, text_ids, topq, periods, jackknife_blocks, mismatches, retrieval, ks, max_cell_bytes
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
    ((5,), [0, 1, 2], {'blocks': 10, 'cells': 30, 'periods': 0})
    """

    def __init__(self, n: int, d: int, *, groups: Any = None, image_ids: Any = None, text_ids: Any = None,
                 topq: float = 0.1, periods: Any = None, jackknife_blocks: int = 20, mismatches: int = 20,
                 retrieval: str | bool = "both", ks: Sequence[int] = (1, 5, 10), max_cell_bytes: int = 2 << 30):
        self.n = check_int(n, "n", low=2, meaning="pairs in the archive")
        self.d = check_int(d, "d", meaning="the embedding dimension")
        self.q = check_topq(topq)
        self.retrieval = check_scope(retrieval)
        self.ks = check_ks(ks, self.n, self.n)
        self.jackknife_blocks = check_int(jackknife_blocks, "jackknife_blocks", low=2, high=self.n,
                                          meaning="delete-a-block jackknife blocks, at most one per pair")
        self.mismatches = check_int(mismatches, "mismatches", low=0, meaning="suspected mismatches to list")
        max_cell_bytes = check_int(max_cell_bytes, "max_cell_bytes", meaning="memory of the subgroup cells")
        # The ground truth retrieval uses, coded by the same encoder: blocks, cells and
        # suspects then agree with the ranks on which ids match.
        self.id_codes, self.text_codes = ground_truth_codes(image_ids, text_ids, self.n, self.n)
        self.image_ids, self.text_ids = image_ids, text_ids
        self.group_labels, self.group_codes = (encode_labels(groups, "groups", self.n) if groups is not None
                                               else (None, None))
        self.period_labels, self.period_codes = (encode_labels(periods, "periods", self.n) if periods is not None
                                                 else (None, None))
        if self.id_codes is not None:
            self.block_codes = (self.id_codes % self.jackknife_blocks).astype(np.int32)
        else:
            self.block_codes = (np.arange(self.n) % self.jackknife_blocks).astype(np.int32)
        self.cell_blocks, self.cell_codes = (
            _cell_layout(len(self.group_labels), self.d, self.jackknife_blocks, self.group_codes, self.id_codes,
                         max_cell_bytes) if self.group_labels else (0, None))

    def sizes(self) -> dict[str, int]:
        """Accumulators per part of the state: jackknife blocks, subgroup cells, periods."""
        return {"blocks": self.jackknife_blocks,
                "cells": len(self.group_labels) * self.cell_blocks if self.group_labels else 0,
                "periods": len(self.period_labels) if self.period_labels else 0}

    def new_state(self) -> AuditState:
        """An empty state for this plan's rows (or a block of them)."""
        return AuditState(self.d, self.sizes())

    def codes(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """The routing codes of rows [start, stop) (one per row, per accumulator)."""
        out = {"blocks": self.block_codes[start:stop]}
        if self.cell_codes is not None:
            out["cells"] = self.cell_codes[start:stop]
        if self.period_codes is not None:
            out["periods"] = self.period_codes[start:stop]
        return out

    def finalize(self, state: AuditState, retrieve: Any, threads: int, progress: Any = None,
                 backend: dict | None = None) -> AuditResult:
        """The AuditResult from the merged state of every row (see
        :func:`fastsas.audit.results.finalize` for `retrieve` and `backend`)."""
        return finalize(self, state, retrieve, threads, progress, backend)
