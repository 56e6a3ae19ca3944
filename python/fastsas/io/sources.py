"""Paired sources: one interface over every kind of input fastsas reads except the
embedding store (which :mod:`fastsas.store` adds): arrays in memory, two ``.npy`` files,
an ``.npz`` file, a Parquet file with two vector columns.

A paired source has ``n``, ``dim``, ``iter_chunks(chunk_rows)`` (consecutive (images,
texts) chunks, bounded memory), ``arrays()`` (random access), ``metadata()`` (a dict of
1-D NumPy arrays, empty when none), ``columns`` and ``column(name)``; it is a context
manager whose ``close()`` releases temporary files. :func:`fastsas.audit` takes one as its
images argument. :func:`open_pair_source` picks the right class for an input.
"""
from __future__ import annotations

import os
import shutil
import struct
import tempfile
import weakref
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from fastsas._validate import as_pair, check_int, is_source
from fastsas.io.errors import ColumnNotFoundError, StoreError, missing_column
from fastsas.io.metadata import MetadataMixin, is_pathlike, normalise_metadata, pyarrow, table_to_dict
from fastsas.io.npy import NpyPairSource, read_npy_header
from fastsas.io.rows import OffsetRows, iter_rows

__all__ = ["ArrayPairSource", "DEFAULT_VECTOR_COLUMNS", "MAX_COMPRESSION_RATIO", "NpyPair", "NpzPairSource", "ParquetPairSource", "is_source",
           "open_pair_source", "sniff"]

DEFAULT_VECTOR_COLUMNS = ("image_embedding", "text_embedding")
# A compressed .npz member expanding more than this many times its compressed size is not
# extracted (float embeddings compress about 1.1 to 1; 100 to 1 is one repeated value), once
# it is larger than _RATIO_CHECKED_BYTES (small test arrays of zeros stay readable).
MAX_COMPRESSION_RATIO = 100
_RATIO_CHECKED_BYTES = 64 << 20


class ArrayPairSource(MetadataMixin):
    """Paired (n, d) arrays in memory (or memory-mapped), with optional per-row metadata.

    Parameters
    ----------
    images, texts : array_like
        (n, d) float16/float32/float64 arrays paired row by row (float16 is converted to
        float32 once; mixed precisions to float64).
    metadata : dict, pyarrow.Table, DataFrame, path or None
        One value per pair in each column (a dict of 1-D arrays, an Arrow table, a pandas
        DataFrame or the path of a Parquet file).

    Raises
    ------
    TypeError, ValueError
        When the arrays are not paired float matrices, or a metadata column has the wrong
        length.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsas.io import ArrayPairSource
    >>> source = ArrayPairSource(np.zeros((5, 3)), np.ones((5, 3)), {"site": np.array(list("aabbc"))})
    >>> source.n, source.dim, source.columns, [len(x) for x, _ in source.iter_chunks(2)]
    (5, 3, ['site'], [2, 2, 1])
    """

    def __init__(self, images: Any, texts: Any, metadata: Any = None):
        self.images, self.texts = as_pair(images, texts, min_rows=0)
        self.n, self.dim = self.images.shape
        self._where = "the metadata"
        self._meta = normalise_metadata(metadata, self.n, "metadata")

    def iter_chunks(self, chunk_rows: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(images, texts) views of `chunk_rows` consecutive rows (the last shorter)."""
        chunk_rows = check_int(chunk_rows, "chunk_rows")
        for s in range(0, self.n, chunk_rows):
            yield self.images[s:s + chunk_rows], self.texts[s:s + chunk_rows]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(images, texts) as given (validated)."""
        return self.images, self.texts

    def __repr__(self) -> str:
        return f"ArrayPairSource(n={self.n}, dim={self.dim}, columns={self.columns})"


class NpyPair(MetadataMixin, NpyPairSource):
    """Two (n, d) .npy files (:class:`fastsas.io.NpyPairSource`: streamed with read-ahead,
    memory-mapped for random access, never unpickled) plus optional per-row metadata.

    Parameters
    ----------
    images, texts : str or os.PathLike
        (n, d) C-ordered .npy files.
    metadata : dict, pyarrow.Table, DataFrame, path or None
        One value per pair in each column.

    Raises
    ------
    ValueError, FileNotFoundError
        As :class:`fastsas.io.NpyPairSource`, or a metadata column of the wrong length.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from fastsas.io import NpyPair
    >>> folder = tempfile.mkdtemp()
    >>> np.save(folder + "/x.npy", np.zeros((3, 2))); np.save(folder + "/y.npy", np.ones((3, 2)))
    >>> NpyPair(folder + "/x.npy", folder + "/y.npy", {"year": np.array([2020, 2021, 2021])}).columns
    ['year']
    """

    def __init__(self, images: str | os.PathLike, texts: str | os.PathLike, metadata: Any = None):
        NpyPairSource.__init__(self, images, texts)
        self._where = f"the metadata of {self.images}"
        self._meta = normalise_metadata(metadata, self.n, "metadata")


def _npz_member_offset(raw, info: zipfile.ZipInfo, path: Path) -> int:
    """Byte offset in the .npz file where a stored (uncompressed) member's data starts."""
    raw.seek(info.header_offset)
    header = raw.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise StoreError(f"{path}: the entry {info.filename} has no valid local header; the file is corrupt")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len


class NpzPairSource(MetadataMixin):
    """The `images` and `texts` arrays of one .npz file (np.savez / np.savez_compressed).

    np.load(mmap_mode=...) does not map .npz members, and allow_pickle stays off: the
    members' .npy headers are parsed here. A stored (np.savez, uncompressed) member is
    memory-mapped in place, at its offset inside the zip file: nothing is copied. A
    compressed member is streamed once into a temporary .npy file (in `extract_dir`, by
    default the system temp directory), which is memory-mapped and deleted when the source
    is closed or garbage collected. Before anything is extracted, both members' sizes and
    shapes are checked from the zip and .npy headers: members that do not pair, whose size
    disagrees with their header, that would not fit in the free space of `extract_dir`, or
    that expand more than :data:`MAX_COMPRESSION_RATIO` to 1 (beyond 64 MiB) are refused.

    Parameters
    ----------
    path : str or os.PathLike
        The .npz file.
    keys : tuple of str, default ("images", "texts")
        The members holding the (n, d) image and text embeddings.
    metadata : dict, pyarrow.Table, DataFrame, path or None
        One value per pair in each column.
    extract_dir : str, os.PathLike or None
        Where compressed members are extracted (default: the system temp directory).

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    ColumnNotFoundError
        When a member named in `keys` is missing.
    StoreError
        When the file is corrupt or truncated, a member is not a 2-D C-ordered array, the
        two members do not pair, or extracting them is implausible (see above).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from fastsas.io import NpzPairSource
    >>> path = tempfile.mkdtemp() + "/pairs.npz"
    >>> np.savez(path, images=np.zeros((4, 3), np.float32), texts=np.ones((4, 3), np.float32))
    >>> with NpzPairSource(path) as source:
    ...     float(source.arrays()[1].sum())
    12.0
    """

    def __init__(self, path: str | os.PathLike, keys: Sequence[str] = ("images", "texts"), metadata: Any = None,
                 extract_dir: str | os.PathLike | None = None):
        self.path = Path(path)
        self._tmpdir: str | None = None
        self._cleanup = None
        self._parts: list[tuple[Path, int, tuple[int, int], np.dtype]] = []
        try:
            zf = zipfile.ZipFile(self.path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.path}: no such file") from None
        except IsADirectoryError:
            raise StoreError(f"{self.path} is a directory, not an .npz file") from None
        except (zipfile.BadZipFile, OSError, zlib.error, ValueError) as exc:
            raise StoreError(f"{self.path} is not a readable .npz file ({exc}); it is corrupt or truncated") from None
        with zf, open(self.path, "rb") as raw:
            members = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
            for key in keys:
                if key not in members:
                    raise ColumnNotFoundError(f"{self.path} has no array {key!r}; it holds: "
                                              f"{', '.join(members) or 'nothing'} (save it with "
                                              "np.savez(path, images=..., texts=...))", key, members)
            # Every header, size and shape is checked from the zip and .npy headers before a
            # single byte is extracted: a member that cannot pair, or would expand implausibly,
            # is refused without being decompressed.
            found = [(zf.getinfo(key + ".npy"), key) + self._member_header(zf, zf.getinfo(key + ".npy"), key)
                     for key in keys]
            (_, _, (ni, di), _, _), (_, _, (nt, dt), _, _) = found
            if ni != nt:
                raise StoreError(f"{self.path}: {keys[0]} has {ni} rows but {keys[1]} has {nt}; they must be paired "
                                 "row by row")
            if di != dt:
                raise StoreError(f"{self.path}: {keys[0]} has dim {di} but {keys[1]} has dim {dt}")
            self._check_extraction(found, extract_dir)
            for info, key, shape, dtype, header_len in found:
                self._parts.append(self._locate(zf, raw, info, key, shape, dtype, header_len, extract_dir))
        self.n, self.dim = ni, di
        self._where = f"the metadata of {self.path}"
        self._meta = normalise_metadata(metadata, self.n, "metadata")

    def _member_header(self, zf, info, key) -> tuple[tuple[int, int], np.dtype, int]:
        """(shape, dtype, header length) of a member, from its .npy header (only the first
        bytes of a compressed member are decompressed) and checked against the zip header's
        size of the member."""
        where = f"{self.path} (array {key!r})"
        if info.flag_bits & 0x1:
            raise StoreError(f"{where} is encrypted; save the arrays without a password")
        try:
            with zf.open(info) as f:
                shape, fortran, dtype, header_len = read_npy_header(f)
        except (ValueError, zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            raise StoreError(f"{where} is not a valid .npy member ({exc}); the file is corrupt") from None
        if dtype.hasobject:
            raise StoreError(f"{where} holds Python objects; fastsas never unpickles (allow_pickle is off)")
        if len(shape) != 2:
            raise StoreError(f"{where} must be a 2-D array (n_samples, dim), found shape {shape}")
        if fortran:
            raise StoreError(f"{where} is Fortran-ordered; re-save it with np.ascontiguousarray")
        nbytes = header_len + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if info.file_size < nbytes:
            raise StoreError(f"{where} is truncated: {info.file_size} bytes, its header promises {nbytes}")
        if info.file_size > nbytes:
            raise StoreError(f"{where} holds {info.file_size} bytes but its .npy header describes {nbytes} "
                             f"(shape {tuple(shape)}, {dtype}); the file is corrupt")
        return (int(shape[0]), int(shape[1])), dtype, header_len

    def _check_extraction(self, found: list, extract_dir) -> None:
        """Refuse, before extracting, compressed members that would expand implausibly far
        (embeddings do not compress :data:`MAX_COMPRESSION_RATIO` to 1: such a member is one
        repeated value, or a decompression bomb) or that do not fit in the free space of the
        extraction folder."""
        total = 0
        for info, key, shape, dtype, header_len in found:
            if info.compress_type == zipfile.ZIP_STORED:
                continue
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > _RATIO_CHECKED_BYTES and ratio > MAX_COMPRESSION_RATIO:
                raise StoreError(
                    f"{self.path} (array {key!r}): {info.compress_size:,} compressed bytes would expand to "
                    f"{info.file_size:,} ({ratio:,.0f} to 1, shape {shape}); embeddings do not compress that far, so "
                    "this member is almost all one repeated value, or built to exhaust the disk: it is not extracted. "
                    "If the arrays are genuine, save them uncompressed with np.savez (read in place, never extracted)")
            total += info.file_size
        if not total:
            return
        folder = Path(extract_dir) if extract_dir is not None else Path(tempfile.gettempdir())
        try:
            free = shutil.disk_usage(folder).free
        except OSError:  # the folder does not exist: mkdtemp below says so
            return
        if total > free:
            raise StoreError(f"{self.path}: its compressed arrays expand to {total:,} bytes, but {folder} has only "
                             f"{free:,} bytes free; pass extract_dir= a folder with room, or save the arrays "
                             "uncompressed with np.savez (read in place, never extracted)")

    def _locate(self, zf, raw, info, key, shape, dtype, header_len, extract_dir) -> tuple[Path, int, tuple[int, int],
                                                                                          np.dtype]:
        where = f"{self.path} (array {key!r})"
        nbytes = header_len + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if info.compress_type == zipfile.ZIP_STORED:
            offset = _npz_member_offset(raw, info, self.path) + header_len
            size = self.path.stat().st_size
            if size < offset - header_len + nbytes:
                raise StoreError(f"{self.path} is truncated: {size} bytes, array {key!r} needs "
                                 f"{offset - header_len + nbytes}")
            return self.path, offset, tuple(shape), dtype
        # compressed: stream it out once into a temporary .npy file (zipfile stops at the
        # member's size, checked above, and verifies its CRC-32 at the end)
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix="fastsas-npz-", dir=extract_dir)
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._tmpdir, True)
        target = Path(self._tmpdir) / f"{key}.npy"
        try:
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 16 << 20)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as exc:
            self.close()
            raise StoreError(f"{where} could not be decompressed ({exc}); the file is corrupt or truncated") \
                from None
        return target, header_len, tuple(shape), dtype

    def iter_chunks(self, chunk_rows: int = 65536, *, prefetch: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(images, texts) chunks of `chunk_rows` rows read from the file with read-ahead
        (views of reused buffers, valid until the next chunk)."""
        chunk_rows = check_int(chunk_rows, "chunk_rows")
        if self.n == 0:
            return iter(())
        readers = [OffsetRows(p, off, shape[0], shape[1], dt) for p, off, shape, dt in self._parts]
        return iter_rows(readers, chunk_rows, prefetch)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(images, texts) memory-mapped read-only, in place or from the extraction."""
        out = [np.memmap(p, dtype=dt, mode="r", offset=off, shape=shape) for p, off, shape, dt in self._parts]
        return out[0], out[1]

    def close(self) -> None:
        """Delete the temporary extraction of compressed members (arrays() must not be used after)."""
        if self._cleanup is not None:
            self._cleanup()

    def __repr__(self) -> str:
        return f"NpzPairSource({str(self.path)!r}, n={self.n}, dim={self.dim})"


class ParquetPairSource(MetadataMixin):
    """A Parquet file with one row per pair: two vector columns (fixed-size list or list of
    floats, one embedding per row) and any metadata columns.

    iter_chunks streams row batches (bounded memory). Parquet cannot be memory-mapped, so
    arrays() decodes both vector columns into memory once (n * dim values each) and keeps
    them. A column whose lists differ in length, or hold nulls, is refused with the file,
    the column and the first bad row named.

    Parameters
    ----------
    path : str or os.PathLike
        The Parquet file.
    vector_columns : tuple of str, default ("image_embedding", "text_embedding")
        The image and text embedding columns; every other column is metadata.

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    ColumnNotFoundError
        When a vector column is missing.
    StoreError
        When the file is unreadable, a vector column is not a list of floats, or the two
        columns have different dims.

    Examples
    --------
    >>> import tempfile, numpy as np, pyarrow as pa, pyarrow.parquet as pq
    >>> from fastsas.io import ParquetPairSource
    >>> path = tempfile.mkdtemp() + "/pairs.parquet"
    >>> vectors = pa.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], pa.list_(pa.float32(), 2))
    >>> pq.write_table(pa.table({"image_embedding": vectors, "text_embedding": vectors, "site": ["a", "b", "a"]}), path)
    >>> source = ParquetPairSource(path)
    >>> source.n, source.dim, source.columns
    (3, 2, ['site'])
    """

    def __init__(self, path: str | os.PathLike, vector_columns: Sequence[str] = DEFAULT_VECTOR_COLUMNS):
        pa = pyarrow()
        self.path = Path(path)
        self._where = str(self.path)
        if len(vector_columns) != 2:
            raise ValueError(f"vector_columns must name two columns (images, texts), got {vector_columns!r}")
        self.vector_columns = tuple(str(c) for c in vector_columns)
        try:
            self._file = pa.parquet.ParquetFile(self.path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.path}: no such file") from None
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"{self.path} is unreadable as Parquet ({exc}); the file is corrupt") from None
        schema = self._file.schema_arrow
        names = list(schema.names)
        for col in self.vector_columns:
            if col not in names:
                raise missing_column(col, names, str(self.path),
                                      "; name the embedding columns with vector_columns=(images, texts)")
        self.n = int(self._file.metadata.num_rows)
        dims, dtypes = [], []
        for col in self.vector_columns:
            typ = schema.field(col).type
            if not (pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ)) \
                    or not pa.types.is_floating(typ.value_type):
                raise StoreError(f"{self.path}: column {col!r} holds {typ}, not a list of floats (one embedding "
                                 "per row)")
            dtypes.append(np.float64 if pa.types.is_float64(typ.value_type) else np.float32)
            dims.append(typ.list_size if pa.types.is_fixed_size_list(typ) else self._first_length(col))
        if dims[0] != dims[1]:
            raise StoreError(f"{self.path}: column {self.vector_columns[0]!r} has dim {dims[0]} but "
                             f"{self.vector_columns[1]!r} has dim {dims[1]}")
        self.dim = dims[0]
        self._dtype = np.dtype(np.float64) if np.float64 in dtypes else np.dtype(np.float32)
        self._meta_columns = [c for c in names if c not in self.vector_columns]
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None
        self._meta_cache: dict[str, np.ndarray] | None = None

    def _first_length(self, col: str) -> int:
        for batch in self._file.iter_batches(batch_size=64, columns=[col]):
            arr = batch.column(0)
            for i in range(len(arr)):
                if arr[i].is_valid:
                    return len(arr[i])
        return 0

    def _vectors(self, arr, col: str, first_row: int) -> np.ndarray:
        pa = pyarrow()
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if arr.null_count:
            bad = np.flatnonzero(np.asarray(arr.is_null().to_numpy(zero_copy_only=False)))
            raise StoreError(f"{self.path}: column {col!r} has no embedding (null) at row {first_row + int(bad[0])}"
                             f" ({len(bad)} such rows in this batch); drop those rows")
        if pa.types.is_fixed_size_list(arr.type):
            values = arr.flatten()
        else:
            offsets = np.asarray(arr.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
            lengths = np.diff(offsets)
            bad = np.flatnonzero(lengths != self.dim)
            if len(bad):
                r = int(bad[0])
                raise StoreError(f"{self.path}: vector column {col!r} is ragged: row {first_row + r} has "
                                 f"{int(lengths[r])} values but the embeddings have {self.dim} "
                                 f"({len(bad)} rows of other lengths in rows {first_row}.."
                                 f"{first_row + len(arr) - 1}); every row needs one embedding of the same length")
            values = arr.flatten()
        if values.null_count:
            raise StoreError(f"{self.path}: column {col!r} has null values inside embeddings in rows "
                             f"{first_row}..{first_row + len(arr) - 1}")
        out = values.to_numpy(zero_copy_only=False).reshape(len(arr), self.dim)
        return out.astype(self._dtype, copy=False)

    def iter_chunks(self, chunk_rows: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Chunks of exactly `chunk_rows` rows (the last shorter), whatever the row groups."""
        chunk_rows = check_int(chunk_rows, "chunk_rows")
        pending_x: list[np.ndarray] = []
        pending_y: list[np.ndarray] = []
        held = start = 0
        for batch in self._file.iter_batches(batch_size=chunk_rows, columns=list(self.vector_columns)):
            x = self._vectors(batch.column(0), self.vector_columns[0], start)
            y = self._vectors(batch.column(1), self.vector_columns[1], start)
            start += len(x)
            pending_x.append(x)
            pending_y.append(y)
            held += len(x)
            while held >= chunk_rows:
                cx, cy = np.concatenate(pending_x), np.concatenate(pending_y)
                yield cx[:chunk_rows], cy[:chunk_rows]
                pending_x, pending_y = [cx[chunk_rows:]], [cy[chunk_rows:]]
                held -= chunk_rows
        if held:
            yield np.concatenate(pending_x), np.concatenate(pending_y)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(images, texts) decoded into memory once and kept (Parquet cannot be mapped)."""
        if self._arrays is None:
            x = np.empty((self.n, self.dim), dtype=self._dtype)
            y = np.empty((self.n, self.dim), dtype=self._dtype)
            s = 0
            for cx, cy in self.iter_chunks(65536):
                x[s:s + len(cx)] = cx
                y[s:s + len(cy)] = cy
                s += len(cx)
            self._arrays = (x, y)
        return self._arrays

    @property
    def _meta(self) -> dict[str, np.ndarray]:  # type: ignore[override]
        if self._meta_cache is None:
            pa = pyarrow()
            if not self._meta_columns:
                self._meta_cache = {}
            else:
                try:
                    table = self._file.read(columns=self._meta_columns)
                except (OSError, pa.ArrowException) as exc:
                    raise StoreError(f"{self.path} is unreadable as Parquet ({exc}); the file is corrupt") from None
                self._meta_cache = table_to_dict(table)
        return self._meta_cache

    @property
    def columns(self) -> list[str]:
        """The metadata columns (every column but the two vector columns)."""
        return list(self._meta_columns)

    def __repr__(self) -> str:
        return f"ParquetPairSource({str(self.path)!r}, n={self.n}, dim={self.dim}, vectors={self.vector_columns})"


def sniff(path: Path) -> str:
    """"npz", "parquet", "npy" or "unknown", from a file's first bytes."""
    with open(path, "rb") as f:
        head = f.read(6)
    if head[:4] == b"PK\x03\x04":
        return "npz"
    if head[:4] == b"PAR1":
        return "parquet"
    if head == b"\x93NUMPY":
        return "npy"
    return "unknown"


def open_pair_source(obj: Any, texts: Any = None, *, metadata: Any = None,
                     vector_columns: Sequence[str] = DEFAULT_VECTOR_COLUMNS,
                     open_directory: Callable[[Path], Any] | None = None):
    """The paired source of an input (see the module docstring for the interface).

    :func:`fastsas.store.open_source` is this function with embedding store directories
    added (it passes ``open_directory``); use that one unless you mean to refuse stores.

    Parameters
    ----------
    obj, texts : path, array_like, dict, tuple or source
        Any input :func:`fastsas.store.open_source` lists: a .npz or .parquet path, two
        .npy paths, two arrays, a dict with "images" and "texts", a source; a directory
        goes to `open_directory`.
    metadata : dict, pyarrow.Table, DataFrame, path or None
        Per-row metadata for inputs that carry none (arrays, .npy, .npz).
    vector_columns : tuple of str, default ("image_embedding", "text_embedding")
        The embedding columns of a Parquet file.
    open_directory : callable or None
        Opens a directory as a source; None refuses directories.

    Returns
    -------
    source
        A paired source.

    Raises
    ------
    FileNotFoundError, StoreError, TypeError, ValueError
        As :func:`fastsas.store.open_source`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsas.io import open_pair_source
    >>> open_pair_source({"images": np.zeros((4, 2)), "texts": np.ones((4, 2))})
    ArrayPairSource(n=4, dim=2, columns=[])
    """
    if texts is None:
        if is_source(obj):
            if metadata is not None:
                raise TypeError("metadata= is for arrays, .npy and .npz inputs; this source has its own")
            return obj
        if isinstance(obj, Mapping) and "images" in obj and "texts" in obj:
            return ArrayPairSource(obj["images"], obj["texts"],
                                   obj.get("metadata") if metadata is None else metadata)
        if isinstance(obj, (tuple, list)) and len(obj) == 2:  # (images, texts) paths or arrays
            return open_pair_source(obj[0], obj[1], metadata=metadata, vector_columns=vector_columns,
                                    open_directory=open_directory)
        if not is_pathlike(obj):
            raise TypeError(f"give an archive path, two .npy paths, a dict with images/texts, or images and texts "
                            f"arrays; got {type(obj).__name__} alone")
        path = Path(obj)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or directory")
        if path.is_dir():
            if open_directory is None:
                raise StoreError(f"{path} is a directory; embedding stores are opened by fastsas.store.open_source")
            if metadata is not None:
                raise TypeError(f"{path} is an embedding store with its own metadata; metadata= is for arrays, "
                                ".npy and .npz inputs")
            return open_directory(path)
        suffix = path.suffix.lower()
        kind = {".npz": "npz", ".parquet": "parquet", ".pq": "parquet", ".npy": "npy"}.get(suffix) or sniff(path)
        if kind == "npz":
            return NpzPairSource(path, metadata=metadata)
        if kind == "parquet":
            if metadata is not None:
                raise TypeError(f"{path} carries its own metadata columns; metadata= is for arrays, .npy and .npz")
            return ParquetPairSource(path, vector_columns=vector_columns)
        if kind == "npy":
            raise ValueError(f"{path} is one .npy file, which holds one side of the pairs; give the images .npy "
                             "and the texts .npy")
        raise StoreError(f"{path}: not a kind of archive fastsas reads (an embedding store directory, .npz, "
                         ".parquet, or two .npy files)")
    if is_pathlike(obj) and is_pathlike(texts):
        for p in (obj, texts):
            if Path(p).suffix.lower() != ".npy" and Path(p).exists() and sniff(Path(p)) != "npy":
                raise StoreError(f"{p}: two paths must be .npy files (images, texts); other archives are one path")
        return NpyPair(obj, texts, metadata=metadata)
    if is_pathlike(obj) or is_pathlike(texts):
        raise TypeError("give two .npy paths or two arrays, not one of each")
    return ArrayPairSource(obj, texts, metadata)
