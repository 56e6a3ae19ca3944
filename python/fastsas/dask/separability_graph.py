"""The moment measures of :func:`fastsas.separability` on Dask: one task per row block
accumulates the block's :class:`~fastsas.separability.ClassMoments` (the block's offset in
the archive puts each row in its held-out block, as one pass would), tree-merged in byte
form; then one task per row block runs the second pass (held-out LDA predictions, cosine
silhouettes, PCA coordinates) from the merged state, and only those per-row values come
back. The k-NN part, the Euclidean silhouette and the probe need every row (or a sample) in
one place: they stay with :func:`fastsas.separability`."""
from __future__ import annotations

import copy
import functools
import os
from typing import Any

import numpy as np

from fastsas._badrows import NON_FINITE, SHOWN, ZERO_NORM, BadRows, bad_rows_error
from fastsas._labels import encode_labels
from fastsas._validate import check_int
from fastsas.dask.cluster import (DEFAULT_SPLIT_EVERY, client_for, compute, dask_modules, tree_reduce,
                                  with_options_doc)
from fastsas.dask.inputs import (DEFAULT_BLOCK_ROWS, as_dask, block_offsets, check_block_rows, delayed_blocks,
                                 open_store)
from fastsas.separability.measures import DEFAULT_SHRINKAGE, RowPass
from fastsas.separability.run import SeparabilityResult, moment_summary
from fastsas.separability.state import ClassMoments

__all__ = ["class_moments", "separability_moments"]


def _merge_class_moments(*parts: bytes) -> bytes:
    """Merge states in byte form (ClassMoments.merge returns a new state)."""
    return functools.reduce(lambda a, b: a.merge(b), map(ClassMoments.from_bytes, parts)).to_bytes()


# The inputs both graphs take, documented once ($inputs in their docstrings).
_INPUTS_DOC = """embeddings : Dask array, ndarray, or path
        (n, d) rows; or the path of an embedding store (its `modality` array).
    labels : array_like or str
        One class label per row; with a store, the name of a metadata column.
    modality : {"images", "texts"}
        The store's array to use."""


def _with_inputs_doc(function):
    function.__doc__ = function.__doc__.replace("$inputs", _INPUTS_DOC)
    return function


def _check_rows(x: np.ndarray, offset: int) -> np.ndarray:
    """The block's rows; non-finite or all-zero rows refused, named by their archive row."""
    x = np.asarray(x)
    for problem, bad in ((NON_FINITE, ~np.all(np.isfinite(x), axis=1)), (ZERO_NORM, ~np.any(x != 0, axis=1))):
        rows = np.flatnonzero(bad)
        if rows.size:
            raise bad_rows_error(BadRows("x", problem, rows[:SHOWN], rows.size), {"x": "embeddings"}, offset=offset,
                                 fix="drop or repair those rows") from None
    return x


def _block_state(x: np.ndarray, codes: np.ndarray, offset: int, n_classes: int, blocks: int) -> bytes:
    x = _check_rows(x, offset)
    return ClassMoments(x.shape[1], n_classes, blocks, start=offset).update(x, codes).to_bytes()


def _block_rows_pass(row_pass: RowPass, x: np.ndarray, codes: np.ndarray, offset: int) -> tuple:
    part = copy.copy(row_pass)  # the fitted models are shared; the per-row lists are this block's
    part.predictions, part.silhouettes, part.coordinates, part.next_row = [], [], [], int(offset)
    part.update(_check_rows(x, offset), codes)
    return part.result()


def _inputs(embeddings: Any, labels: Any, modality: str, block_rows: int | None) -> tuple[Any, list, np.ndarray]:
    """(Dask array of the rows, classes, int64 codes) for an array or a store path (whose
    `labels` may name a metadata column)."""
    if isinstance(embeddings, (str, os.PathLike)):
        if modality not in ("images", "texts"):
            raise ValueError(f"modality must be 'images' or 'texts', got {modality!r}")
        images, texts, store = open_store(embeddings, block_rows)
        x = images if modality == "images" else texts
        if isinstance(labels, str):
            labels = store.column(labels)
    else:
        x = as_dask(embeddings, "embeddings", DEFAULT_BLOCK_ROWS if block_rows is None else check_block_rows(block_rows))
    n = int(x.shape[0])
    if n < 3:
        raise ValueError(f"embeddings needs at least 3 rows, got {n}")
    classes, codes32 = encode_labels(labels, "labels", n, item="class label", per="row", counted="entries")
    if len(classes) < 2:
        raise ValueError(f"labels has a single class ({classes[0]!r}); separability needs at least 2 classes")
    return x, list(classes), codes32.astype(np.int64)


def _state_graph(x: Any, codes: np.ndarray, n_classes: int, blocks: int, split_every: int) -> tuple[Any, list]:
    dask, _ = dask_modules()
    offsets = block_offsets(x.chunks[0])
    row_blocks = delayed_blocks(x)
    code_blocks = [codes[offsets[i]:offsets[i + 1]] for i in range(len(row_blocks))]
    parts = [dask.delayed(_block_state, pure=True)(bx, code_blocks[i], int(offsets[i]), n_classes, blocks)
             for i, bx in enumerate(row_blocks)]
    return tree_reduce(parts, _merge_class_moments, split_every), list(zip(row_blocks, code_blocks, offsets[:-1]))


@with_options_doc
@_with_inputs_doc
def class_moments(embeddings: Any, labels: Any, *, modality: str = "images", blocks: int = 5, client: Any = None,
                  scheduler: str | None = None, block_rows: int | None = None,
                  split_every: int = DEFAULT_SPLIT_EVERY, progress: Any = None) -> tuple[ClassMoments, list]:
    """The :class:`~fastsas.separability.ClassMoments` of labelled rows on Dask: one task per
    row block, tree-merged; equal to one pass in process up to the rounding of the merges.

    Parameters
    ----------
    $inputs
    blocks : int, default 5
        Held-out blocks of the LDA cross-validation (row i is in block i % blocks).
    $options

    Returns
    -------
    (ClassMoments, list)
        The merged state and the classes (``classes[c]`` is the label of code c).

    Examples
    --------
    >>> import numpy as np, fastsas.dask as fsd
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(3000, 8)), rng.integers(0, 3, 3000)
    >>> state, classes = fsd.class_moments(x, y, block_rows=1000)
    >>> state.count, classes
    (3000, [0, 1, 2])
    """
    x, classes, codes = _inputs(embeddings, labels, modality, block_rows)
    total, _ = _state_graph(x, codes, len(classes), _check_blocks(blocks, x.shape[0]), split_every)
    with client_for(client, scheduler) as c:
        (state,) = compute(c, [total], progress, "class moments on the cluster (one pass)")
    return ClassMoments.from_bytes(state), classes


def _check_blocks(blocks: Any, n: int) -> int:
    return check_int(blocks, "blocks", low=2, high=n)


@with_options_doc
@_with_inputs_doc
def separability_moments(embeddings: Any, labels: Any, *, modality: str = "images",
                         shrinkage: float = DEFAULT_SHRINKAGE, blocks: int = 5, client: Any = None,
                         scheduler: str | None = None, block_rows: int | None = None,
                         split_every: int = DEFAULT_SPLIT_EVERY, progress: Any = None,
                         seed: int = 0) -> SeparabilityResult:
    """The moment measures of :func:`fastsas.separability` on Dask: Fisher ratio, pairwise
    class separations, held-out LDA accuracy (with every row's prediction), the exact cosine
    silhouette and the PCA of all rows; the same numbers as in process up to the rounding of
    the merges (LDA predictions, being argmaxes, agree unless a row is within that rounding
    of a tie). Two passes over the rows; memory on the client O(n) for the per-row values.

    Parameters
    ----------
    $inputs
    shrinkage, blocks :
        As :func:`fastsas.separability`.
    $options
    seed : int, default 0
        Seed of the stratified sample of points ``to_dict(points=True)`` draws for a report.

    Returns
    -------
    SeparabilityResult
        ``summary`` with the keys rows, dim, classes, class_counts, shrinkage, fisher_ratio,
        pairwise, lda, silhouette (cosine), pca; ``knn`` empty (the k-NN part needs
        :func:`fastsas.separability`); the per-row LDA predictions, cosine silhouettes and
        PCA coordinates; ``state``.

    Raises
    ------
    ValueError
        Fewer than 2 classes or 3 rows, labels of the wrong length, shrinkage outside [0, 1],
        non-finite or all-zero rows (named by their row in the archive).

    Examples
    --------
    >>> import numpy as np, fastsas as fs, fastsas.dask as fsd
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([0, 1, 2], 1000)
    >>> x = rng.normal(size=(3000, 8)) + 2.0 * labels[:, None]
    >>> r = fsd.separability_moments(x, labels, block_rows=700)
    >>> abs(r["fisher_ratio"] - fs.separability(x, labels, ks=(1,), probe=False)["fisher_ratio"]) < 1e-9
    True
    """
    dask, _ = dask_modules()
    if not 0.0 <= float(shrinkage) <= 1.0:
        raise ValueError(f"shrinkage must lie in [0, 1] (the weight of the scaled identity); got {shrinkage!r}")
    x, classes, codes = _inputs(embeddings, labels, modality, block_rows)
    total, blocks_of_rows = _state_graph(x, codes, len(classes), _check_blocks(blocks, x.shape[0]), split_every)
    with client_for(client, scheduler) as c:
        (state_bytes,) = compute(c, [total], progress, "class moments on the cluster (pass 1 of 2)")
        state = ClassMoments.from_bytes(state_bytes)
        row_pass = RowPass(state, float(shrinkage))
        shared = dask.delayed(row_pass, pure=True)  # shipped once, used by every block's task
        parts = [dask.delayed(_block_rows_pass, pure=True)(shared, bx, bc, int(offset))
                 for bx, bc, offset in blocks_of_rows]
        done = compute(c, parts, progress, "LDA, silhouettes and PCA on the cluster (pass 2 of 2)")
    lda_predicted = np.concatenate([p[0] for p in done])
    cosine_s = np.concatenate([p[1] for p in done])
    pca = np.concatenate([p[2] for p in done])
    summary = moment_summary(state, row_pass, lda_predicted, cosine_s, codes, classes, float(shrinkage))
    summary.update(knn={}, seed=int(seed))
    return SeparabilityResult(summary, codes, classes, lda_predicted, {}, cosine_s, None, pca, state=state)
