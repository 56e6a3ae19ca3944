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


def npy_header(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran_order, data offset) of a .npy file, read without loading it."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            version = npy_format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = npy_format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = npy_format.read_array_header_2_0(f)
            offset = f.tell()
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


def iter_npy_chunks(path: str | os.PathLike, chunk_rows: int = 65536) -> Iterator[np.ndarray]:
    """Yield consecutive row chunks of a 2-D C-ordered .npy file. Each yielded array is a
    view of one reused buffer: use it (or copy it) before asking for the next chunk."""
    shape, dtype, fortran, offset = npy_header(path)
    if len(shape) != 2:
        raise ValueError(f"{path} must hold a 2-D array (n_samples, dim), found shape {shape}")
    if fortran:
        raise ValueError(f"{path} is Fortran-ordered; rows are not contiguous on disk. "
                         "Re-save it with np.save(path, np.ascontiguousarray(x))")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    n, d = shape
    buffer = np.empty((min(chunk_rows, max(n, 1)), d), dtype=dtype)
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        for start in range(0, n, chunk_rows):
            rows = min(chunk_rows, n - start)
            view = buffer[:rows]
            got = f.readinto(memoryview(view).cast("B"))
            if got != view.nbytes:
                raise ValueError(f"{path} ended early at row {start}: the file is truncated")
            yield view


def iter_npy_pairs(images: str | os.PathLike, texts: str | os.PathLike,
                   chunk_rows: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Paired chunks of two .npy files with the same number of rows."""
    (ni, *_), _, _, _ = npy_header(images)
    (nt, *_), _, _, _ = npy_header(texts)
    if ni != nt:
        raise ValueError(f"{images} has {ni} rows but {texts} has {nt}: they must be paired row by row")
    yield from zip(iter_npy_chunks(images, chunk_rows), iter_npy_chunks(texts, chunk_rows))
