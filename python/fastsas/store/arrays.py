"""Reading a store's arrays: streamed in chunks (:class:`ChunkRows`), mapped into one
contiguous read-only array (:func:`map_contiguous`), or gathered row by row from per-chunk
memory maps (:class:`StoreArray`)."""
from __future__ import annotations

import ctypes
import mmap
import os
import platform
import sys
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from fastsas.io.errors import StoreError
from fastsas.io.rows import open_sequential, pread_into
from fastsas.store.layout import DTYPE

__all__ = ["ChunkRows", "StoreArray", "map_contiguous"]


class ChunkRows:
    """Rows of one store array, spread over its chunk files: the row reader
    (:class:`fastsas.io.rows.RowReader`) that the store's ``iter_chunks`` streams through.
    Chunk files are opened as they are reached and closed once passed."""

    def __init__(self, files: list[Path], rows: int, dim: int, chunk_rows: int):
        self.files, self.rows, self.dim, self.chunk_rows = files, rows, dim, chunk_rows
        self.dtype = DTYPE
        self.row_bytes = dim * DTYPE.itemsize
        self.fds: dict[int, int] = {}

    def _fd(self, i: int) -> int:
        fd = self.fds.get(i)
        if fd is None:
            try:
                fd = open_sequential(self.files[i])
            except FileNotFoundError:
                raise StoreError(f"{self.files[i]} is missing: chunk {i} is gone; the store is truncated") from None
            self.fds[i] = fd
        return fd

    def read(self, start: int, out: np.ndarray) -> None:
        view = memoryview(out).cast("B")
        row, stop, done = start, start + len(out), 0
        while row < stop:
            i, local = divmod(row, self.chunk_rows)
            take = min(self.chunk_rows - local, stop - row)
            nbytes = take * self.row_bytes
            pread_into(self._fd(i), view[done:done + nbytes], local * self.row_bytes, self.files[i],
                        f"rows {row}..{row + take - 1}")
            for old in [k for k in self.fds if k < i]:  # chunks are read in order: close the ones left behind
                os.close(self.fds.pop(old))
            row += take
            done += nbytes

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


_LINUX_MAP = {"x86_64", "amd64", "aarch64", "arm64", "ppc64le", "s390x", "riscv64"}


def map_contiguous(files: list[Path], file_bytes: int, n: int, dim: int) -> np.ndarray | None:
    """Map every chunk file, in order, into one contiguous read-only address range and
    return the first n rows as a NumPy array (zero copy, paged in on demand like np.memmap).
    Linux on 64-bit only, and only when a chunk is a whole number of pages; None otherwise."""
    if not sys.platform.startswith("linux") or platform.machine().lower() not in _LINUX_MAP:
        return None
    if not files or file_bytes % mmap.PAGESIZE:
        return None
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        c_mmap, c_munmap = libc.mmap, libc.munmap
    except (OSError, AttributeError):  # pragma: no cover - no libc symbols
        return None
    c_mmap.restype = ctypes.c_void_p
    c_mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int64)
    c_munmap.restype = ctypes.c_int
    c_munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    prot_none, prot_read, map_fixed, map_noreserve = 0, mmap.PROT_READ, 0x10, 0x4000
    failed = ctypes.c_void_p(-1).value
    total = len(files) * file_bytes
    base = c_mmap(None, total, prot_none, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | map_noreserve, -1, 0)
    if base in (None, failed):
        return None
    for i, path in enumerate(files):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            c_munmap(base, total)
            return None
        try:
            want = base + i * file_bytes
            got = c_mmap(want, file_bytes, prot_read, mmap.MAP_PRIVATE | map_fixed, fd, 0)
        finally:
            os.close(fd)
        if got != want:
            c_munmap(base, total)
            return None
    holder = (ctypes.c_char * total).from_address(base)
    weakref.finalize(holder, c_munmap, base, total)  # unmapped when the last view is gone
    arr = np.frombuffer(holder, dtype=DTYPE, count=n * dim).reshape(n, dim)
    arr.flags.writeable = False
    return arr


class StoreArray:
    """Random access to one (n, dim) float32 store array without loading it: rows are
    gathered from per-chunk memory maps. ``x[rows]`` (int, slice, boolean mask, integer
    array in any order, or a (rows, cols) tuple) returns a NumPy array; ``np.asarray(x)``
    reads the whole array into memory. EmbeddingStore.arrays() returns these where it
    cannot map the store into one contiguous array.

    Parameters
    ----------
    files : list of Path
        The chunk files, in order, each `chunk_rows` x `dim` float32.
    n, dim : int
        The array's shape.
    chunk_rows : int
        Rows per chunk file.
    name : str
        Shown in ``repr``.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from fastsas.store import EmbeddingStore
    >>> x = np.arange(40, dtype=np.float32).reshape(10, 4)
    >>> store = EmbeddingStore.build(tempfile.mkdtemp() + "/s", x, x + 1, chunk_rows=4)
    >>> images, _ = store.arrays(mapped=False)
    >>> images[[9, 0]][:, 0].tolist(), images.shape
    ([36.0, 0.0], (10, 4))
    """

    def __init__(self, files: list[Path], n: int, dim: int, chunk_rows: int, name: str = "array"):
        self._files, self._cr, self.name = files, chunk_rows, name
        self.shape = (n, dim)
        self.dtype = DTYPE
        self.ndim = 2
        self._maps: dict[int, np.memmap] = {}

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def size(self) -> int:
        """The number of values, n * dim."""
        return self.shape[0] * self.shape[1]

    def _chunk(self, i: int) -> np.memmap:
        m = self._maps.get(i)
        if m is None:
            try:
                m = np.memmap(self._files[i], dtype=DTYPE, mode="r", shape=(self._cr, self.shape[1]))
            except FileNotFoundError:
                raise StoreError(f"{self._files[i]} is missing: chunk {i} is gone; the store is truncated") from None
            except ValueError as exc:
                raise StoreError(f"{self._files[i]} is shorter than a chunk ({exc}); the store is truncated") \
                    from None
            self._maps[i] = m
        return m

    def _gather(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), self.shape[1]), dtype=DTYPE)
        if not len(idx):
            return out
        which = idx // self._cr
        for c in np.unique(which):
            sel = which == c
            out[sel] = self._chunk(int(c))[idx[sel] - c * self._cr]
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        cols = None
        if isinstance(key, tuple):
            if len(key) > 2:
                raise IndexError(f"too many indices for a 2-D array: {len(key)}")
            key, cols = key if len(key) == 2 else (key[0], None)
        idx = np.arange(self.shape[0])[key]
        if np.ndim(idx) == 0:
            row = self._gather(np.array([int(idx)]))[0]
            return row if cols is None else row[cols]
        out = self._gather(np.asarray(idx, dtype=np.int64).reshape(-1))
        return out if cols is None else out[:, cols]

    def __array__(self, dtype=None, copy=None):
        out = self._gather(np.arange(self.shape[0]))
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"StoreArray({self.name}, shape={self.shape}, dtype=float32)"
