"""Retrieval on Dask: the query side sharded by row blocks, each query block streaming the
gallery block by block through the C++ engine, one task per (query block, gallery block)
step returning only counts; ranks are bit-identical to :func:`fastsas.retrieval`."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fastsas import _core
from fastsas._badrows import bad_rows_error
from fastsas._labels import encode_labels
from fastsas._validate import check_ks
from fastsas.dask.cluster import (DEFAULT_SPLIT_EVERY, client_for, compute, dask_modules, task_threads, tree_reduce,
                                  with_options_doc)
from fastsas.dask.inputs import dask_inputs, block_offsets, delayed_blocks, rows_of, store_blocks
from fastsas.retrieval import ground_truth_codes, rank_summary

__all__ = ["retrieval", "retrieval_of", "retrieval_ranks"]

def _as_float(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return np.asarray(block).astype(dtype, copy=False)


def _thresholds(queries: np.ndarray, matches: list, qcodes: np.ndarray, mcodes: np.ndarray, dtype: np.dtype,
                names: tuple[str, str], offset: int, match_rows: np.ndarray,
                threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Best canonical similarity of each query of a block among its matched rows, and the
    exact thresholds of integer rows (see _core.retrieval_thresholds)."""
    cand = _as_float(np.concatenate(matches) if len(matches) > 1 else matches[0], dtype)
    # Compact codes: the core indexes its match table by code.
    _, inverse = encode_labels(np.concatenate([qcodes, mcodes]), "codes", len(qcodes) + len(mcodes), item="code",
                               per="row")
    try:
        return _core.retrieval_thresholds(_as_float(queries, dtype), cand, query_codes=inverse[:len(qcodes)],
                                          candidate_codes=inverse[len(qcodes):], query_input="x", candidate_input="y",
                                          threads=threads, exact=True)
    except _core.BadRowsError as exc:
        if exc.input == "x":
            raise bad_rows_error(exc, {"x": names[0]}, offset=offset) from None
        exc.rows = [int(match_rows[r]) for r in exc.rows]  # rows of the whole gallery
        raise bad_rows_error(exc, {"y": names[1]}) from None


def _count_step(image_counts: np.ndarray | None, x: np.ndarray, y: np.ndarray, icodes: np.ndarray,
                tcodes: np.ndarray, ithr: tuple[np.ndarray, np.ndarray], tthr: tuple[np.ndarray, np.ndarray],
                dtype: np.dtype, offsets: tuple[int, int], threads: int) -> tuple[np.ndarray, np.ndarray]:
    """One step of a query block's stream: add this gallery block's counts to the query
    block's running counts, and return the gallery block's reverse-direction counts."""
    try:
        r = _core.retrieval_counts(_as_float(rows_of(x), dtype), _as_float(rows_of(y), dtype), image_codes=icodes,
                                   text_codes=tcodes, image_thresholds=ithr[0], text_thresholds=tthr[0], threads=threads,
                                   image_exact=ithr[1], text_exact=tthr[1])
    except _core.BadRowsError as exc:
        raise bad_rows_error(exc, {"x": "images", "y": "texts"},
                              offset=offsets[0] if exc.input == "x" else offsets[1]) from None
    counts = r["image_counts"] if image_counts is None else image_counts + r["image_counts"]
    return counts, r["text_counts"]


def _sum_counts(*parts: np.ndarray) -> np.ndarray:
    out = parts[0].copy()
    for p in parts[1:]:
        out += p
    return out


def _ranks(counts: np.ndarray, thresholds: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Rank = 1 + count for a query with a match (finite threshold), 0 without one."""
    return np.where(np.isfinite(thresholds[0]), counts + 1, 0).astype(np.int64)


def _match_rows(query_codes: np.ndarray, sorted_codes: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Sorted gallery rows whose code is one of `query_codes` (order sorts the gallery codes)."""
    u = np.unique(query_codes)
    lo, hi = np.searchsorted(sorted_codes, u, "left"), np.searchsorted(sorted_codes, u, "right")
    keep = hi > lo
    if not keep.any():
        return np.empty(0, dtype=np.int64)
    rows = np.concatenate([order[a:b] for a, b in zip(lo[keep], hi[keep])])
    return np.sort(rows)


def _side_thresholds(q: Any, g: Any, qcodes: np.ndarray, gcodes: np.ndarray, dtype: np.dtype,
                     names: tuple[str, str], threads: int) -> list:
    """Delayed thresholds of every block of side q, each from its matched rows of side g."""
    dask, _ = dask_modules()
    order = np.argsort(gcodes, kind="stable")
    sorted_codes = gcodes[order]
    offsets = block_offsets(q.chunks[0])
    out = []
    for b, block in enumerate(delayed_blocks(q)):
        s, e = int(offsets[b]), int(offsets[b + 1])
        rows = _match_rows(qcodes[s:e], sorted_codes, order)
        if rows.size == 0:  # no query of this block has a match
            out.append((np.full(e - s, np.inf), np.zeros((e - s, 2), dtype=np.int64)))
            continue
        matches = delayed_blocks(g[rows])
        out.append(dask.delayed(_thresholds, pure=True)(block, matches, qcodes[s:e], gcodes[rows], dtype, names, s,
                                                        rows, threads))
    return out


def retrieval_ranks(x: Any, y: Any, icodes: np.ndarray, tcodes: np.ndarray, split_every: int,
                     threads: int, store: Any = None) -> tuple[list, list]:
    """Delayed rank arrays of every image block and every text block. With the `store` x and
    y came from, each step reads its two blocks itself (StoreRows)."""
    dask, _ = dask_modules()
    dtype = np.dtype(np.float32) if x.dtype == y.dtype == np.float32 else np.dtype(np.float64)
    ithr = _side_thresholds(x, y, icodes, tcodes, dtype, ("images", "texts"), threads)
    tthr = _side_thresholds(y, x, tcodes, icodes, dtype, ("texts", "images"), threads)
    xo, yo = block_offsets(x.chunks[0]), block_offsets(y.chunks[0])
    xb = store_blocks(store, x, "images") or delayed_blocks(x)
    yb = store_blocks(store, y, "texts") or delayed_blocks(y)
    # Each block's codes are one graph key that every step of it reads: embedded in the
    # steps, they would be copied (and hashed) once per block pair, blocks x n in all.
    xc = [dask.delayed(icodes[xo[a]:xo[a + 1]].copy(), pure=True) for a in range(len(xb))]
    yc = [dask.delayed(tcodes[yo[b]:yo[b + 1]].copy(), pure=True) for b in range(len(yb))]
    step = dask.delayed(_count_step, pure=True, nout=2)
    image_ranks, text_parts = [], [[] for _ in yb]
    for a, block in enumerate(xb):
        counts = None
        for b, gallery in enumerate(yb):
            counts, text_counts = step(counts, block, gallery, xc[a], yc[b], ithr[a], tthr[b], dtype,
                                       (int(xo[a]), int(yo[b])), threads)
            text_parts[b].append(text_counts)
        image_ranks.append(dask.delayed(_ranks, pure=True)(counts, ithr[a]))
    text_ranks = [dask.delayed(_ranks, pure=True)(tree_reduce(parts, _sum_counts, split_every),
                                                  tthr[b])
                  for b, parts in enumerate(text_parts)]
    return image_ranks, text_ranks


def _retrieval_codes(image_ids: Any, text_ids: Any, n_images: int, n_texts: int) -> tuple[np.ndarray, np.ndarray]:
    """fs.retrieval's checked id codes; the default ground truth as explicit codes 0..n-1 (the
    block steps index their match tables by code)."""
    icodes, tcodes = ground_truth_codes(image_ids, text_ids, n_images, n_texts)
    if icodes is None:
        icodes = tcodes = np.arange(n_images, dtype=np.int32)
    return icodes, tcodes


@with_options_doc
def retrieval(images: Any, texts: Any = None, image_ids: Any = None, text_ids: Any = None,
              ks: Sequence[int] = (1, 5, 10), return_ranks: bool = False, *, client: Any = None,
              scheduler: str | None = None, block_rows: int | None = None, split_every: int = DEFAULT_SPLIT_EVERY,
              threads: int | None = None, progress: Any = None) -> dict[str, Any]:
    """:func:`fastsas.retrieval` on Dask: the same dict, with bit-identical ranks.

    Work: one task per (image block, text block) pair, each one GEMM through the C++ engine;
    memory per task is one block of each side (from a store path, each task reads its own
    blocks, so nothing of the archive stays in cluster memory between tasks).

    Parameters
    ----------
    images, texts : Dask array, ndarray, or path
        (n_images, d) and (n_texts, d) (row counts may differ when ids are given); or
        `images` an embedding store path and `texts` None.
    image_ids, text_ids, ks, return_ranks
        As :func:`fastsas.retrieval` (ids in memory: one small array per side).
    $options

    Returns
    -------
    dict
        The keys of :func:`fastsas.retrieval` (without top-k lists).

    Raises
    ------
    TypeError, ValueError
        As :func:`fastsas.retrieval`.

    Examples
    --------
    >>> import numpy as np, fastsas as fs, fastsas.dask as fsd
    >>> x, y = fs.synthetic.paired_embeddings(1500, 16)
    >>> a = fsd.retrieval(x, y, return_ranks=True, block_rows=500)
    >>> b = fs.retrieval(x, y, return_ranks=True, backend="cpu")
    >>> bool(np.array_equal(a["i2t_ranks"], b["i2t_ranks"])), a["rsum"] == b["rsum"]
    (True, True)
    """
    threads = task_threads(threads)
    x, y, store = dask_inputs(images, texts, block_rows, paired=False)
    return retrieval_of(x, y, store, image_ids, text_ids, ks, return_ranks, client=client, scheduler=scheduler,
                         split_every=split_every, threads=threads, progress=progress)


def retrieval_of(x: Any, y: Any, store: Any, image_ids: Any, text_ids: Any, ks: Sequence[int],
                  return_ranks: bool, *, client: Any, scheduler: str | None = None, split_every: int,
                  threads: int, progress: bool) -> dict[str, Any]:
    """retrieval() on Dask arrays x, y (the arrays of `store` when it is not None)."""
    if x.shape[0] < 1 or y.shape[0] < 1:
        raise ValueError(f"images and texts need at least 1 row each, got {x.shape[0]} and {y.shape[0]}")
    icodes, tcodes = _retrieval_codes(image_ids, text_ids, x.shape[0], y.shape[0])
    ks = check_ks(ks, x.shape[0], y.shape[0])
    image_ranks, text_ranks = retrieval_ranks(x, y, icodes, tcodes, split_every, int(threads), store)
    with client_for(client, scheduler) as c:
        done = compute(c, image_ranks + text_ranks, progress, "retrieval on the cluster (row blocks)")
    return rank_summary(np.concatenate(done[:len(image_ranks)]), np.concatenate(done[len(image_ranks):]), ks,
                        return_ranks)
