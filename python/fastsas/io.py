"""Streaming readers for embeddings on disk.

A memory map of a large file keeps every page it touched resident, so reading a 6 GB
archive through np.load(mmap_mode="r") grows the process to 6 GB. These readers copy
fixed-size chunks into one reused buffer instead: memory stays at one chunk per file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
from numpy.lib import format as npy_format


def read_npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, header length) from an open binary file object
    positioned at the start of a .npy stream (a file, or a member of an .npz)."""
    version = npy_format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = npy_format.read_array_header_1_0(f)
    else:
        shape, fortran, dtype = npy_format.read_array_header_2_0(f)
    return tuple(shape), fortran, dtype, f.tell()


def npy_header(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran_order, data offset) of a .npy file, read without loading it."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            shape, fortran, dtype, offset = read_npy_header(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except ValueError as exc:
        raise ValueError(f"{path} is not a valid .npy file: {exc}") from None
    if dtype.hasobject:
        raise ValueError(f"{path} holds Python objects; fastsas never unpickles (allow_pickle is off)")
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = path.stat().st_size
    if actual < expected:
        raise ValueError(f"{path} is truncated: {actual} bytes, its header promises {expected}")
    return tuple(shape), dtype, fortran, offset


def _check_2d(path, shape, fortran) -> None:
    if len(shape) != 2:
        raise ValueError(f"{path} must hold a 2-D array (n_samples, dim), found shape {shape}")
    if fortran:
        raise ValueError(f"{path} is Fortran-ordered; rows are not contiguous on disk. "
                         "Re-save it with np.save(path, np.ascontiguousarray(x))")


class _RowReader:
    """Reads row ranges of one C-ordered 2-D .npy file into caller-given buffers."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        shape, self.dtype, fortran, self.offset = npy_header(path)
        _check_2d(path, shape, fortran)
        self.rows, self.dim = shape
        self.row_bytes = self.dim * self.dtype.itemsize
        self.fd = os.open(self.path, os.O_RDONLY)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)

    def read(self, start: int, out: np.ndarray) -> None:
        view = memoryview(out).cast("B")
        pos, done = self.offset + start * self.row_bytes, 0
        while done < len(view):  # os.preadv may return short counts
            got = os.preadv(self.fd, [view[done:]], pos + done)
            if got == 0:
                raise ValueError(f"{self.path} ended early at row {start}: the file is truncated")
            done += got

    def close(self) -> None:
        os.close(self.fd)


def _iter_rows(readers: list[_RowReader], chunk_rows: int, prefetch: bool) -> Iterator[tuple[np.ndarray, ...]]:
    """Consecutive row chunks of equally long files, read one chunk ahead in a background
    thread (the read releases the GIL, and so does the core), into two alternating buffer
    sets: a chunk stays valid until the next one is asked for."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
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
        from concurrent.futures import ThreadPoolExecutor

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


def iter_npy_chunks(path: str | os.PathLike, chunk_rows: int = 32768, *,
                    prefetch: bool = True) -> Iterator[np.ndarray]:
    """Yield consecutive row chunks of a 2-D C-ordered .npy file, reading the next chunk
    while the caller works on this one. Each chunk is a view of a reused buffer, valid
    until the next chunk is asked for: copy it to keep it."""
    for (chunk,) in _iter_rows([_RowReader(path)], chunk_rows, prefetch):
        yield chunk


def iter_npy_pairs(images: str | os.PathLike, texts: str | os.PathLike, chunk_rows: int = 32768, *,
                   prefetch: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Paired chunks of two .npy files with the same number of rows (see iter_npy_chunks)."""
    readers = [_RowReader(images), _RowReader(texts)]
    if readers[0].rows != readers[1].rows:
        for r in readers:
            r.close()
        raise ValueError(f"{images} has {readers[0].rows} rows but {texts} has {readers[1].rows}: "
                         "they must be paired row by row")
    yield from _iter_rows(readers, chunk_rows, prefetch)


class NpyPairSource:
    """A paired archive of two (n, d) .npy files, read in chunks (bounded memory) for the
    moments and memory-mapped for the work that needs random access (retrieval).
    Audits, and later the on-disk store, speak this interface: n, dim, iter_chunks, arrays."""

    def __init__(self, images: str | os.PathLike, texts: str | os.PathLike):
        self.images, self.texts = Path(images), Path(texts)
        (ni, di), _, fi, _ = _shape2(self.images)
        (nt, dt), _, ft, _ = _shape2(self.texts)
        if ni != nt:
            raise ValueError(f"{self.images} has {ni} rows but {self.texts} has {nt}: they must be paired row by row")
        if di != dt:
            raise ValueError(f"{self.images} has dim {di} but {self.texts} has dim {dt}")
        self.n, self.dim = ni, di

    def iter_chunks(self, chunk_rows: int = 32768) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return iter_npy_pairs(self.images, self.texts, chunk_rows)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.load(self.images, mmap_mode="r"), np.load(self.texts, mmap_mode="r")

    def __repr__(self) -> str:
        return f"NpyPairSource({str(self.images)!r}, {str(self.texts)!r}, n={self.n}, dim={self.dim})"


def _shape2(path: Path):
    shape, dtype, fortran, offset = npy_header(path)
    _check_2d(path, shape, fortran)
    return shape, dtype, fortran, offset
