"""Scale-out on Dask: alignment, moments, retrieval and audits of archives that outgrow one
machine, with the same results as the in-process functions (extra ``dist``:
``pip install "fastsas[dist]"``).

Inputs: Dask arrays (paired by row), NumPy arrays, or the path of an embedding store (its
Zarr arrays are opened with Dask after every chunk file is checked to exist: Zarr reads a
missing chunk as zeros). Work runs on ``client`` (a ``distributed.Client``), on a new
client connected to ``scheduler`` (an address, closed afterwards), on the default client
if one exists, and otherwise on Dask's local threaded scheduler.

- Moments: each row block becomes a ``fastsas.Moments`` on a worker, shipped back in its
  byte form (``Moments.to_bytes``: 8 (3 * 2d + 2d (2d + 1) / 2) bytes plus a 34-byte header)
  and tree-merged (``split_every`` states per merge) into the same object ``fs.Moments``
  gives; another merge order changes the numbers only by rounding.
- Retrieval: the image (query) side is sharded by row blocks, and each query block streams
  the whole text gallery block by block through the C++ engine (``_core.retrieval_counts``),
  one task per (query block, gallery block) step. Every step returns only counts: the
  query block's running count and the gallery block's counts for the reverse direction
  (one GEMM serves both, as in process), which are tree-summed per gallery block. Query
  thresholds come from each block's matched rows, gathered by id. Counts are pure
  functions of row pairs, so ranks are bit-identical to ``fs.retrieval``.
- Audit: ``fastsas.audit.AuditState`` is accumulated per row block (the block's routing
  codes travel with it) and tree-merged; ``AuditPlan.finalize`` then runs on the client
  with the retrieval above.

>>> import numpy as np, fastsas as fs, fastsas.dask as fsd
>>> x, y = fs.synthetic.paired_embeddings(3000, 16, dtype=np.float64)
>>> a = fsd.alignment(x, y, block_rows=1000)
>>> abs(a["sas_i2t"] - fs.alignment(x, y)["sas_i2t"]) < 1e-12
True
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from fastsas import _core
from fastsas._validate import as_pair, check_topq, rename_bad_rows, resolve_threads
from fastsas.audit import AuditPlan, AuditResult, AuditState
from fastsas.moments import Moments
from fastsas.retrieval import _check_ks, ground_truth_codes, rank_summary

__all__ = ["alignment", "audit", "audit_source", "moments", "open_store", "retrieval"]

DEFAULT_BLOCK_ROWS = 65536
DEFAULT_SPLIT_EVERY = 8
_INSTALL = 'pip install "fastsas[dist]"'


def _dask():
    """(dask, dask.array) imported on first use, with a message naming the extra."""
    try:
        import dask
        import dask.array as da
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(f"fastsas.dask needs Dask: {_INSTALL} ({exc})") from None
    return dask, da


def _distributed():
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(f"a scheduler address or worker processes need dask.distributed: {_INSTALL} ({exc})") \
            from None
    return distributed


# -- clients and computing ----------------------------------------------------------------------
@contextlib.contextmanager
def _client(client: Any, scheduler: str | None, workers: int | None = None):
    """The client to run on (None: Dask's default scheduler); closes what it opened."""
    if sum(v is not None for v in (client, scheduler, workers)) > 1:
        raise ValueError("give at most one of client, scheduler (an address) and workers (a local process count)")
    if client is not None:
        yield client
        return
    if scheduler is not None:
        if not isinstance(scheduler, str) or not scheduler:
            raise TypeError(f"scheduler must be an address such as 'tcp://10.0.0.5:8786', got {scheduler!r}")
        distributed = _distributed()
        try:
            opened = distributed.Client(scheduler, timeout="30s")
        except OSError as exc:
            raise ValueError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        with opened:
            yield opened
        return
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
            raise ValueError(f"workers must be a positive number of local worker processes, got {workers!r}")
        distributed = _distributed()
        # One thread per process: the C++ core parallelises nothing inside a task then, and
        # Dask runs one task per core.
        with distributed.LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                                      dashboard_address=":0") as cluster, distributed.Client(cluster) as opened:
            yield opened
        return
    try:
        import distributed

        yield distributed.default_client()
    except (ImportError, ValueError):  # no distributed, or no client: Dask's local scheduler
        yield None


def _compute(client: Any, objects: list, progress: bool) -> list:
    """Compute delayed objects on `client` (or locally), showing Dask's own progress."""
    dask, _ = _dask()
    if client is None:
        if progress:
            from dask.diagnostics import ProgressBar

            with ProgressBar(out=sys.stderr):
                return list(dask.compute(*objects))
        return list(dask.compute(*objects))
    futures = client.compute(objects)
    if progress:
        _distributed().progress(futures)
    return client.gather(futures)


def _tree(items: list, combine: Callable, split_every: int) -> Any:
    """A delayed tree reduction: combine(*group) over groups of `split_every`, level by
    level, in a fixed order (so the result does not depend on which task finishes first)."""
    dask, _ = _dask()
    if split_every < 2:
        raise ValueError(f"split_every must be at least 2, got {split_every!r}")
    while len(items) > 1:
        items = [dask.delayed(combine, pure=True)(*items[i:i + split_every])
                 for i in range(0, len(items), split_every)]
    return items[0]


# -- inputs -------------------------------------------------------------------------------------
def _check_block_rows(block_rows: Any) -> int:
    if isinstance(block_rows, bool) or not isinstance(block_rows, (int, np.integer)) or block_rows < 1:
        raise ValueError(f"block_rows must be a positive integer (rows per task), got {block_rows!r}")
    return int(block_rows)


def open_store(path: str | os.PathLike, block_rows: int | None = None) -> tuple[Any, Any, Any]:
    """(images, texts, store): the store's two Zarr arrays as Dask arrays of `block_rows`
    rows per block (default: the store's chunk_rows), and the open EmbeddingStore (its
    metadata). Every chunk file of both arrays is checked first: a Zarr reader fills a
    missing chunk with zeros, which would give silently wrong numbers, so a store with
    missing chunks raises fastsas.store.StoreError naming every missing file."""
    _, da = _dask()
    from fastsas import store as st

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such embedding store directory")
    manifest = st._read_manifest(path)
    n, dim, chunk_rows = int(manifest["n"]), int(manifest["dim"]), int(manifest["chunk_rows"])
    chunks = int(manifest["chunks_done"])
    missing = [path / name / "c" / str(i) / "0" for name in st.ARRAY_NAMES for i in range(chunks)
               if not (path / name / "c" / str(i) / "0").is_file()]
    if missing:
        shown = ", ".join(str(f.relative_to(path)) for f in missing[:20])
        more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise st.StoreError(f"the embedding store {path} is missing {len(missing)} chunk file(s): {shown}{more} "
                            f"(of {chunks} chunks of {chunk_rows} rows per array); Zarr would read them as zeros. "
                            "Restore them from a copy, or re-embed those rows")
    store = st.EmbeddingStore.open(path)  # the other checks: sizes, Zarr metadata, metadata files
    rows = chunk_rows if block_rows is None else _check_block_rows(block_rows)
    images, texts = store.zarr_arrays()
    if images.shape != (n, dim) or texts.shape != (n, dim):
        raise st.StoreError(f"{path}: the Zarr arrays have shapes {images.shape} and {texts.shape}, the manifest "
                            f"says ({n}, {dim})")
    return (da.from_zarr(images, chunks=(rows, dim)), da.from_zarr(texts, chunks=(rows, dim)), store)


def _as_dask(a: Any, name: str, block_rows: int) -> Any:
    _, da = _dask()
    if isinstance(a, da.Array):
        arr = a
    else:
        if not hasattr(a, "shape") or not hasattr(a, "dtype"):
            a = np.asarray(a)
        arr = da.from_array(a, chunks=(block_rows, -1))
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, dim), got shape {arr.shape}")
    if any(np.isnan(c) for c in arr.shape):
        raise ValueError(f"{name} has unknown chunk sizes; call {name}.compute_chunk_sizes() first")
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    if arr.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must hold float16, float32 or float64 embeddings, got dtype {arr.dtype}")
    if 0 in arr.chunks[0] and arr.shape[0]:  # e.g. a row subset: a task never gets an empty block
        arr = arr.rechunk({0: tuple(c for c in arr.chunks[0] if c)})
    return arr.rechunk({1: -1})  # a block carries whole rows


def _inputs(images: Any, texts: Any, block_rows: int | None, paired: bool) -> tuple[Any, Any, Any]:
    """(X, Y, store or None) as Dask arrays; with `paired`, Y has X's row blocks."""
    if texts is None:
        if not isinstance(images, (str, os.PathLike)):
            raise TypeError("give images and texts (Dask or NumPy arrays), or the path of an embedding store alone")
        x, y, store = open_store(images, block_rows)
    else:
        rows = DEFAULT_BLOCK_ROWS if block_rows is None else _check_block_rows(block_rows)
        x, y, store = _as_dask(images, "images", rows), _as_dask(texts, "texts", rows), None
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"images and texts must live in the same embedding space: got dims {x.shape[1]} and "
                         f"{y.shape[1]}")
    if paired:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"images and texts must be paired row by row: got {x.shape[0]} and {y.shape[0]} rows")
        if y.chunks[0] != x.chunks[0]:
            y = y.rechunk({0: x.chunks[0]})
    return x, y, store


class _StoreRows:
    """Rows [start, stop) of one array of an embedding store, read by the task that uses
    them. A retrieval step that reads its own blocks keeps nothing of the archive alive
    between steps: as Dask blocks, every gallery block would stay in cluster memory until
    the last query block has streamed past it (the whole gallery, in practice)."""

    def __init__(self, path: Path, name: str, start: int, stop: int):
        self.path, self.name, self.start, self.stop = str(path), name, int(start), int(stop)

    def read(self) -> np.ndarray:
        return np.asarray(_open_zarr(self.path, self.name)[self.start:self.stop])

    def __repr__(self) -> str:  # Dask names tasks by their arguments
        return f"_StoreRows({self.path!r}, {self.name!r}, {self.start}, {self.stop})"


@functools.lru_cache(maxsize=16)
def _open_zarr(path: str, name: str) -> Any:
    import zarr

    return zarr.open_array(str(Path(path) / name), mode="r")


def _store_blocks(store: Any, arr: Any, name: str) -> list | None:
    """Readers of `arr`'s row blocks when it is the store's own array, else None."""
    if store is None:
        return None
    offsets = _offsets(arr.chunks[0])
    return [_StoreRows(store.path, name, offsets[b], offsets[b + 1]) for b in range(len(offsets) - 1)]


def _rows(block: Any) -> np.ndarray:
    return block.read() if isinstance(block, _StoreRows) else block


def _offsets(chunks: Sequence[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(chunks)]).astype(np.int64)


def _blocks(arr: Any) -> list:
    return arr.to_delayed().ravel().tolist()


# -- moments ---------------------------------------------------------------------------------------
def _block_moments(x: np.ndarray, y: np.ndarray, offset: int, track_unit_rows: bool, threads: int) -> bytes:
    x, y = as_pair(x, y, min_rows=0)
    m = Moments(x.shape[1], track_unit_rows=track_unit_rows)
    try:
        m._core.update(x, y, threads)
    except _core.BadRowsError as exc:  # name the rows of the whole archive
        raise rename_bad_rows(exc, {"x": "images", "y": "texts"}, offset=offset) from None
    return m.to_bytes()


def _merge_states(kind: Any, *parts: bytes) -> bytes:
    """Merge partial states in their byte form (kind: Moments or AuditState)."""
    out = kind.from_bytes(parts[0])
    for p in parts[1:]:
        out.merge(kind.from_bytes(p))
    return out.to_bytes()


_merge_moments = functools.partial(_merge_states, Moments)


def moments(images: Any, texts: Any = None, *, client: Any = None, scheduler: str | None = None,
            block_rows: int | None = None, split_every: int = DEFAULT_SPLIT_EVERY, track_unit_rows: bool = True,
            threads: int = 1, progress: bool = False) -> Moments:
    """The fastsas.Moments of paired rows, one task per row block and a tree of merges.

    images, texts: Dask or NumPy arrays (n, d), paired by row; or `images` the path of an
    embedding store and `texts` None. block_rows: rows per task for NumPy inputs (Dask
    arrays keep their blocks; a store defaults to its chunk_rows). split_every: states
    merged per reduction task. threads: core threads per task (Dask runs one task per
    worker thread). progress: Dask's progress bar (distributed.progress with a client,
    dask.diagnostics.ProgressBar otherwise).
    """
    dask, _ = _dask()
    x, y, _ = _inputs(images, texts, block_rows, paired=True)
    if x.shape[0] < 2:
        raise ValueError(f"images and texts need at least 2 rows, got {x.shape[0]}")
    offsets = _offsets(x.chunks[0])
    parts = [dask.delayed(_block_moments, pure=True)(bx, by, int(offsets[i]), bool(track_unit_rows), int(threads))
             for i, (bx, by) in enumerate(zip(_blocks(x), _blocks(y)))]
    total = _tree(parts, _merge_moments, split_every)
    with _client(client, scheduler) as c:
        (state,) = _compute(c, [total], progress)
    return Moments.from_bytes(state)


def alignment(images: Any, texts: Any = None, topq: float = 0.1, **kwargs: Any) -> dict[str, float]:
    """fs.alignment on Dask: the same dict, from `moments(images, texts, **kwargs)`."""
    q = check_topq(topq)
    return moments(images, texts, **kwargs).alignment(q)


# -- retrieval -------------------------------------------------------------------------------------
def _as_float(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return np.asarray(block).astype(dtype, copy=False)


def _thresholds(queries: np.ndarray, matches: list, qcodes: np.ndarray, mcodes: np.ndarray, dtype: np.dtype,
                names: tuple[str, str], offset: int, match_rows: np.ndarray,
                threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Best canonical similarity of each query of a block among its matched rows, and the
    exact thresholds of integer rows (see _core.retrieval_thresholds)."""
    cand = _as_float(np.concatenate(matches) if len(matches) > 1 else matches[0], dtype)
    # Compact codes: the core indexes its match table by code.
    _, inverse = np.unique(np.concatenate([qcodes, mcodes]), return_inverse=True)
    inverse = inverse.reshape(-1).astype(np.int32)
    try:
        return _core.retrieval_thresholds(_as_float(queries, dtype), cand, inverse[:len(qcodes)],
                                          inverse[len(qcodes):], "x", "y", threads, exact=True)
    except _core.BadRowsError as exc:
        if exc.input == "x":
            raise rename_bad_rows(exc, {"x": names[0]}, offset=offset) from None
        exc.rows = [int(match_rows[r]) for r in exc.rows]  # rows of the whole gallery
        raise rename_bad_rows(exc, {"y": names[1]}) from None


def _count_step(image_counts: np.ndarray | None, x: np.ndarray, y: np.ndarray, icodes: np.ndarray,
                tcodes: np.ndarray, ithr: np.ndarray, tthr: np.ndarray, dtype: np.dtype, offsets: tuple[int, int],
                threads: int) -> tuple[np.ndarray, np.ndarray]:
    """One step of a query block's stream: add this gallery block's counts to the query
    block's running counts, and return the gallery block's reverse-direction counts."""
    try:
        r = _core.retrieval_counts(_as_float(_rows(x), dtype), _as_float(_rows(y), dtype), icodes, tcodes, ithr[0],
                                   tthr[0], threads=threads, image_exact=ithr[1], text_exact=tthr[1])
    except _core.BadRowsError as exc:
        raise rename_bad_rows(exc, {"x": "images", "y": "texts"},
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
    dask, _ = _dask()
    order = np.argsort(gcodes, kind="stable")
    sorted_codes = gcodes[order]
    offsets = _offsets(q.chunks[0])
    out = []
    for b, block in enumerate(_blocks(q)):
        s, e = int(offsets[b]), int(offsets[b + 1])
        rows = _match_rows(qcodes[s:e], sorted_codes, order)
        if rows.size == 0:  # no query of this block has a match
            out.append((np.full(e - s, np.inf), np.zeros((e - s, 2), dtype=np.int64)))
            continue
        matches = _blocks(g[rows])
        out.append(dask.delayed(_thresholds, pure=True)(block, matches, qcodes[s:e], gcodes[rows], dtype, names, s,
                                                        rows, threads))
    return out


def _retrieval_ranks(x: Any, y: Any, icodes: np.ndarray, tcodes: np.ndarray, split_every: int,
                     threads: int, store: Any = None) -> tuple[list, list]:
    """Delayed rank arrays of every image block and every text block. With the `store` x and
    y came from, each step reads its two blocks itself (_StoreRows)."""
    dask, _ = _dask()
    dtype = np.dtype(np.float32) if x.dtype == y.dtype == np.float32 else np.dtype(np.float64)
    ithr = _side_thresholds(x, y, icodes, tcodes, dtype, ("images", "texts"), threads)
    tthr = _side_thresholds(y, x, tcodes, icodes, dtype, ("texts", "images"), threads)
    xo, yo = _offsets(x.chunks[0]), _offsets(y.chunks[0])
    xb = _store_blocks(store, x, "images") or _blocks(x)
    yb = _store_blocks(store, y, "texts") or _blocks(y)
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
    text_ranks = [dask.delayed(_ranks, pure=True)(_tree(parts, _sum_counts, split_every),
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


def retrieval(images: Any, texts: Any = None, image_ids: Any = None, text_ids: Any = None,
              ks: Sequence[int] = (1, 5, 10), return_ranks: bool = False, *, client: Any = None,
              scheduler: str | None = None, block_rows: int | None = None, split_every: int = DEFAULT_SPLIT_EVERY,
              threads: int = 1, progress: bool = False) -> dict[str, Any]:
    """fs.retrieval on Dask: the same dict, with bit-identical ranks.

    images (n_images, d), texts (n_texts, d): Dask or NumPy arrays (row counts may differ
    when ids are given), or `images` an embedding store path and `texts` None. Ids as in
    fs.retrieval (in memory: one small array per side). Work: one task per (image block,
    text block) pair, each one GEMM through the C++ engine; memory per task is one block of
    each side (from a store path, each task reads its own blocks, so nothing of the archive
    stays in cluster memory between tasks). See fastsas.dask.moments for client, scheduler,
    block_rows, threads, progress.
    """
    x, y, store = _inputs(images, texts, block_rows, paired=False)
    return _retrieval_of(x, y, store, image_ids, text_ids, ks, return_ranks, client=client, scheduler=scheduler,
                         split_every=split_every, threads=threads, progress=progress)


def _retrieval_of(x: Any, y: Any, store: Any, image_ids: Any, text_ids: Any, ks: Sequence[int],
                  return_ranks: bool, *, client: Any, scheduler: str | None = None, split_every: int,
                  threads: int, progress: bool) -> dict[str, Any]:
    """retrieval() on Dask arrays x, y (the arrays of `store` when it is not None)."""
    if x.shape[0] < 1 or y.shape[0] < 1:
        raise ValueError(f"images and texts need at least 1 row each, got {x.shape[0]} and {y.shape[0]}")
    icodes, tcodes = _retrieval_codes(image_ids, text_ids, x.shape[0], y.shape[0])
    ks = _check_ks(ks, x.shape[0], y.shape[0])
    image_ranks, text_ranks = _retrieval_ranks(x, y, icodes, tcodes, split_every, int(threads), store)
    with _client(client, scheduler) as c:
        done = _compute(c, image_ranks + text_ranks, progress)
    return rank_summary(np.concatenate(done[:len(image_ranks)]), np.concatenate(done[len(image_ranks):]), ks,
                        return_ranks)


# -- audit ------------------------------------------------------------------------------------------
def _block_audit(x: np.ndarray, y: np.ndarray, codes: dict, dim: int, sizes: dict, offset: int,
                 threads: int) -> bytes:
    x, y = as_pair(x, y, min_rows=0)
    state = AuditState(dim, sizes)
    state.accumulate(x, y, codes, threads, offset=offset)
    return state.to_bytes()


AUDIT_MERGE_BYTES = 4 << 30  # what one audit merge task may hold


def _audit_split_every(sizes: dict, dim: int, split_every: int) -> int:
    """States per audit merge, capped so a merge task's memory stays near AUDIT_MERGE_BYTES:
    it holds its inputs' bytes plus two full states, and an audit state is every
    accumulator's (2d)^2 moments (~190 MB at d = 768 with 20 jackknife blocks, more with
    subgroup cells), where a Moments state is 9.5 MB."""
    state_bytes = max(1, sum(sizes.values())) * 8 * (2 * dim) * (2 * dim + 1) // 2
    return max(2, min(split_every, AUDIT_MERGE_BYTES // state_bytes - 2))


_merge_audit = functools.partial(_merge_states, AuditState)


def audit(images: Any, texts: Any = None, groups: Any = None, image_ids: Any = None, text_ids: Any = None,
          topq: float = 0.1, *, periods: Any = None, jackknife_blocks: int = 20, mismatches: int = 20,
          retrieval: str | bool = "both", ks: Sequence[int] = (1, 5, 10), max_cell_bytes: int = 2 << 30,
          client: Any = None, scheduler: str | None = None, block_rows: int | None = None,
          split_every: int = DEFAULT_SPLIT_EVERY, threads: int = 1, progress: bool = False) -> AuditResult:
    """fs.audit on Dask: the same AuditResult (numbers within rounding, ranks, mismatches and
    counts identical). The per-block audit states (moments per jackknife block, subgroup
    cell and period) are tree-merged; whole-gallery and within-subgroup retrieval run as
    in fastsas.dask.retrieval. Labels and ids are in memory (one small array each). See
    fs.audit for the options and fastsas.dask.moments for client ... progress."""
    dask, _ = _dask()
    x, y, store = _inputs(images, texts, block_rows, paired=True)
    n, d = int(x.shape[0]), int(x.shape[1])
    if n < 2:
        raise ValueError(f"images and texts need at least 2 rows, got {n}")
    plan = AuditPlan(n, d, groups=groups, image_ids=image_ids, text_ids=text_ids, topq=topq, periods=periods,
                     jackknife_blocks=jackknife_blocks, mismatches=mismatches, retrieval=retrieval, ks=ks,
                     max_cell_bytes=max_cell_bytes)
    sizes = plan._sizes()
    offsets = _offsets(x.chunks[0])
    parts = [dask.delayed(_block_audit, pure=True)(bx, by, plan.codes(int(offsets[i]), int(offsets[i + 1])), d,
                                                   sizes, int(offsets[i]), int(threads))
             for i, (bx, by) in enumerate(zip(_blocks(x), _blocks(y)))]
    total = _tree(parts, _merge_audit, _audit_split_every(sizes, d, split_every))
    with _client(client, scheduler) as c:
        (state,) = _compute(c, [total], progress)

        def retrieve(rows, ids_i, ids_t):
            # The whole gallery streams from the store's files; a subgroup's rows are gathered.
            xs, ys, src = (x, y, store) if rows is None else (x[rows], y[rows], None)
            return _retrieval_of(xs, ys, src, ids_i, ids_t, plan.ks, True, client=c, split_every=split_every,
                                 threads=threads, progress=progress)

        # The jackknife's eigendecompositions run here, on the client, with its threads.
        return plan.finalize(AuditState.from_bytes(state), retrieve, resolve_threads(None),
                             backend={"moments": "dask", "retrieval": "dask"})


def audit_source(source: Any, scheduler: str | None = None, workers: int | None = None, *,
                 client: Any = None, **audit_kwargs: Any) -> AuditResult:
    """The `fastsas audit` command's entry point for --scheduler ADDRESS / --workers N.

    source: an embedding store path, an open EmbeddingStore, a .npy pair source, or any
    paired source (fastsas.store.open_source). scheduler: connect to a running Dask
    scheduler; workers: start N local worker processes (distributed.LocalCluster, one
    thread each); neither (and no client): fs.audit in process, unchanged. Whatever this
    opens it closes. audit_kwargs: fs.audit's keywords (groups, image_ids, periods, ...).
    """
    if scheduler is None and workers is None and client is None:
        from fastsas.audit import audit as in_process
        from fastsas.store import open_source

        return in_process(open_source(source), **audit_kwargs)
    if "chunk_rows" in audit_kwargs:  # fs.audit's pass chunk is a task's block here
        audit_kwargs["block_rows"] = audit_kwargs.pop("chunk_rows")
    if audit_kwargs.get("threads") is None:  # one core thread per task: Dask runs a task per worker thread
        audit_kwargs.pop("threads", None)
    if callable(audit_kwargs.get("progress")):  # the CLI's rich bars; Dask shows its own
        audit_kwargs["progress"] = True
    x, y = _source_arrays(source, audit_kwargs.get("block_rows"))
    with _client(client, scheduler, workers) as c:
        if c is not None and audit_kwargs.get("progress"):
            print(f"Dask dashboard: {c.dashboard_link}", file=sys.stderr)
        return audit(x, y, client=c, **audit_kwargs)


def _source_arrays(source: Any, block_rows: int | None) -> tuple[Any, Any]:
    """Dask arrays of a paired source that workers read themselves (store chunks, .npy
    files); sources without files are read into memory."""
    _, da = _dask()
    from fastsas.io import NpyPairSource
    from fastsas.store import EmbeddingStore, open_source

    if isinstance(source, EmbeddingStore):
        source = source.path
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        x, y, _ = open_store(source, block_rows)
        return x, y
    src = open_source(source)
    if isinstance(src, EmbeddingStore):
        x, y, _ = open_store(src.path, block_rows)
        return x, y
    rows = DEFAULT_BLOCK_ROWS if block_rows is None else _check_block_rows(block_rows)
    paths = (getattr(src, "images", None), getattr(src, "texts", None))
    if isinstance(src, NpyPairSource) or all(isinstance(p, Path) and p.suffix == ".npy" for p in paths):
        return tuple(_npy_blocks(p, src.n, src.dim, rows) for p in paths)
    x, y = src.arrays()
    return _as_dask(np.asarray(x), "images", rows), _as_dask(np.asarray(y), "texts", rows)


def _npy_rows(path: str, start: int, stop: int) -> np.ndarray:
    return np.array(np.load(path, mmap_mode="r")[start:stop])


def _npy_blocks(path: Path, n: int, dim: int, rows: int) -> Any:
    """A Dask array over a .npy file whose blocks each worker reads from the file itself."""
    dask, da = _dask()
    from fastsas.io import npy_header

    dtype = npy_header(path)[1]
    blocks = [da.from_delayed(dask.delayed(_npy_rows, pure=True)(str(path), s, min(n, s + rows)),
                              shape=(min(n, s + rows) - s, dim), dtype=dtype) for s in range(0, n, rows)]
    return _as_dask(da.concatenate(blocks, axis=0), str(path), rows)
