"""The inputs of the cluster path as Dask arrays of row blocks: NumPy or Dask arrays, an
embedding store (its chunk files checked first: Zarr reads a missing chunk as zeros), .npy
files whose blocks the workers read themselves, and any other paired source."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fastsas._validate import check_int, computed_dtype
from fastsas.dask.cluster import dask_modules
from fastsas.io import NpyPairSource, StoreError, npy_header
from fastsas.store import EmbeddingStore, layout, open_source

__all__ = ["DEFAULT_BLOCK_ROWS", "StoreRows", "as_dask", "block_offsets", "check_block_rows", "dask_inputs",
           "delayed_blocks", "open_store", "rows_of", "source_arrays", "store_blocks"]

DEFAULT_BLOCK_ROWS = 65536


def check_block_rows(block_rows: Any) -> int:
    """Rows per task: a positive integer."""
    return check_int(block_rows, "block_rows", meaning="rows per task")


def open_store(path: str | os.PathLike, block_rows: int | None = None) -> tuple[Any, Any, Any]:
    """The two arrays of an embedding store as Dask arrays, after every chunk file of both is
    checked to exist (a Zarr reader fills a missing chunk with zeros, which would give
    silently wrong numbers).

    Parameters
    ----------
    path : str or os.PathLike
        The store directory.
    block_rows : int or None
        Rows per Dask block (default: the store's chunk_rows).

    Returns
    -------
    tuple
        (images, texts, store): the Dask arrays and the open :class:`~fastsas.store.EmbeddingStore`
        (its metadata).

    Raises
    ------
    FileNotFoundError
        When there is no such directory.
    StoreError
        When chunk files are missing (every one is named) or the store is inconsistent.

    Examples
    --------
    >>> import tempfile, fastsas as fs
    >>> from fastsas.dask import open_store
    >>> path = tempfile.mkdtemp() + "/s"
    >>> fs.store.EmbeddingStore.build(path, fs.synthetic.demo_archive(600, 32), chunk_rows=256).close()
    >>> images, texts, store = open_store(path)
    >>> images.shape, images.chunks[0], store.columns[:1]
    ((600, 32), (256, 256, 88), ['study_id'])
    """
    _, da = dask_modules()
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such embedding store directory")
    manifest = layout.read_manifest(path)
    n, dim, chunk_rows = int(manifest["n"]), int(manifest["dim"]), int(manifest["chunk_rows"])
    chunks = int(manifest["chunks_done"])
    missing = layout.missing_chunk_files(path, chunks)
    if missing:
        shown = ", ".join(str(f.relative_to(path)) for f in missing[:20])
        more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise StoreError(f"the embedding store {path} is missing {len(missing)} chunk file(s): {shown}{more} "
                            f"(of {chunks} chunks of {chunk_rows} rows per array); Zarr would read them as zeros. "
                            "Restore them from a copy, or re-embed those rows")
    store = EmbeddingStore.open(path)  # the other checks: sizes, Zarr metadata, metadata files
    rows = chunk_rows if block_rows is None else check_block_rows(block_rows)
    images, texts = store.zarr_arrays()
    if images.shape != (n, dim) or texts.shape != (n, dim):
        raise StoreError(f"{path}: the Zarr arrays have shapes {images.shape} and {texts.shape}, the manifest "
                            f"says ({n}, {dim})")
    return (da.from_zarr(images, chunks=(rows, dim)), da.from_zarr(texts, chunks=(rows, dim)), store)


def as_dask(a: Any, name: str, block_rows: int) -> Any:
    _, da = dask_modules()
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
    target = computed_dtype(arr.dtype, name)
    if arr.dtype != target:
        arr = arr.astype(target)
    if 0 in arr.chunks[0] and arr.shape[0]:  # e.g. a row subset: a task never gets an empty block
        arr = arr.rechunk({0: tuple(c for c in arr.chunks[0] if c)})
    return arr.rechunk({1: -1})  # a block carries whole rows


def dask_inputs(images: Any, texts: Any, block_rows: int | None, paired: bool) -> tuple[Any, Any, Any]:
    """(X, Y, store or None) as Dask arrays; with `paired`, Y has X's row blocks."""
    if texts is None:
        if not isinstance(images, (str, os.PathLike)):
            raise TypeError("give images and texts (Dask or NumPy arrays), or the path of an embedding store alone")
        x, y, store = open_store(images, block_rows)
    else:
        rows = DEFAULT_BLOCK_ROWS if block_rows is None else check_block_rows(block_rows)
        x, y, store = as_dask(images, "images", rows), as_dask(texts, "texts", rows), None
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"images and texts must live in the same embedding space: got dims {x.shape[1]} and "
                         f"{y.shape[1]}")
    if paired:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"images and texts must be paired row by row: got {x.shape[0]} and {y.shape[0]} rows")
        if y.chunks[0] != x.chunks[0]:
            y = y.rechunk({0: x.chunks[0]})
    return x, y, store


class StoreRows:
    """Rows [start, stop) of one array of an embedding store, read by the task that uses
    them. A retrieval step that reads its own blocks keeps nothing of the archive alive
    between steps: as Dask blocks, every gallery block would stay in cluster memory until
    the last query block has streamed past it (the whole gallery, in practice)."""

    def __init__(self, path: Path, name: str, start: int, stop: int):
        self.path, self.name, self.start, self.stop = str(path), name, int(start), int(stop)

    def read(self) -> np.ndarray:
        return np.asarray(_open_zarr(self.path, self.name)[self.start:self.stop])

    def __repr__(self) -> str:  # Dask names tasks by their arguments
        return f"StoreRows({self.path!r}, {self.name!r}, {self.start}, {self.stop})"


@functools.lru_cache(maxsize=16)
def _open_zarr(path: str, name: str) -> Any:
    import zarr

    return zarr.open_array(str(Path(path) / name), mode="r")


def store_blocks(store: Any, arr: Any, name: str) -> list | None:
    """Readers of `arr`'s row blocks when it is the store's own array, else None."""
    if store is None:
        return None
    offsets = block_offsets(arr.chunks[0])
    return [StoreRows(store.path, name, offsets[b], offsets[b + 1]) for b in range(len(offsets) - 1)]


def rows_of(block: Any) -> np.ndarray:
    return block.read() if isinstance(block, StoreRows) else block


def block_offsets(chunks: Sequence[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(chunks)]).astype(np.int64)


def delayed_blocks(arr: Any) -> list:
    return arr.to_delayed().ravel().tolist()


def source_arrays(source: Any, block_rows: int | None) -> tuple[Any, Any]:
    """Dask arrays of a paired source that workers read themselves (store chunks, .npy
    files); sources without files are read into memory."""
    _, da = dask_modules()
    if isinstance(source, EmbeddingStore):
        source = source.path
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        x, y, _ = open_store(source, block_rows)
        return x, y
    src = open_source(source)
    if isinstance(src, EmbeddingStore):
        x, y, _ = open_store(src.path, block_rows)
        return x, y
    rows = DEFAULT_BLOCK_ROWS if block_rows is None else check_block_rows(block_rows)
    paths = (getattr(src, "images", None), getattr(src, "texts", None))
    if isinstance(src, NpyPairSource) or all(isinstance(p, Path) and p.suffix == ".npy" for p in paths):
        return tuple(_npy_blocks(p, src.n, src.dim, rows) for p in paths)
    x, y = src.arrays()
    return as_dask(np.asarray(x), "images", rows), as_dask(np.asarray(y), "texts", rows)


def _npy_rows(path: str, start: int, stop: int) -> np.ndarray:
    return np.array(np.load(path, mmap_mode="r")[start:stop])


def _npy_blocks(path: Path, n: int, dim: int, rows: int) -> Any:
    """A Dask array over a .npy file whose blocks each worker reads from the file itself."""
    dask, da = dask_modules()
    dtype = npy_header(path)[1]
    blocks = [da.from_delayed(dask.delayed(_npy_rows, pure=True)(str(path), s, min(n, s + rows)),
                              shape=(min(n, s + rows) - s, dim), dtype=dtype) for s in range(0, n, rows)]
    return as_dask(da.concatenate(blocks, axis=0), str(path), rows)
