"""The embedding store for large archives, and one reader interface for every input.

An :class:`EmbeddingStore` is a directory::

    store/
      zarr.json            Zarr v3 root group (attributes name the fastsas format)
      images/zarr.json     Zarr v3 array, float32 (n, dim), chunks of chunk_rows rows,
      images/c/<i>/0       one uncompressed little-endian file per chunk ("bytes" codec)
      texts/...            the same for the text embeddings
      metadata/part-<i>.parquet   per-row metadata of chunk i while the store is written
      metadata.parquet     the same rows compacted into one table when the writer closes
      manifest.json        format version, n, dim, dtype, chunk_rows, chunks_done, ...

Any Zarr v3 reader opens ``images`` and ``texts`` (``zarr.open_array(store / "images")``),
and any Parquet reader the metadata. Chunks are stored uncompressed: float embeddings
barely compress, raw chunks stream at disk speed, and they can be memory-mapped.

Writing is atomic per chunk and resumable. Every file is written under a temporary name,
fsynced and renamed into place; the manifest, rewritten the same way after each finished
chunk, is the commit point: a chunk counts once the manifest says so. After a crash,
``EmbeddingStore.open(path, mode="a")`` keeps every finished chunk, discards whatever was
half written, reports ``n_done`` and continues from there.

Every input is read through one interface, the paired source that :func:`fastsas.audit`
takes (``n``, ``dim``, ``iter_chunks(chunk_rows)``, ``arrays()``) plus ``metadata()``,
``columns`` and ``column(name)``: see :func:`open_source`.

>>> import tempfile, numpy as np, fastsas as fs
>>> from fastsas.store import EmbeddingStore, open_source
>>> demo = fs.synthetic.demo_archive(2000, 32)
>>> path = tempfile.mkdtemp() + "/archive"
>>> with EmbeddingStore.create(path, 32, chunk_rows=512) as store:
...     for s in range(0, 2000, 700):
...         store.append(demo["images"][s:s + 700], demo["texts"][s:s + 700],
...                      {k: v[s:s + 700] for k, v in demo["metadata"].items()})
>>> source = open_source(path)
>>> source.n, source.dim, source.columns[:2]
(2000, 32, ['study_id', 'modality'])
>>> bool(np.array_equal(source.arrays()[0], demo["images"]))
True
"""
from __future__ import annotations

import base64
import datetime as _dt
import json
import math
import mmap
import os
import platform
import shutil
import struct
import sys
import tempfile
import weakref
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from fastsas.io import NpyPairSource, _iter_rows, read_npy_header

__all__ = [
    "ArrayPairSource", "ColumnNotFoundError", "EmbeddingStore", "FORMAT_VERSION", "NpyPair", "NpzPairSource",
    "ParquetPairSource", "StoreArray", "StoreError", "open_source",
]

FORMAT = "fastsas-embedding-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
METADATA_FILE = "metadata.parquet"
METADATA_PARTS = "metadata"
LOCK_FILE = ".lock"
ARRAY_NAMES = ("images", "texts")
DEFAULT_VECTOR_COLUMNS = ("image_embedding", "text_embedding")
_DTYPE = np.dtype("<f4")
_PARTIAL = ".partial"  # suffix of a file being written; never read, removed on resume
_CODECS = [{"name": "bytes", "configuration": {"endian": "little"}}]


class StoreError(ValueError):
    """A store or input file is corrupt, truncated, of another format version, or does not
    hold what was asked for. The message names the file."""


class ColumnNotFoundError(StoreError, KeyError):
    """A column (metadata or vector column) that the input does not have; the message
    names it and lists the available ones (``.column`` and ``.available`` hold them)."""

    def __init__(self, message: str, column: str, available: Sequence[str]):
        super().__init__(message)
        self.column = column
        self.available = list(available)

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


# -- small helpers ---------------------------------------------------------------------------
def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet  # noqa: F401 - registers pa.parquet
    except ImportError:  # pragma: no cover - a dependency
        raise ImportError("the embedding store's metadata and Parquet inputs need pyarrow: "
                          "pip install 'pyarrow>=14'") from None
    return pa


def _is_pathlike(obj: Any) -> bool:
    return isinstance(obj, (str, os.PathLike))


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: Any) -> None:
    """Write `data` (bytes-like, or a callable writing the file at the path it is given)
    to `path` atomically: temporary name, fsync, rename, fsync of the directory."""
    tmp = path.with_name(path.name + _PARTIAL)
    if callable(data):
        data(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    else:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _write_json(path: Path, obj: dict) -> None:
    _write_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


def _read_json(path: Path, what: str) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise StoreError(f"{path} is missing: {what}") from None
    except OSError as exc:
        raise StoreError(f"{path} is unreadable ({exc}): {what}") from None
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise StoreError(f"{path} is unreadable, not valid JSON ({exc}); the store is corrupt") from None
    if not isinstance(obj, dict):
        raise StoreError(f"{path} is unreadable: expected a JSON object; the store is corrupt")
    return obj


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _zarr_array_meta(n: int, dim: int, chunk_rows: int) -> dict:
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [n, dim],
        "data_type": "float32",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [chunk_rows, dim]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0.0,
        "codecs": _CODECS,
        "attributes": {},
        "dimension_names": ["row", "dim"],
    }


def _as_vectors(x: Any, name: str, dim: int) -> np.ndarray:
    """A C-contiguous float32 (rows, dim) copy-free view where possible."""
    arr = np.asarray(x)
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must hold float16, float32 or float64 values, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{name} must have shape (rows, {dim}), got {arr.shape}")
    return np.ascontiguousarray(arr, dtype=_DTYPE)


# -- metadata as Arrow tables and NumPy arrays -------------------------------------------------
def _column_to_numpy(col: Any) -> np.ndarray:
    """One Arrow column as a NumPy array: strings without nulls become a fixed-width str
    array (as fastsas.synthetic produces), everything else what Arrow gives."""
    pa = _pa()
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    arr = col.to_numpy() if isinstance(col, pa.ChunkedArray) else col.to_numpy(zero_copy_only=False)
    if (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)) and col.null_count == 0:
        arr = arr.astype(str) if len(arr) else np.array([], dtype=str)
    return arr


def _table_to_dict(table: Any) -> dict[str, np.ndarray]:
    return {name: _column_to_numpy(table.column(name)) for name in table.column_names}


def _as_table(metadata: Any, rows: int, what: str):
    """A pyarrow Table of `rows` rows from a dict of 1-D arrays, a pyarrow Table/RecordBatch
    or a pandas DataFrame."""
    pa = _pa()
    if isinstance(metadata, pa.Table):
        table = metadata
    elif isinstance(metadata, pa.RecordBatch):
        table = pa.Table.from_batches([metadata])
    elif type(metadata).__name__ == "DataFrame" and hasattr(metadata, "iloc"):
        table = pa.Table.from_pandas(metadata, preserve_index=False)
    elif isinstance(metadata, Mapping):
        columns = {}
        for key, value in metadata.items():
            if not isinstance(key, str):
                raise TypeError(f"{what}: column names must be strings, got {key!r}")
            arr = value if isinstance(value, (pa.Array, pa.ChunkedArray)) else np.asarray(value)
            if getattr(arr, "ndim", 1) != 1:
                raise ValueError(f"{what}: column {key!r} must be 1-D (one value per row), got shape {arr.shape}")
            if len(arr) != rows:
                raise ValueError(f"{what}: column {key!r} has {len(arr)} values but there are {rows} rows")
            try:
                columns[key] = arr if isinstance(arr, (pa.Array, pa.ChunkedArray)) else pa.array(arr)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                raise TypeError(f"{what}: column {key!r} cannot be stored in Parquet ({exc})") from None
        table = pa.table(columns) if columns else pa.table({})
    else:
        raise TypeError(f"{what} must be a dict of 1-D arrays, a pyarrow Table or a pandas DataFrame, "
                        f"got {type(metadata).__name__}")
    if table.num_columns and table.num_rows != rows:
        raise ValueError(f"{what} has {table.num_rows} rows but there are {rows} embedding rows")
    return table


def _normalise_metadata(metadata: Any, n: int, what: str) -> dict[str, np.ndarray]:
    if metadata is None:
        return {}
    if _is_pathlike(metadata):
        pa = _pa()
        table = _read_parquet(Path(metadata), pa)
        if table.num_rows != n:
            raise StoreError(f"{metadata} has {table.num_rows} rows but the embeddings have {n}")
        return _table_to_dict(table)
    if isinstance(metadata, Mapping):
        out = {}
        for key, value in metadata.items():
            arr = np.asarray(value)
            if arr.ndim != 1 or len(arr) != n:
                raise ValueError(f"{what}: column {key!r} must be 1-D with one value per pair ({n}), "
                                 f"got shape {arr.shape}")
            out[str(key)] = arr
        return out
    return _table_to_dict(_as_table(metadata, n, what))


def _read_parquet(path: Path, pa, columns: Sequence[str] | None = None):
    try:
        return pa.parquet.read_table(path, columns=list(columns) if columns is not None else None)
    except FileNotFoundError:
        raise StoreError(f"{path} is missing; the store is truncated") from None
    except (OSError, pa.ArrowException) as exc:
        raise StoreError(f"{path} is unreadable as Parquet ({exc}); the file is corrupt") from None


def _missing_column(name: str, available: Sequence[str], where: str, hint: str = "") -> ColumnNotFoundError:
    listed = ", ".join(available) if available else "none"
    return ColumnNotFoundError(f"{where} has no column {name!r}; available columns: {listed}{hint}",
                               name, available)


class _MetadataMixin:
    """metadata() / columns / column(name) over an in-memory dict of NumPy arrays."""

    _meta: dict[str, np.ndarray]
    _where: str

    def metadata(self) -> dict[str, np.ndarray]:
        """Per-row metadata columns as a dict of 1-D NumPy arrays (empty when none)."""
        return dict(self._meta)

    @property
    def columns(self) -> list[str]:
        return list(self._meta)

    def column(self, name: str) -> np.ndarray:
        if name not in self._meta:
            raise _missing_column(name, list(self._meta), self._where)
        return self._meta[name]

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- readers of row ranges (the interface io._iter_rows reads through) --------------------------
def _pread_into(fd: int, view: memoryview, pos: int, path: Path, what: str) -> None:
    done = 0
    while done < len(view):  # os.preadv may return short counts
        got = os.preadv(fd, [view[done:]], pos + done)
        if got == 0:
            raise StoreError(f"{path} ended early while reading {what}: the file is truncated")
        done += got


class _OffsetRows:
    """Rows of a C-ordered (rows, dim) array stored raw at `offset` in a file."""

    def __init__(self, path: Path, offset: int, rows: int, dim: int, dtype: np.dtype):
        self.path, self.offset, self.rows, self.dim, self.dtype = path, offset, rows, dim, dtype
        self.row_bytes = dim * dtype.itemsize
        self.fd = os.open(path, os.O_RDONLY)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)

    def read(self, start: int, out: np.ndarray) -> None:
        _pread_into(self.fd, memoryview(out).cast("B"), self.offset + start * self.row_bytes, self.path,
                    f"row {start}")

    def close(self) -> None:
        os.close(self.fd)


class _ChunkRows:
    """Rows of one store array, spread over its chunk files."""

    def __init__(self, files: list[Path], rows: int, dim: int, chunk_rows: int):
        self.files, self.rows, self.dim, self.chunk_rows = files, rows, dim, chunk_rows
        self.dtype = _DTYPE
        self.row_bytes = dim * _DTYPE.itemsize
        self.fds: dict[int, int] = {}

    def _fd(self, i: int) -> int:
        fd = self.fds.get(i)
        if fd is None:
            try:
                fd = os.open(self.files[i], os.O_RDONLY)
            except FileNotFoundError:
                raise StoreError(f"{self.files[i]} is missing: chunk {i} is gone; the store is truncated") from None
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            self.fds[i] = fd
        return fd

    def read(self, start: int, out: np.ndarray) -> None:
        view = memoryview(out).cast("B")
        row, stop, done = start, start + len(out), 0
        while row < stop:
            i, local = divmod(row, self.chunk_rows)
            take = min(self.chunk_rows - local, stop - row)
            nbytes = take * self.row_bytes
            _pread_into(self._fd(i), view[done:done + nbytes], local * self.row_bytes, self.files[i],
                        f"rows {row}..{row + take - 1}")
            for old in [k for k in self.fds if k < i]:  # chunks are read in order: close the ones left behind
                os.close(self.fds.pop(old))
            row += take
            done += nbytes

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


# -- random access to a store array -----------------------------------------------------------------
_LINUX_MAP = {"x86_64", "amd64", "aarch64", "arm64", "ppc64le", "s390x", "riscv64"}


def _map_contiguous(files: list[Path], file_bytes: int, n: int, dim: int) -> np.ndarray | None:
    """Map every chunk file, in order, into one contiguous read-only address range and
    return the first n rows as a NumPy array (zero copy, paged in on demand like np.memmap).
    Linux on 64-bit only, and only when a chunk is a whole number of pages; None otherwise."""
    if not sys.platform.startswith("linux") or platform.machine().lower() not in _LINUX_MAP:
        return None
    if not files or file_bytes % mmap.PAGESIZE:
        return None
    import ctypes

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
    arr = np.frombuffer(holder, dtype=_DTYPE, count=n * dim).reshape(n, dim)
    arr.flags.writeable = False
    return arr


class StoreArray:
    """Random access to one (n, dim) float32 store array without loading it: rows are
    gathered from per-chunk memory maps. ``x[rows]`` (int, slice, boolean mask, integer
    array in any order, or a (rows, cols) tuple) returns a NumPy array; ``np.asarray(x)``
    reads the whole array into memory. EmbeddingStore.arrays() returns these where it
    cannot map the store into one contiguous array."""

    def __init__(self, files: list[Path], n: int, dim: int, chunk_rows: int, name: str = "array"):
        self._files, self._cr, self.name = files, chunk_rows, name
        self.shape = (n, dim)
        self.dtype = _DTYPE
        self.ndim = 2
        self._maps: dict[int, np.memmap] = {}

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    def _chunk(self, i: int) -> np.memmap:
        m = self._maps.get(i)
        if m is None:
            try:
                m = np.memmap(self._files[i], dtype=_DTYPE, mode="r", shape=(self._cr, self.shape[1]))
            except FileNotFoundError:
                raise StoreError(f"{self._files[i]} is missing: chunk {i} is gone; the store is truncated") from None
            except ValueError as exc:
                raise StoreError(f"{self._files[i]} is shorter than a chunk ({exc}); the store is truncated") \
                    from None
            self._maps[i] = m
        return m

    def _gather(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), self.shape[1]), dtype=_DTYPE)
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


# -- the store --------------------------------------------------------------------------------------
def _schema_from(columns: Any):
    """A pyarrow Schema from None, a Schema, or a mapping name -> type (pyarrow type, NumPy
    dtype, or a type name such as "string", "int64", "timestamp[ns]")."""
    if columns is None:
        return None
    pa = _pa()
    if isinstance(columns, pa.Schema):
        return columns
    if not isinstance(columns, Mapping):
        raise TypeError("columns must be a pyarrow.Schema or a dict {name: type}, e.g. "
                        "{'study_id': 'string', 'modality': 'string', 'year': 'int64'}")
    fields = []
    for name, kind in columns.items():
        if isinstance(kind, pa.DataType):
            typ = kind
        else:
            typ = None
            if isinstance(kind, str):
                try:
                    typ = pa.type_for_alias(kind)
                except (ValueError, KeyError):
                    typ = None
            if typ is None:
                try:
                    dt = np.dtype(kind)
                    typ = pa.string() if dt.kind == "U" else pa.from_numpy_dtype(dt)
                except (TypeError, pa.ArrowNotImplementedError):
                    raise TypeError(f"column {name!r}: cannot store type {kind!r}; give a pyarrow type "
                                    "or a name such as 'string', 'int64', 'float64', 'timestamp[ns]'") from None
        fields.append(pa.field(str(name), typ))
    return pa.schema(fields)


def _encode_schema(schema) -> dict | None:
    if schema is None:
        return None
    return {
        "columns": [{"name": f.name, "type": str(f.type)} for f in schema],
        "arrow_schema": base64.b64encode(schema.serialize().to_pybytes()).decode("ascii"),
    }


class EmbeddingStore(_MetadataMixin):
    """A directory of paired image and text embeddings (Zarr v3, float32, chunked by rows)
    with per-row metadata (Parquet) and a JSON manifest; see the module docstring.

    Write::

        with EmbeddingStore.create(path, dim=768, chunk_rows=65536, model="clip-vit-b16") as store:
            for images, texts, meta in batches:          # any batch sizes
                store.append(images, texts, meta)        # meta: dict of 1-D arrays / Arrow table

    Resume after a crash::

        store = EmbeddingStore.open(path, mode="a")
        start = store.n_done                             # rows already on disk
        ...                                              # append rows start, start+1, ...
        store.close()

    Read (the paired-source interface of fastsas.audit)::

        store = EmbeddingStore.open(path)
        fs.audit(store, groups=store.column("modality"))

    Rows are buffered until a chunk of ``chunk_rows`` rows is full, then written; closing
    writes the last, shorter chunk and compacts the metadata into one ``metadata.parquet``.
    Leaving the ``with`` block through an exception does not close the store: it stays
    resumable, with every finished chunk kept. Embeddings are stored as float32 (float16
    and float64 input are converted).
    """

    def __init__(self, path: Path, manifest: dict, mode: str):  # use create() / open()
        self.path = Path(path)
        self.mode = mode
        self._m = manifest
        self.dim = int(manifest["dim"])
        self.chunk_rows = int(manifest["chunk_rows"])
        self._where = str(self.path)
        self._schema = None
        self._lock_fd: int | None = None
        self._lock_finalizer = None
        self._closed = False
        self._buf = None
        self._buf_start = 0
        self._buf_len = 0
        self._buf_meta: list = []
        meta = manifest.get("metadata") or {}
        if meta.get("arrow_schema"):
            pa = _pa()
            try:
                self._schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(meta["arrow_schema"])))
            except (ValueError, pa.ArrowException) as exc:
                raise StoreError(f"{self.path / MANIFEST}: the metadata schema is unreadable ({exc})") from None

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, dim: int, *, chunk_rows: int = 65536, columns: Any = None,
               model: str | None = None, notes: str | None = None, overwrite: bool = False) -> "EmbeddingStore":
        """A new, empty store open for writing.

        dim: embedding dimension. chunk_rows: rows per chunk (the unit of atomic writes and
        of resumption; a multiple of 1024 lets arrays() map the store without copying).
        columns: the metadata schema (pyarrow.Schema or {name: type}); by default it is
        taken from the first append's metadata. model, notes: free text kept in the
        manifest. overwrite: replace an existing store at `path` (never a directory that is
        not a store).
        """
        dim = _positive_int(dim, "dim")
        chunk_rows = _positive_int(chunk_rows, "chunk_rows")
        schema = _schema_from(columns)
        path = Path(path)
        if path.exists():
            if not path.is_dir():
                raise FileExistsError(f"{path} exists and is not a directory")
            is_store = (path / MANIFEST).exists() or (path / "zarr.json").exists()
            if any(path.iterdir()):
                if not is_store:
                    raise FileExistsError(f"{path} already exists, is not empty and is not an embedding store; "
                                          "choose a new directory (overwrite=True only replaces stores)")
                if not overwrite:
                    raise FileExistsError(f"{path} already holds an embedding store; open it with "
                                          "EmbeddingStore.open(path, mode='a') to continue writing, or pass "
                                          "overwrite=True to replace it")
                shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        _write_json(path / "zarr.json", {"zarr_format": 3, "node_type": "group",
                                         "attributes": {"fastsas": {"format": FORMAT,
                                                                    "format_version": FORMAT_VERSION,
                                                                    "manifest": MANIFEST}}})
        for name in ARRAY_NAMES:
            (path / name / "c").mkdir(parents=True, exist_ok=True)
            _write_json(path / name / "zarr.json", _zarr_array_meta(0, dim, chunk_rows))
        (path / METADATA_PARTS).mkdir(exist_ok=True)
        from fastsas import __version__

        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "n": 0,
            "dim": dim,
            "dtype": "float32",
            "chunk_rows": chunk_rows,
            "chunks_done": 0,
            "complete": False,
            "arrays": {"images": "images", "texts": "texts"},
            "metadata": {"layout": "parts", **(_encode_schema(schema) or {"columns": [], "arrow_schema": None})},
            "model": model,
            "notes": notes,
            "fastsas_version": __version__,
            "created": _now(),
            "updated": _now(),
        }
        store = cls(path, manifest, "w")
        store._acquire_lock()
        _write_json(path / MANIFEST, manifest)  # last: a directory without a manifest is not a store
        return store

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> "EmbeddingStore":
        """Open a store: mode "r" to read, "a" to continue writing (after an interruption
        or to add rows to a closed store). Every finished chunk is checked to be present
        with the right size; errors name the file."""
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' (read) or 'a' (append), got {mode!r}")
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such embedding store")
        if not path.is_dir():
            raise StoreError(f"{path} is not a directory, so not an embedding store "
                             "(open_source reads .npy, .npz and .parquet files)")
        manifest = _read_manifest(path)
        store = cls(path, manifest, mode)
        for name in ARRAY_NAMES:
            store._check_zarr_meta(name, repairing=mode == "a")
        store._check_chunks()
        store._check_metadata_files()
        if mode == "a":
            store._acquire_lock()
            store._resume()
        return store

    @classmethod
    def build(cls, path: str | os.PathLike, images: Any, texts: Any = None, *, metadata: Any = None,
              chunk_rows: int = 65536, model: str | None = None, notes: str | None = None,
              overwrite: bool = False, vector_columns: Sequence[str] = DEFAULT_VECTOR_COLUMNS) -> "EmbeddingStore":
        """Write any input open_source reads (arrays, .npy pair, .npz, Parquet, another
        store) into a new store at `path`, chunk by chunk; returns it open for reading."""
        source = open_source(images, texts, metadata=metadata, vector_columns=vector_columns)
        meta = source.metadata()
        with cls.create(path, source.dim, chunk_rows=chunk_rows, model=model, notes=notes,
                        overwrite=overwrite) as store:
            start = 0
            for cx, cy in source.iter_chunks(chunk_rows):
                stop = start + len(cx)
                store.append(cx, cy, {k: v[start:stop] for k, v in meta.items()} if meta else None)
                start = stop
        return cls.open(path)

    # -- state ---------------------------------------------------------------------------------------
    @property
    def n(self) -> int:
        """Rows in finished chunks: what readers see."""
        return int(self._m["n"])

    @property
    def n_done(self) -> int:
        """Rows safely on disk (finished chunks); a resumed writer continues from this row."""
        return int(self._m["n"])

    @property
    def n_pending(self) -> int:
        """Rows appended but still buffered (lost if the process dies before their chunk is written)."""
        return self._buf_start + self._buf_len - self.n_done if self._buf is not None else 0

    @property
    def chunks_done(self) -> int:
        return int(self._m["chunks_done"])

    @property
    def complete(self) -> bool:
        """True once a writer closed the store (False while written or after an interruption)."""
        return bool(self._m["complete"])

    @property
    def model(self) -> str | None:
        return self._m.get("model")

    @property
    def notes(self) -> str | None:
        return self._m.get("notes")

    @property
    def manifest(self) -> dict:
        return json.loads(json.dumps(self._m))

    @property
    def columns(self) -> list[str]:
        return [] if self._schema is None else list(self._schema.names)

    def __repr__(self) -> str:
        state = "complete" if self.complete else f"incomplete, {self.chunks_done} chunks done"
        return f"EmbeddingStore({str(self.path)!r}, n={self.n}, dim={self.dim}, mode={self.mode!r}, {state})"

    # -- file layout ------------------------------------------------------------------------------------
    def _chunk_file(self, name: str, i: int) -> Path:
        return self.path / name / "c" / str(i) / "0"

    def _part_file(self, i: int) -> Path:
        return self.path / METADATA_PARTS / f"part-{i:06d}.parquet"

    def _rows_in_chunk(self, i: int) -> int:
        return min(self.chunk_rows, self.n - i * self.chunk_rows)

    # -- checks ---------------------------------------------------------------------------------------
    def _check_zarr_meta(self, name: str, repairing: bool) -> None:
        file = self.path / name / "zarr.json"
        meta = _read_json(file, f"the {name} array is gone; the store is truncated")
        expected = _zarr_array_meta(self.n, self.dim, self.chunk_rows)
        shape = meta.get("shape")
        problems = []
        if meta.get("zarr_format") != 3 or meta.get("node_type") != "array":
            problems.append("it is not a Zarr v3 array")
        if meta.get("data_type") != "float32":
            problems.append(f"data_type is {meta.get('data_type')!r}, not float32")
        if meta.get("chunk_grid") != expected["chunk_grid"]:
            problems.append(f"its chunk grid is not {self.chunk_rows} x {self.dim} rows")
        if meta.get("codecs") != _CODECS or meta.get("chunk_key_encoding") != expected["chunk_key_encoding"]:
            problems.append("its chunks are not stored as this format expects (uncompressed little-endian "
                            "'bytes' codec, '/'-separated chunk keys)")
        if not (isinstance(shape, list) and len(shape) == 2 and shape[1] == self.dim
                and isinstance(shape[0], int) and (repairing or shape[0] >= self.n)):
            problems.append(f"its shape {shape} does not match the manifest's n={self.n}, dim={self.dim}")
        if problems:
            raise StoreError(f"{file} does not describe this store's {name}: {'; '.join(problems)}")

    def _check_chunks(self) -> None:
        size = self.chunk_rows * self.dim * _DTYPE.itemsize
        for name in ARRAY_NAMES:
            for i in range(self.chunks_done):
                file = self._chunk_file(name, i)
                first = i * self.chunk_rows
                try:
                    actual = file.stat().st_size
                except FileNotFoundError:
                    raise StoreError(f"{file} is missing: chunk {i} of {name} (rows {first}.."
                                     f"{first + self._rows_in_chunk(i) - 1}); the store is truncated or was "
                                     "copied incompletely") from None
                if actual != size:
                    raise StoreError(f"{file} has {actual} bytes but a chunk of {self.chunk_rows} x {self.dim} "
                                     f"float32 takes {size}: the chunk has the wrong shape or was cut short")

    def _check_metadata_files(self) -> None:
        if self._schema is None or not self.chunks_done:
            return
        if self._m["metadata"]["layout"] == "file":
            if not (self.path / METADATA_FILE).exists():
                raise StoreError(f"{self.path / METADATA_FILE} is missing; the store is truncated")
            return
        for i in range(self.chunks_done):
            if not self._part_file(i).exists():
                raise StoreError(f"{self._part_file(i)} is missing: the metadata of chunk {i}; "
                                 "the store is truncated")

    # -- writing ------------------------------------------------------------------------------------
    def _acquire_lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return
        lock = self.path / LOCK_FILE
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StoreError(f"{self.path} is open for writing by another writer (lock held on {lock}); "
                             "close that writer first") from None
        self._lock_fd = fd
        self._lock_finalizer = weakref.finalize(self, os.close, fd)  # a dropped writer releases its lock

    def _release_lock(self) -> None:
        if self._lock_finalizer is not None:
            self._lock_finalizer()
            self._lock_finalizer = None
            self._lock_fd = None

    def _check_writable(self) -> None:
        if self.mode == "r":
            raise ValueError(f"{self.path} is open for reading; use EmbeddingStore.open(path, mode='a') to append")
        if self._closed:
            raise ValueError(f"{self.path}: this writer is closed; reopen with mode='a' to append more rows")

    def _ensure_buffer(self) -> None:
        if self._buf is None:
            self._buf = np.zeros((2, self.chunk_rows, self.dim), dtype=_DTYPE)
            self._buf_start = self.n_done
            self._buf_len = 0

    def _resume(self) -> None:
        """Discard what an interrupted writer left half done, then reload a short last chunk
        into the buffer so that new rows extend it."""
        # temporary files, chunks and parts past the last finished chunk
        for name in ARRAY_NAMES:
            base = self.path / name / "c"
            if base.is_dir():
                for entry in base.iterdir():
                    if not entry.name.isdigit() or int(entry.name) >= self.chunks_done:
                        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
                    else:
                        for f in entry.iterdir():
                            if f.name != "0":
                                f.unlink()
            else:
                base.mkdir(parents=True)
        for file in self.path.rglob("*" + _PARTIAL):
            file.unlink()
        parts = self.path / METADATA_PARTS
        parts.mkdir(exist_ok=True)
        layout = self._m["metadata"]["layout"]
        for f in parts.iterdir():
            keep = layout == "parts" and f.name.startswith("part-") and f.name.endswith(".parquet") \
                and f.name[5:-8].isdigit() and int(f.name[5:-8]) < self.chunks_done
            if not keep:
                f.unlink()
        if layout == "parts" and (self.path / METADATA_FILE).exists():
            (self.path / METADATA_FILE).unlink()  # a compaction that did not commit
        if layout == "file" and self._schema is not None and self.chunks_done:
            table = self._metadata_table_checked()
            for i in range(self.chunks_done):
                rows = table.slice(i * self.chunk_rows, self._rows_in_chunk(i))
                _write_atomic(self._part_file(i), lambda tmp, t=rows: _pa().parquet.write_table(t, tmp))
        self._m["metadata"]["layout"] = "parts"
        self._check_metadata_files()
        for name in ARRAY_NAMES:
            _write_json(self.path / name / "zarr.json", _zarr_array_meta(self.n, self.dim, self.chunk_rows))
        self._m["complete"] = False
        self._commit()
        if (self.path / METADATA_FILE).exists():
            (self.path / METADATA_FILE).unlink()
        self._ensure_buffer()
        last = self.chunks_done - 1
        if last >= 0 and self._rows_in_chunk(last) < self.chunk_rows:
            rows = self._rows_in_chunk(last)
            self._buf_start = last * self.chunk_rows
            for k, name in enumerate(ARRAY_NAMES):
                reader = _ChunkRows([self._chunk_file(name, last)], rows, self.dim, self.chunk_rows)
                try:
                    reader.read(0, self._buf[k, :rows])
                finally:
                    reader.close()
            self._buf_len = rows
            if self._schema is not None:
                self._buf_meta = [self._read_part(last)]

    def _commit(self) -> None:
        self._m["updated"] = _now()
        _write_json(self.path / MANIFEST, self._m)

    def append(self, images: Any, texts: Any, metadata: Any = None) -> None:
        """Append paired rows (any number): (rows, dim) images and texts, and their metadata
        (dict of 1-D arrays, pyarrow Table or pandas DataFrame with the store's columns; the
        first append fixes the columns unless create() was given them). Full chunks are
        written as soon as they fill; nothing is changed when an argument is refused."""
        self._check_writable()
        x = _as_vectors(images, "images", self.dim)
        y = _as_vectors(texts, "texts", self.dim)
        if len(x) != len(y):
            raise ValueError(f"images and texts must be paired row by row: got {len(x)} and {len(y)} rows")
        rows = len(x)
        table = self._metadata_for(metadata, rows)
        self._ensure_buffer()
        done = 0
        while done < rows:
            take = min(self.chunk_rows - self._buf_len, rows - done)
            self._buf[0, self._buf_len:self._buf_len + take] = x[done:done + take]
            self._buf[1, self._buf_len:self._buf_len + take] = y[done:done + take]
            if table is not None:
                self._buf_meta.append(table.slice(done, take))
            self._buf_len += take
            done += take
            if self._buf_len == self.chunk_rows:
                self._write_chunk()

    def _metadata_for(self, metadata: Any, rows: int):
        if metadata is None:
            if self._schema is not None and len(self._schema):
                raise ValueError(f"{self.path} has metadata columns {list(self._schema.names)}: give metadata "
                                 "with those columns for every appended row")
            return None
        pa = _pa()
        table = _as_table(metadata, rows, "metadata")
        if self._schema is None:
            if not table.num_columns:
                return None
            if self.n_done or (self._buf is not None and self._buf_len):
                raise ValueError(f"{self.path} was started without metadata; metadata columns cannot be added "
                                 "part way (create the store with columns=... or give metadata from the start)")
            self._set_schema(table.schema.remove_metadata())
        names = list(self._schema.names)
        if set(table.column_names) != set(names):
            missing = [c for c in names if c not in table.column_names]
            extra = [c for c in table.column_names if c not in names]
            raise ValueError(f"metadata columns do not match the store's {names}: "
                             + "; ".join(s for s in (f"missing {missing}" if missing else "",
                                                     f"unexpected {extra}" if extra else "") if s))
        table = table.select(names)
        try:
            return table.cast(self._schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise TypeError(f"metadata does not fit the store's column types {self._schema} ({exc})") from None

    def _set_schema(self, schema) -> None:
        self._schema = schema
        self._m["metadata"].update(_encode_schema(schema))
        self._commit()

    def _write_chunk(self) -> None:
        """Write the buffer as chunk i (full, or the short last chunk at close): arrays, then
        metadata, then the Zarr shapes, then the manifest (the commit point)."""
        i = self._buf_start // self.chunk_rows
        rows = self._buf_len
        self._buf[:, rows:] = 0.0  # a short last chunk is padded with the fill value, as Zarr does
        for k, name in enumerate(ARRAY_NAMES):
            file = self._chunk_file(name, i)
            file.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(file, memoryview(self._buf[k]).cast("B"))
        if self._schema is not None:
            pa = _pa()
            table = pa.concat_tables(self._buf_meta).combine_chunks() if self._buf_meta else \
                self._schema.empty_table()
            _write_atomic(self._part_file(i), lambda tmp: pa.parquet.write_table(table, tmp))
        n_new = self._buf_start + rows
        for name in ARRAY_NAMES:
            _write_json(self.path / name / "zarr.json", _zarr_array_meta(n_new, self.dim, self.chunk_rows))
        self._m["n"] = n_new
        self._m["chunks_done"] = i + 1
        self._commit()
        if rows == self.chunk_rows:
            self._buf_start += rows
            self._buf_len = 0
            self._buf_meta = []

    def close(self) -> None:
        """Finish writing: the short last chunk, one metadata.parquet, complete=True in the
        manifest, lock released. A reader's close() does nothing."""
        if self.mode == "r" or self._closed:
            return
        if self._buf is not None and self.n_pending:
            self._write_chunk()
        self.compact_metadata()
        self._m["complete"] = True
        self._commit()
        self._closed = True
        self._buf = None
        self._buf_meta = []
        self._release_lock()

    def abandon(self) -> None:
        """Stop writing without finishing (as a crash would): finished chunks are kept,
        buffered rows are dropped, the lock is released; reopen with mode='a' to go on."""
        self._closed = True
        self._buf = None
        self._buf_meta = []
        self._release_lock()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()

    def compact_metadata(self) -> None:
        """Rewrite the per-chunk metadata parts as one metadata.parquet (atomic; close() does it)."""
        if self.mode == "r":
            raise ValueError(f"{self.path} is open for reading; compacting needs mode='a'")
        if self._schema is None or self._m["metadata"]["layout"] == "file" or not self.chunks_done:
            return
        pa = _pa()
        table = self._metadata_table_checked()
        _write_atomic(self.path / METADATA_FILE, lambda tmp: pa.parquet.write_table(table, tmp))
        self._m["metadata"]["layout"] = "file"
        self._commit()
        shutil.rmtree(self.path / METADATA_PARTS, ignore_errors=True)
        (self.path / METADATA_PARTS).mkdir(exist_ok=True)

    # -- reading -------------------------------------------------------------------------------------
    def _array_files(self, name: str) -> list[Path]:
        return [self._chunk_file(name, i) for i in range(self.chunks_done)]

    def iter_chunks(self, chunk_rows: int = 65536, *, prefetch: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Consecutive (images, texts) row chunks of `chunk_rows` rows (the last shorter),
        read one chunk ahead into reused buffers: memory stays at two chunks per array. A
        chunk is valid until the next one is asked for; copy it to keep it."""
        chunk_rows = _positive_int(chunk_rows, "chunk_rows")
        if self.n == 0:
            return iter(())
        readers = [_ChunkRows(self._array_files(name), self.n, self.dim, self.chunk_rows) for name in ARRAY_NAMES]
        return _iter_rows(readers, chunk_rows, prefetch)

    def arrays(self, *, mapped: bool = True) -> tuple[Any, Any]:
        """(images, texts) with random access and no up-front read: read-only (n, dim) float32
        NumPy arrays whose chunk files are memory-mapped into one contiguous range (Linux,
        chunk sizes that are whole pages: chunk_rows * dim a multiple of 1024), otherwise
        (or with mapped=False) StoreArray objects gathering rows from per-chunk memory maps.
        Either way ``np.asarray(x[rows])`` works for any row selection."""
        out = []
        for name in ARRAY_NAMES:
            files = self._array_files(name)
            arr = _map_contiguous(files, self.chunk_rows * self.dim * _DTYPE.itemsize, self.n, self.dim) \
                if mapped else None
            out.append(arr if arr is not None else StoreArray(files, self.n, self.dim, self.chunk_rows, name))
        return out[0], out[1]

    def zarr_arrays(self):
        """The two arrays opened with zarr-python (``zarr.Array``), for interoperability."""
        try:
            import zarr
        except ImportError:  # pragma: no cover - a dependency
            raise ImportError("zarr_arrays() needs zarr-python: pip install 'zarr>=3'") from None
        return tuple(zarr.open_array(str(self.path / name), mode="r") for name in ARRAY_NAMES)

    def _read_part(self, i: int):
        pa = _pa()
        table = _read_parquet(self._part_file(i), pa)
        rows = self._rows_in_chunk(i)
        if table.num_rows < rows:
            raise StoreError(f"{self._part_file(i)} has {table.num_rows} rows but chunk {i} has {rows}; "
                             "the store is corrupt")
        return table.slice(0, rows)

    def _metadata_table_checked(self, columns: Sequence[str] | None = None):
        pa = _pa()
        if self._schema is None:
            return pa.table({})
        if self._m["metadata"]["layout"] == "file":
            table = _read_parquet(self.path / METADATA_FILE, pa, columns)
            if table.num_rows != self.n:
                raise StoreError(f"{self.path / METADATA_FILE} has {table.num_rows} rows but the store has "
                                 f"{self.n}; the store is corrupt")
            return table
        parts = []
        for i in range(self.chunks_done):
            part = self._read_part(i)
            parts.append(part.select(list(columns)) if columns is not None else part)
        if not parts:
            schema = self._schema if columns is None else pa.schema([self._schema.field(c) for c in columns])
            return schema.empty_table()
        return pa.concat_tables(parts)

    def metadata_table(self):
        """Per-row metadata as one pyarrow Table of n rows (no columns when there is none)."""
        return self._metadata_table_checked()

    def metadata(self) -> dict[str, np.ndarray]:
        """Per-row metadata as a dict of 1-D NumPy arrays (str columns as NumPy str arrays)."""
        return _table_to_dict(self.metadata_table())

    def column(self, name: str) -> np.ndarray:
        """One metadata column as a NumPy array (reads only that column)."""
        if name not in self.columns:
            raise _missing_column(name, self.columns, str(self.path))
        return _column_to_numpy(self._metadata_table_checked([name]).column(name))


def _read_manifest(path: Path) -> dict:
    file = path / MANIFEST
    if not file.exists():
        raise StoreError(f"{file} is missing: {path} is not a fastsas embedding store (or its creation was "
                         "interrupted)")
    m = _read_json(file, "the store's manifest")
    if m.get("format") != FORMAT:
        raise StoreError(f"{file} is not a fastsas embedding store manifest (format {m.get('format')!r})")
    if m.get("format_version") != FORMAT_VERSION:
        raise StoreError(f"{file} has format version {m.get('format_version')!r}; this fastsas reads version "
                         f"{FORMAT_VERSION} (use the fastsas that wrote it, or rewrite the store)")
    for key, least in (("n", 0), ("dim", 1), ("chunk_rows", 1), ("chunks_done", 0)):
        value = m.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise StoreError(f"{file}: {key} is {value!r}, expected an integer >= {least}; the manifest is corrupt")
    if m.get("dtype") != "float32":
        raise StoreError(f"{file}: dtype {m.get('dtype')!r} is not float32; the manifest is corrupt")
    if m["chunks_done"] != math.ceil(m["n"] / m["chunk_rows"]):
        raise StoreError(f"{file}: n={m['n']} rows do not fill chunks_done={m['chunks_done']} chunks of "
                         f"{m['chunk_rows']} rows; the manifest is corrupt")
    meta = m.get("metadata")
    if not isinstance(meta, dict) or meta.get("layout") not in ("parts", "file"):
        raise StoreError(f"{file}: the metadata entry is missing or unreadable; the manifest is corrupt")
    m.setdefault("complete", False)
    return m


# -- the other inputs -----------------------------------------------------------------------------------
class ArrayPairSource(_MetadataMixin):
    """Paired (n, d) arrays in memory (or memory-mapped), with optional per-row metadata
    (dict of 1-D arrays, pyarrow Table, DataFrame, or a Parquet path)."""

    def __init__(self, images: Any, texts: Any, metadata: Any = None):
        from fastsas._validate import as_pair

        self.images, self.texts = as_pair(images, texts, min_rows=0)
        self.n, self.dim = self.images.shape
        self._where = "the metadata"
        self._meta = _normalise_metadata(metadata, self.n, "metadata")

    def iter_chunks(self, chunk_rows: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        chunk_rows = _positive_int(chunk_rows, "chunk_rows")
        for s in range(0, self.n, chunk_rows):
            yield self.images[s:s + chunk_rows], self.texts[s:s + chunk_rows]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self.images, self.texts

    def __repr__(self) -> str:
        return f"ArrayPairSource(n={self.n}, dim={self.dim}, columns={self.columns})"


class NpyPair(_MetadataMixin, NpyPairSource):
    """Two (n, d) .npy files (fastsas.io.NpyPairSource: streamed with read-ahead, memory-
    mapped for random access, never unpickled) plus optional metadata."""

    def __init__(self, images: str | os.PathLike, texts: str | os.PathLike, metadata: Any = None):
        NpyPairSource.__init__(self, images, texts)
        self._where = f"the metadata of {self.images}"
        self._meta = _normalise_metadata(metadata, self.n, "metadata")


def _npz_member_offset(raw, info: zipfile.ZipInfo, path: Path) -> int:
    """Byte offset in the .npz file where a stored (uncompressed) member's data starts."""
    raw.seek(info.header_offset)
    header = raw.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise StoreError(f"{path}: the entry {info.filename} has no valid local header; the file is corrupt")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len


class NpzPairSource(_MetadataMixin):
    """The `images` and `texts` arrays of one .npz file (np.savez / np.savez_compressed).

    np.load(mmap_mode=...) does not map .npz members, and allow_pickle stays off: the
    members' .npy headers are parsed here. A stored (np.savez, uncompressed) member is
    memory-mapped in place, at its offset inside the zip file: nothing is copied. A
    compressed member is streamed once into a temporary .npy file (in `extract_dir`, by
    default the system temp directory), which is memory-mapped and deleted when the source
    is closed or garbage collected.
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
        except (zipfile.BadZipFile, OSError) as exc:
            raise StoreError(f"{self.path} is not a readable .npz file ({exc}); it is corrupt or truncated") from None
        with zf, open(self.path, "rb") as raw:
            members = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
            for key in keys:
                if key not in members:
                    raise ColumnNotFoundError(f"{self.path} has no array {key!r}; it holds: "
                                              f"{', '.join(members) or 'nothing'} (save it with "
                                              "np.savez(path, images=..., texts=...))", key, members)
                self._parts.append(self._locate(zf, raw, zf.getinfo(key + ".npy"), key, extract_dir))
        (_, _, (ni, di), _), (_, _, (nt, dt), _) = self._parts
        if ni != nt:
            raise StoreError(f"{self.path}: {keys[0]} has {ni} rows but {keys[1]} has {nt}; they must be paired "
                             "row by row")
        if di != dt:
            raise StoreError(f"{self.path}: {keys[0]} has dim {di} but {keys[1]} has dim {dt}")
        self.n, self.dim = ni, di
        self._where = f"the metadata of {self.path}"
        self._meta = _normalise_metadata(metadata, self.n, "metadata")

    def _locate(self, zf, raw, info, key, extract_dir) -> tuple[Path, int, tuple[int, int], np.dtype]:
        where = f"{self.path} (array {key!r})"
        try:
            with zf.open(info) as f:
                shape, fortran, dtype, header_len = read_npy_header(f)
        except (ValueError, zipfile.BadZipFile, OSError, EOFError) as exc:
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
        if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
            offset = _npz_member_offset(raw, info, self.path) + header_len
            size = self.path.stat().st_size
            if size < offset - header_len + nbytes:
                raise StoreError(f"{self.path} is truncated: {size} bytes, array {key!r} needs "
                                 f"{offset - header_len + nbytes}")
            return self.path, offset, tuple(shape), dtype
        # compressed: stream it out once into a temporary .npy file
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix="fastsas-npz-", dir=extract_dir)
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._tmpdir, True)
        target = Path(self._tmpdir) / f"{key}.npy"
        try:
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 16 << 20)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise StoreError(f"{where} could not be decompressed ({exc}); the file is corrupt or truncated") \
                from None
        return target, header_len, tuple(shape), dtype

    def iter_chunks(self, chunk_rows: int = 65536, *, prefetch: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        chunk_rows = _positive_int(chunk_rows, "chunk_rows")
        if self.n == 0:
            return iter(())
        readers = [_OffsetRows(p, off, shape[0], shape[1], dt) for p, off, shape, dt in self._parts]
        return _iter_rows(readers, chunk_rows, prefetch)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        out = [np.memmap(p, dtype=dt, mode="r", offset=off, shape=shape) for p, off, shape, dt in self._parts]
        return out[0], out[1]

    def close(self) -> None:
        """Delete the temporary extraction of compressed members (arrays() must not be used after)."""
        if self._cleanup is not None:
            self._cleanup()

    def __repr__(self) -> str:
        return f"NpzPairSource({str(self.path)!r}, n={self.n}, dim={self.dim})"


class ParquetPairSource(_MetadataMixin):
    """A Parquet file with one row per pair: two vector columns (fixed-size list or list of
    floats, one embedding per row) and any metadata columns.

    iter_chunks streams row batches (bounded memory). Parquet cannot be memory-mapped, so
    arrays() decodes both vector columns into memory once (n * dim values each) and keeps
    them. A column whose lists differ in length, or hold nulls, is refused with the file,
    the column and the first bad row named.
    """

    def __init__(self, path: str | os.PathLike, vector_columns: Sequence[str] = DEFAULT_VECTOR_COLUMNS):
        pa = _pa()
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
                raise _missing_column(col, names, str(self.path),
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
        pa = _pa()
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
        chunk_rows = _positive_int(chunk_rows, "chunk_rows")
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
            pa = _pa()
            if not self._meta_columns:
                self._meta_cache = {}
            else:
                try:
                    table = self._file.read(columns=self._meta_columns)
                except (OSError, pa.ArrowException) as exc:
                    raise StoreError(f"{self.path} is unreadable as Parquet ({exc}); the file is corrupt") from None
                self._meta_cache = _table_to_dict(table)
        return self._meta_cache

    @property
    def columns(self) -> list[str]:
        return list(self._meta_columns)

    def __repr__(self) -> str:
        return f"ParquetPairSource({str(self.path)!r}, n={self.n}, dim={self.dim}, vectors={self.vector_columns})"


# -- one entry point ------------------------------------------------------------------------------------
def _is_source(obj: Any) -> bool:
    return all(hasattr(obj, a) for a in ("n", "dim", "iter_chunks", "arrays"))


def _sniff(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(6)
    if head[:4] == b"PK\x03\x04":
        return "npz"
    if head[:4] == b"PAR1":
        return "parquet"
    if head == b"\x93NUMPY":
        return "npy"
    return "unknown"


def open_source(obj: Any, texts: Any = None, *, metadata: Any = None,
                vector_columns: Sequence[str] = DEFAULT_VECTOR_COLUMNS):
    """One reader for every input: returns a paired source with ``n``, ``dim``,
    ``iter_chunks(chunk_rows)`` (bounded memory), ``arrays()`` (random access),
    ``metadata()`` (dict of 1-D NumPy arrays, empty when none), ``columns`` and
    ``column(name)``; pass it to fastsas.audit as the images argument.

    obj, texts:
      - an embedding store directory                       -> EmbeddingStore (read mode)
      - a .npz file with ``images`` and ``texts`` arrays   -> NpzPairSource
      - a .parquet file with two vector columns (`vector_columns`, fixed-size or plain
        lists of floats) and any metadata columns           -> ParquetPairSource
      - two .npy paths (images, texts), or a tuple of them -> NpyPair (never unpickled)
      - two arrays (or a tuple of them), or a dict with "images", "texts" (and
        "metadata") such as fastsas.synthetic.demo_archive() -> ArrayPairSource
      - a source already (has n, dim, iter_chunks, arrays) -> returned as it is
    metadata: per-row metadata for inputs that carry none (arrays, .npy, .npz): a dict of
    1-D arrays, a pyarrow Table, a DataFrame or the path of a Parquet file.
    File kinds are told by suffix, else by their first bytes. Errors name the file.
    """
    if texts is None:
        if _is_source(obj):
            if metadata is not None:
                raise TypeError("metadata= is for arrays, .npy and .npz inputs; this source has its own")
            return obj
        if isinstance(obj, Mapping) and "images" in obj and "texts" in obj:
            return ArrayPairSource(obj["images"], obj["texts"],
                                   obj.get("metadata") if metadata is None else metadata)
        if isinstance(obj, (tuple, list)) and len(obj) == 2:  # (images, texts) paths or arrays
            return open_source(obj[0], obj[1], metadata=metadata, vector_columns=vector_columns)
        if not _is_pathlike(obj):
            raise TypeError(f"give an archive path, two .npy paths, a dict with images/texts, or images and texts "
                            f"arrays; got {type(obj).__name__} alone")
        path = Path(obj)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or directory")
        if path.is_dir():
            if metadata is not None:
                raise TypeError(f"{path} is an embedding store with its own metadata; metadata= is for arrays, "
                                ".npy and .npz inputs")
            return EmbeddingStore.open(path)
        suffix = path.suffix.lower()
        kind = {".npz": "npz", ".parquet": "parquet", ".pq": "parquet", ".npy": "npy"}.get(suffix) or _sniff(path)
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
    if _is_pathlike(obj) and _is_pathlike(texts):
        for p in (obj, texts):
            if Path(p).suffix.lower() != ".npy" and Path(p).exists() and _sniff(Path(p)) != "npy":
                raise StoreError(f"{p}: two paths must be .npy files (images, texts); other archives are one path")
        return NpyPair(obj, texts, metadata=metadata)
    if _is_pathlike(obj) or _is_pathlike(texts):
        raise TypeError("give two .npy paths or two arrays, not one of each")
    return ArrayPairSource(obj, texts, metadata)
