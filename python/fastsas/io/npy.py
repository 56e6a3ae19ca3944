"""``.npy`` files: their header, read without loading the data, and streamed row chunks
of one file or of an (images, texts) pair of files. Python objects are never unpickled."""
from __future__ import annotations

import os
import tokenize
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np
from numpy.lib import format as npy_format

from fastsas.io.rows import OffsetRows, iter_rows

__all__ = ["NpyPairSource", "iter_npy_chunks", "iter_npy_pairs", "npy_header", "read_npy_header"]


def read_npy_header(f: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """The header of the .npy stream `f` is positioned at (a file, or a member of an .npz),
    read without the data; `f` is left at the first byte of the data.

    Parameters
    ----------
    f : binary file object
        Positioned at the start of a .npy stream.

    Returns
    -------
    tuple
        ``(shape, fortran_order, dtype, header length in bytes)``.

    Raises
    ------
    ValueError
        When the stream is not a .npy header.

    Examples
    --------
    >>> import io, numpy as np
    >>> from fastsas.io import read_npy_header
    >>> buf = io.BytesIO(); np.save(buf, np.zeros((2, 3), np.float32)); _ = buf.seek(0)
    >>> read_npy_header(buf)
    ((2, 3), False, dtype('float32'), 128)
    """
    version = npy_format.read_magic(f)
    try:
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = npy_format.read_array_header_2_0(f)
    except (SyntaxError, tokenize.TokenError, TypeError, KeyError, IndexError, OverflowError) as exc:
        # a damaged header dictionary: NumPy's parser raises more than ValueError
        raise ValueError(f"its header is not a valid .npy header ({type(exc).__name__}: {exc})") from None
    return tuple(shape), fortran, dtype, f.tell()


def npy_header(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran_order, data offset) of a .npy file, read without loading it.

    Parameters
    ----------
    path : str or os.PathLike
        The .npy file.

    Returns
    -------
    tuple
        ``(shape, dtype, fortran_order, offset)``: offset is where the data starts.

    Raises
    ------
    FileNotFoundError
        When there is no such file.
    ValueError
        When it is not a valid .npy file, holds Python objects, or is shorter than its
        header promises.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from fastsas.io import npy_header
    >>> path = tempfile.mkdtemp() + "/x.npy"
    >>> np.save(path, np.zeros((3, 4), np.float32))
    >>> npy_header(path)[:3]
    ((3, 4), dtype('float32'), False)
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            shape, fortran, dtype, offset = read_npy_header(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a directory, not a .npy file") from None
    except ValueError as exc:
        raise ValueError(f"{path} is not a valid .npy file: {exc}") from None
    if dtype.hasobject:
        raise ValueError(f"{path} holds Python objects; fastsas never unpickles (allow_pickle is off)")
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = path.stat().st_size
    if actual < expected:
        raise ValueError(f"{path} is truncated: {actual} bytes, its header promises {expected}")
    return tuple(shape), dtype, fortran, offset


def _matrix_header(path: str | os.PathLike) -> tuple[tuple[int, int], np.dtype, int]:
    """(shape, dtype, offset) of a .npy file that holds a C-ordered 2-D array."""
    shape, dtype, fortran, offset = npy_header(path)
    if len(shape) != 2:
        raise ValueError(f"{path} must hold a 2-D array (n_samples, dim), found shape {shape}")
    if fortran:
        raise ValueError(f"{path} is Fortran-ordered; rows are not contiguous on disk. "
                         "Re-save it with np.save(path, np.ascontiguousarray(x))")
    return (int(shape[0]), int(shape[1])), dtype, offset


def _rows_of(path: str | os.PathLike) -> OffsetRows:
    (rows, dim), dtype, offset = _matrix_header(path)
    return OffsetRows(path, offset, rows, dim, dtype)


def iter_npy_chunks(path: str | os.PathLike, chunk_rows: int = 32768, *, prefetch: bool = True) -> Iterator[np.ndarray]:
    """Consecutive row chunks of a 2-D C-ordered .npy file, the next read while the caller
    works on this one.

    Parameters
    ----------
    path : str or os.PathLike
        An (n, d) .npy file.
    chunk_rows : int, default 32768
        Rows per chunk (the last is shorter).
    prefetch : bool, default True
        Read one chunk ahead in a background thread.

    Yields
    ------
    ndarray
        (rows, d) chunks in the file's dtype: views of a reused buffer, valid until the
        next chunk is asked for (copy one to keep it).

    Raises
    ------
    ValueError
        When the file is not a 2-D C-ordered .npy array, or `chunk_rows` is not a
        positive integer.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from fastsas.io import iter_npy_chunks
    >>> path = tempfile.mkdtemp() + "/x.npy"
    >>> np.save(path, np.arange(20, dtype=np.float32).reshape(10, 2))
    >>> [len(c) for c in iter_npy_chunks(path, chunk_rows=4)]
    [4, 4, 2]
    """
    for (chunk,) in iter_rows([_rows_of(path)], chunk_rows, prefetch):
        yield chunk


def iter_npy_pairs(images: str | os.PathLike, texts: str | os.PathLike, chunk_rows: int = 32768, *,
                   prefetch: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Paired chunks of two .npy files with the same number of rows (see
    :func:`iter_npy_chunks`).

    Parameters
    ----------
    images, texts : str or os.PathLike
        (n, d_images) and (n, d_texts) .npy files, row i of one paired with row i of the other.
    chunk_rows : int, default 32768
        Rows per chunk.
    prefetch : bool, default True
        Read one chunk ahead.

    Yields
    ------
    tuple of ndarray
        (images_chunk, texts_chunk), views of reused buffers.

    Raises
    ------
    ValueError
        When the row counts differ (see also :func:`iter_npy_chunks`).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from fastsas.io import iter_npy_pairs
    >>> folder = tempfile.mkdtemp()
    >>> np.save(folder + "/x.npy", np.zeros((5, 3), np.float32)); np.save(folder + "/y.npy", np.ones((5, 3), np.float32))
    >>> [(len(a), float(b.sum())) for a, b in iter_npy_pairs(folder + "/x.npy", folder + "/y.npy", chunk_rows=3)]
    [(3, 9.0), (2, 6.0)]
    """
    readers = [_rows_of(images), _rows_of(texts)]
    if readers[0].rows != readers[1].rows:
        for r in readers:
            r.close()
        raise ValueError(f"{images} has {readers[0].rows} rows but {texts} has {readers[1].rows}: "
                         "they must be paired row by row")
    yield from iter_rows(readers, chunk_rows, prefetch)


class NpyPairSource:
    """A paired archive of two (n, d) .npy files: streamed in chunks for the moments
    (bounded memory), memory-mapped for the work that needs random access (retrieval).

    This is the paired-source interface that :func:`fastsas.audit` reads: ``n``, ``dim``,
    ``iter_chunks(chunk_rows)`` and ``arrays()``.

    Parameters
    ----------
    images, texts : str or os.PathLike
        (n, d) C-ordered .npy files of the same shape.

    Raises
    ------
    ValueError
        When a file is not a 2-D C-ordered .npy array, or the shapes differ.
    FileNotFoundError
        When a file is missing.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from fastsas.io import NpyPairSource
    >>> folder = tempfile.mkdtemp()
    >>> np.save(folder + "/x.npy", np.zeros((6, 4), np.float32)); np.save(folder + "/y.npy", np.ones((6, 4), np.float32))
    >>> source = NpyPairSource(folder + "/x.npy", folder + "/y.npy")
    >>> source.n, source.dim, [len(x) for x, _ in source.iter_chunks(4)]
    (6, 4, [4, 2])
    """

    def __init__(self, images: str | os.PathLike, texts: str | os.PathLike):
        self.images, self.texts = Path(images), Path(texts)
        (ni, di), _, _ = _matrix_header(self.images)
        (nt, dt), _, _ = _matrix_header(self.texts)
        if ni != nt:
            raise ValueError(f"{self.images} has {ni} rows but {self.texts} has {nt}: they must be paired row by row")
        if di != dt:
            raise ValueError(f"{self.images} has dim {di} but {self.texts} has dim {dt}")
        self.n, self.dim = ni, di

    def iter_chunks(self, chunk_rows: int = 32768) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(images, texts) chunks of `chunk_rows` rows, read ahead (see :func:`iter_npy_pairs`)."""
        return iter_npy_pairs(self.images, self.texts, chunk_rows)

    def arrays(self) -> tuple[Any, Any]:
        """(images, texts) memory-mapped read-only (``np.load(..., mmap_mode="r")``)."""
        return np.load(self.images, mmap_mode="r"), np.load(self.texts, mmap_mode="r")

    def __repr__(self) -> str:
        return f"NpyPairSource({str(self.images)!r}, {str(self.texts)!r}, n={self.n}, dim={self.dim})"
