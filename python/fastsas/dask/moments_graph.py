"""The moments on Dask: one task per row block, each returning its ``Moments`` in byte form,
tree-merged into the same object :class:`fastsas.Moments` gives."""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

from fastsas import _core
from fastsas._badrows import bad_rows_error
from fastsas._validate import as_pair, check_topq
from fastsas.dask.cluster import (DEFAULT_SPLIT_EVERY, client_for, compute, dask_modules, task_threads, tree_reduce,
                                  with_options_doc)
from fastsas.dask.inputs import dask_inputs, block_offsets, delayed_blocks
from fastsas.moments import Moments

__all__ = ["alignment", "merge_states", "moments"]

def _block_moments(x: np.ndarray, y: np.ndarray, offset: int, track_unit_rows: bool, threads: int) -> bytes:
    x, y = as_pair(x, y, min_rows=0)
    m = Moments(x.shape[1], track_unit_rows=track_unit_rows)
    try:
        m._core.update(x, y, threads=threads)
    except _core.BadRowsError as exc:  # name the rows of the whole archive
        raise bad_rows_error(exc, {"x": "images", "y": "texts"}, offset=offset) from None
    return m.to_bytes()


def merge_states(kind: Any, *parts: bytes) -> bytes:
    """Merge partial states in their byte form (kind: Moments or AuditState)."""
    out = kind.from_bytes(parts[0])
    for p in parts[1:]:
        out.merge(kind.from_bytes(p))
    return out.to_bytes()


_merge_moments = functools.partial(merge_states, Moments)


@with_options_doc
def moments(images: Any, texts: Any = None, *, client: Any = None, scheduler: str | None = None,
            block_rows: int | None = None, split_every: int = DEFAULT_SPLIT_EVERY, track_unit_rows: bool = True,
            threads: int | None = None, progress: Any = None) -> Moments:
    """The :class:`fastsas.Moments` of paired rows on Dask: one task per row block, then a tree
    of merges; the same object as in process, up to the rounding of another merge order.

    Parameters
    ----------
    images, texts : Dask array, ndarray, or path
        (n, d) paired by row; or `images` the path of an embedding store and `texts` None.
    $options
    track_unit_rows : bool, default True
        As :class:`fastsas.Moments`.

    Returns
    -------
    Moments
        The merged state.

    Raises
    ------
    TypeError, ValueError
        For inputs that are not paired float matrices, or bad options; bad rows are named by
        their row in the whole archive.
    StoreError
        When a store is missing chunk files.

    Examples
    --------
    >>> import fastsas as fs, fastsas.dask as fsd
    >>> x, y = fs.synthetic.paired_embeddings(3000, 16)
    >>> fsd.moments(x, y, block_rows=1000).n
    3000
    """
    dask, _ = dask_modules()
    threads = task_threads(threads)
    x, y, _ = dask_inputs(images, texts, block_rows, paired=True)
    if x.shape[0] < 2:
        raise ValueError(f"images and texts need at least 2 rows, got {x.shape[0]}")
    offsets = block_offsets(x.chunks[0])
    parts = [dask.delayed(_block_moments, pure=True)(bx, by, int(offsets[i]), bool(track_unit_rows), int(threads))
             for i, (bx, by) in enumerate(zip(delayed_blocks(x), delayed_blocks(y)))]
    total = tree_reduce(parts, _merge_moments, split_every)
    with client_for(client, scheduler) as c:
        (state,) = compute(c, [total], progress, "moments on the cluster (one pass)")
    return Moments.from_bytes(state)


def alignment(images: Any, texts: Any = None, topq: float = 0.1, **kwargs: Any) -> dict[str, float]:
    """:func:`fastsas.alignment` on Dask: the same dict, from :func:`moments`.

    Parameters
    ----------
    images, texts : Dask array, ndarray, or path
        As :func:`moments`.
    topq : float, default 0.1
        SAS's top fraction of anchor modes.
    **kwargs
        The options of :func:`moments`.

    Returns
    -------
    dict
        The keys of :func:`fastsas.alignment`.

    Examples
    --------
    >>> import numpy as np, fastsas as fs, fastsas.dask as fsd
    >>> x, y = fs.synthetic.paired_embeddings(3000, 16, dtype=np.float64)
    >>> abs(fsd.alignment(x, y, block_rows=1000)["cka"] - fs.alignment(x, y, backend="cpu")["cka"]) < 1e-12
    True
    """
    q = check_topq(topq)
    return moments(images, texts, **kwargs).alignment(q)
