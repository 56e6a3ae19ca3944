"""Reading row ranges of raw C-ordered 2-D arrays from files into caller-given buffers,
and streaming consecutive chunks of several equally long arrays with one chunk of
read-ahead. Every file reader of fastsas (.npy, .npz members, the store's chunk files)
reads through :func:`pread_into`.

A memory map of a large file keeps every page it touched resident, so reading a 6 GB
archive through ``np.load(mmap_mode="r")`` grows the process to 6 GB. These readers copy
fixed-size chunks into reused buffers instead: memory stays at two chunks per file.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Protocol, Sequence

import numpy as np

from fastsas._validate import check_int
from fastsas.io.errors import StoreError

__all__ = ["OffsetRows", "RowReader", "iter_rows", "open_sequential", "pread_into"]


class RowReader(Protocol):
    """What :func:`iter_rows` reads through: ``rows``, ``dim``, ``dtype``,
    ``read(start, out)`` filling `out` with rows ``start .. start + len(out)`` and
    ``close()``."""

    rows: int
    dim: int
    dtype: np.dtype

    def read(self, start: int, out: np.ndarray) -> None: ...

    def close(self) -> None: ...


def open_sequential(path: str | os.PathLike) -> int:
    """A read-only file descriptor, advised for sequential reading where the OS allows."""
    fd = os.open(path, os.O_RDONLY)
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    return fd


def pread_into(fd: int, view: memoryview, pos: int, path: Path, what: str) -> None:
    """Fill the byte view `view` from file offset `pos` of `fd` (`path` and `what` name
    them in the error).

    Raises
    ------
    StoreError
        When the file ends before `view` is full (it is truncated).
    """
    done = 0
    while done < len(view):  # os.preadv may return short counts
        got = os.preadv(fd, [view[done:]], pos + done)
        if got == 0:
            raise StoreError(f"{path} ended early while reading {what}: the file is truncated")
        done += got


class OffsetRows:
    """Rows of a C-ordered (rows, dim) array stored raw at byte `offset` of a file: a .npy
    file after its header, or a stored (uncompressed) member of an .npz file."""

    def __init__(self, path: str | os.PathLike, offset: int, rows: int, dim: int, dtype: np.dtype):
        self.path, self.offset, self.rows, self.dim, self.dtype = Path(path), int(offset), int(rows), int(dim), dtype
        self.row_bytes = self.dim * dtype.itemsize
        self.fd = open_sequential(self.path)

    def read(self, start: int, out: np.ndarray) -> None:
        pread_into(self.fd, memoryview(out).cast("B"), self.offset + start * self.row_bytes, self.path,
                   f"row {start}")

    def close(self) -> None:
        os.close(self.fd)


def iter_rows(readers: Sequence[RowReader], chunk_rows: int, prefetch: bool = True) -> Iterator[tuple[np.ndarray, ...]]:
    """Consecutive row chunks of equally long arrays, one array per reader.

    The next chunk is read in a background thread while the caller works on this one (the
    reads release the GIL, and so does the core) into two alternating buffer sets: a chunk
    is a view of a reused buffer, valid until the next one is asked for. The readers are
    closed at the end (or when the iterator is closed).

    Parameters
    ----------
    readers : sequence of RowReader
        The arrays, all with the same number of rows.
    chunk_rows : int
        Rows per chunk (the last is shorter), a positive integer.
    prefetch : bool, default True
        Read one chunk ahead.

    Yields
    ------
    tuple of ndarray
        One (rows, dim) view per reader.

    Raises
    ------
    ValueError
        When `chunk_rows` is not a positive integer.
    """
    try:
        chunk_rows = check_int(chunk_rows, "chunk_rows")
    except ValueError:
        for r in readers:
            r.close()
        raise
    n = readers[0].rows
    size = min(chunk_rows, max(n, 1))
    sets = [[np.empty((size, r.dim), dtype=r.dtype) for r in readers] for _ in range(2 if prefetch else 1)]

    def load(start: int, buffers: list[np.ndarray]) -> tuple[np.ndarray, ...]:
        rows = min(chunk_rows, n - start)
        views = tuple(b[:rows] for b in buffers)
        for reader, view in zip(readers, views):
            reader.read(start, view)
        return views

    starts = list(range(0, n, chunk_rows))
    try:
        if not prefetch:
            for start in starts:
                yield load(start, sets[0])
            return
        with ThreadPoolExecutor(1, thread_name_prefix="fastsas-read") as pool:
            pending = pool.submit(load, starts[0], sets[0]) if starts else None
            for i in range(len(starts)):
                chunk = pending.result()
                if i + 1 < len(starts):
                    pending = pool.submit(load, starts[i + 1], sets[(i + 1) % 2])
                yield chunk
    finally:
        for r in readers:
            r.close()
