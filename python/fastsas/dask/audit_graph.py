"""Audits on Dask: the audit state accumulated per row block (the block's routing codes
travel with it) and tree-merged; the plan's finalize then runs on the client with the
cluster's retrieval. The same :class:`~fastsas.audit.AuditPlan`, state and result as
:func:`fastsas.audit`."""
from __future__ import annotations

import functools
import sys
from typing import Any, Sequence

import numpy as np

from fastsas._validate import as_pair, resolve_threads
from fastsas.audit import AuditPlan, AuditResult, AuditState
from fastsas.audit.rows import ArchiveRows
from fastsas.audit import audit as in_process
from fastsas.dask.cluster import (DEFAULT_SPLIT_EVERY, client_for, compute, dask_modules, task_threads, tree_reduce,
                                  with_options_doc)
from fastsas.dask.inputs import dask_inputs, block_offsets, delayed_blocks, source_arrays
from fastsas.dask.moments_graph import merge_states
from fastsas.dask.retrieval_graph import retrieval_of
from fastsas.store import open_source

__all__ = ["AUDIT_MERGE_BYTES", "audit", "audit_source", "audit_split_every"]

def _block_audit(x: np.ndarray, y: np.ndarray, codes: dict, dim: int, sizes: dict, offset: int,
                 threads: int) -> bytes:
    x, y = as_pair(x, y, min_rows=0)
    state = AuditState(dim, sizes)
    state.accumulate(x, y, codes, threads, offset=offset)
    return state.to_bytes()


AUDIT_MERGE_BYTES = 4 << 30  # what one audit merge task may hold


def audit_split_every(sizes: dict, dim: int, split_every: int) -> int:
    """States per audit merge, capped so a merge task's memory stays near AUDIT_MERGE_BYTES:
    it holds its inputs' bytes plus two full states, and an audit state is every
    accumulator's (2d)^2 moments (~190 MB at d = 768 with 20 jackknife blocks, more with
    subgroup cells), where a Moments state is 9.5 MB."""
    state_bytes = max(1, sum(sizes.values())) * 8 * (2 * dim) * (2 * dim + 1) // 2
    return max(2, min(split_every, AUDIT_MERGE_BYTES // state_bytes - 2))


_merge_audit = functools.partial(merge_states, AuditState)


@with_options_doc
def audit(images: Any, texts: Any = None, groups: Any = None, image_ids: Any = None, text_ids: Any = None,
          topq: float = 0.1, *, periods: Any = None, jackknife_blocks: int = 20, mismatches: int = 20,
          mismatch_fdr: float | None = 0.05, chance_repeats: int = 3, seed: int = 0, unit_name: str | None = None,
          recorded_ids: bool = True, retrieval: str | bool = "both", ks: Sequence[int] = (1, 5, 10),
          max_cell_bytes: int = 2 << 30,
          client: Any = None, scheduler: str | None = None, block_rows: int | None = None,
          split_every: int = DEFAULT_SPLIT_EVERY, threads: int | None = None, progress: Any = None) -> AuditResult:
    """:func:`fastsas.audit` on Dask: the same AuditResult (numbers within rounding; ranks,
    mismatches and counts identical).

    The per-block audit states (moments per jackknife block, subgroup cell and period cell,
    and of the unit rows) are tree-merged; whole-gallery and within-subgroup retrieval run as
    :func:`retrieval`. The passes that read the rows again after the merge (the mismatch
    statistic, the chance level) read the row blocks from the cluster's arrays, in order,
    on the client. Labels and ids are in memory (one small array each).

    Parameters
    ----------
    images, texts : Dask array, ndarray, or path
        As :func:`moments`.
    groups, image_ids, text_ids, topq, periods, jackknife_blocks, mismatches, mismatch_fdr, chance_repeats, seed, unit_name, retrieval, ks, max_cell_bytes
        As :func:`fastsas.audit` (`recorded_ids` is accepted and unused: give the ids).
    $options

    Returns
    -------
    AuditResult
        With ``backend`` ``{"moments": "dask", "retrieval": "dask"}``.

    Raises
    ------
    TypeError, ValueError
        As :func:`fastsas.audit`, before any task runs.

    Examples
    --------
    >>> import numpy as np, fastsas as fs, fastsas.dask as fsd
    >>> x, y = fs.synthetic.paired_embeddings(2000, 16, image_only_factors=2)
    >>> r = fsd.audit(x, y, groups=np.arange(2000) % 2, block_rows=500)
    >>> r.backend, [g["n"] for g in r.groups]
    ({'moments': 'dask', 'retrieval': 'dask'}, [1000, 1000])
    """
    dask, _ = dask_modules()
    threads = task_threads(threads)
    x, y, store = dask_inputs(images, texts, block_rows, paired=True)
    n, d = int(x.shape[0]), int(x.shape[1])
    if n < 2:
        raise ValueError(f"images and texts need at least 2 rows, got {n}")
    plan = AuditPlan(n, d, groups=groups, image_ids=image_ids, text_ids=text_ids, topq=topq, periods=periods,
                     jackknife_blocks=jackknife_blocks, mismatches=mismatches, mismatch_fdr=mismatch_fdr,
                     chance_repeats=chance_repeats, seed=seed, retrieval=retrieval, ks=ks,
                     max_cell_bytes=max_cell_bytes, unit_name=unit_name)
    sizes = plan.sizes()
    offsets = block_offsets(x.chunks[0])
    parts = [dask.delayed(_block_audit, pure=True)(bx, by, plan.codes(int(offsets[i]), int(offsets[i + 1])), d,
                                                   sizes, int(offsets[i]), int(threads))
             for i, (bx, by) in enumerate(zip(delayed_blocks(x), delayed_blocks(y)))]
    total = tree_reduce(parts, _merge_audit, audit_split_every(sizes, d, split_every))
    with client_for(client, scheduler) as c:
        (state,) = compute(c, [total], progress, "moments on the cluster (one pass)")

        def retrieve(rows, ids_i, ids_t):
            # The whole gallery streams from the store's files; a subgroup's rows are gathered.
            xs, ys, src = (x, y, store) if rows is None else (x[rows], y[rows], None)
            return retrieval_of(xs, ys, src, ids_i, ids_t, plan.ks, True, client=c, split_every=split_every,
                                 threads=threads, progress=progress)

        # The jackknife's eigendecompositions run here, on the client, with its threads.
        rows = ArchiveRows(x, y, materialise=_computed)
        return plan.finalize(AuditState.from_bytes(state), retrieve, resolve_threads(None), progress=_hook(progress),
                             backend={"moments": "dask", "retrieval": "dask"}, rows=rows,
                             chunk_rows=int(max(x.chunks[0])))


def _computed(block: Any) -> np.ndarray:
    return np.asarray(block.compute() if hasattr(block, "compute") else block)


def _hook(progress: Any) -> Any:
    """The in-process progress hook for the steps that run on the client (None for True:
    Dask's own bars cover only its tasks)."""
    return progress if callable(progress) else None


def audit_source(source: Any, scheduler: str | None = None, workers: int | None = None, *,
                 client: Any = None, **audit_kwargs: Any) -> AuditResult:
    """The entry point of ``fastsas audit --scheduler ADDRESS / --workers N``.

    Parameters
    ----------
    source : path, EmbeddingStore or source
        An embedding store path, an open EmbeddingStore, a .npy pair source, or any paired
        source (:func:`fastsas.store.open_source`).
    scheduler : str or None
        Connect to a running Dask scheduler.
    workers : int or None
        Start N local worker processes (distributed.LocalCluster, one thread each).
    client : distributed.Client or None
        A client to run on.
    **audit_kwargs
        :func:`fastsas.audit`'s keywords (groups, image_ids, periods, ...); ``chunk_rows`` is
        the rows per task here.

    Returns
    -------
    AuditResult
        Computed on the cluster, or with neither `scheduler`, `workers` nor `client` by
        :func:`fastsas.audit` in process, unchanged. Whatever this opens it closes.

    Examples
    --------
    >>> import fastsas as fs
    >>> from fastsas.dask import audit_source
    >>> audit_source(fs.synthetic.demo_archive(500, 32), retrieval=False, backend="cpu").n
    500
    """
    if scheduler is None and workers is None and client is None:
        return in_process(open_source(source), **audit_kwargs)
    if "chunk_rows" in audit_kwargs:  # fs.audit's pass chunk is a task's block here
        audit_kwargs["block_rows"] = audit_kwargs.pop("chunk_rows")
    x, y = source_arrays(source, audit_kwargs.get("block_rows"))
    with client_for(client, scheduler, workers) as c:
        if c is not None and audit_kwargs.get("progress"):
            print(f"Dask dashboard: {c.dashboard_link}", file=sys.stderr)
        return audit(x, y, client=c, **audit_kwargs)
