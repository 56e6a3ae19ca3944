"""The embedding store for large archives (:class:`EmbeddingStore`), and
:func:`open_source`, the one reader of every input: a store directory or anything
:func:`fastsas.io.open_pair_source` reads.

The layout on disk (Zarr v3 arrays, Parquet metadata, a JSON manifest) is
:mod:`fastsas.store.layout`. Writing is atomic per chunk and resumable: every file is
written under a temporary name, fsynced and renamed into place (:func:`fastsas.io.write_atomic`);
the manifest, rewritten the same way after each finished chunk, is the commit point: a
chunk counts once the manifest says so. After a crash, ``EmbeddingStore.open(path,
mode="a")`` keeps every finished chunk, discards whatever was half written, reports
``n_done`` and continues from there.
"""
from __future__ import annotations

import base64
import datetime as _dt
import json
import os
import shutil
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from fastsas._badrows import refuse_non_finite_rows
from fastsas._validate import check_int, computed_dtype
from fastsas._version import __version__
from fastsas.io.atomic import PARTIAL_SUFFIX, fsync_dir, write_atomic, write_json
from fastsas.io.errors import StoreError, missing_column
from fastsas.io.metadata import MetadataMixin, as_table, column_to_numpy, pyarrow, read_parquet, table_to_dict
from fastsas.io.rows import iter_rows
from fastsas.io.sources import DEFAULT_VECTOR_COLUMNS, open_pair_source
from fastsas.store import layout
from fastsas.store.arrays import ChunkRows, StoreArray, map_contiguous
from fastsas.store.layout import ARRAY_NAMES, DTYPE, LOCK_FILE, MANIFEST, METADATA_FILE, METADATA_PARTS

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: the single-writer lock is skipped
    fcntl = None

__all__ = ["EmbeddingStore", "open_source"]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# What a row that float32 cannot hold is called in the refusal (float64 1e300 would be Inf).
_BEYOND_FLOAT32 = f"values beyond float32's range (|value| > {float(np.finfo(np.float32).max):.4g}, stored as Inf)"
_APPEND_FIX = "drop or repair those rows before appending: a store holds finite embeddings only"


def _as_vectors(x: Any, name: str, dim: int) -> np.ndarray:
    """A C-contiguous float32 (rows, dim) copy-free view where possible; rows that are not
    finite, as given or once in float32, are refused and named."""
    arr = np.asarray(x)
    computed_dtype(arr.dtype, name)  # refuses what is not float16/32/64, as every input check does
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{name} must have shape (rows, {dim}), got {arr.shape}")
    suffix = " (rows of this append)"
    refuse_non_finite_rows(arr, name, suffix=suffix, fix=_APPEND_FIX)
    with np.errstate(over="ignore"):  # values float32 cannot hold become Inf, refused just below
        out = np.ascontiguousarray(arr, dtype=DTYPE)
    if out.dtype != arr.dtype:
        refuse_non_finite_rows(out, name, problem=_BEYOND_FLOAT32, suffix=suffix, fix=_APPEND_FIX)
    return out


def _schema_from(columns: Any):
    """A pyarrow Schema from None, a Schema, or a mapping name -> type (pyarrow type, NumPy
    dtype, or a type name such as "string", "int64", "timestamp[ns]")."""
    if columns is None:
        return None
    pa = pyarrow()
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


def _lock(path: Path) -> int | None:
    """The single-writer lock of the store at `path` (a flock on its lock file, held until
    the descriptor is closed), or StoreError when another writer holds it."""
    if fcntl is None:  # pragma: no cover - not POSIX
        return None
    lock = path / LOCK_FILE
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StoreError(f"{path} is open for writing by another writer (lock held on {lock}); "
                         "close that writer first") from None
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def _claim_directory(path: Path, overwrite: bool) -> int | None:
    """Make `path` an empty store directory holding only the marker and the lock, and return
    the lock, held. In this order: refuse a directory that is neither empty nor a store
    (nothing is written into it); write the marker; take the lock (refused while another
    writer, or another create(), holds it); then, under the lock, refuse a committed store
    unless `overwrite`, and empty the directory, the manifest first (so a crash while
    emptying leaves a half-created store, which create() accepts again)."""
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a directory")
    if path.exists() and any(path.iterdir()) and not layout.is_store_directory(path):
        raise FileExistsError(f"{path} already exists, is not empty and is not an embedding store; choose a new "
                              "directory (overwrite=True only replaces embedding stores)")
    path.mkdir(parents=True, exist_ok=True)
    write_json(path / layout.MARKER, {"format": layout.FORMAT, "created_by": f"fastsas {__version__}"})
    fd = _lock(path)
    try:
        if not overwrite and not layout.is_half_created(path) and any(
                e.name not in (LOCK_FILE, layout.MARKER) for e in path.iterdir()):
            raise FileExistsError(f"{path} already holds an embedding store; open it with "
                                  "EmbeddingStore.open(path, mode='a') to continue writing, or pass "
                                  "overwrite=True to replace it")
        if (path / MANIFEST).exists():
            (path / MANIFEST).unlink()  # the commit point first: from here on it holds no rows
            fsync_dir(path)
        # the chunks next, so that a crash while emptying leaves a half-created store
        for entry in [path / name for name in ARRAY_NAMES] + sorted(path.iterdir()):
            if entry.name not in (LOCK_FILE, layout.MARKER) and (entry.exists() or entry.is_symlink()):
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    except BaseException:
        _unlock(fd)
        raise
    return fd


class EmbeddingStore(MetadataMixin):
    """A directory of paired image and text embeddings (Zarr v3, float32, chunked by rows)
    with per-row metadata (Parquet) and a JSON manifest (the layout: :mod:`fastsas.store.layout`).

    Rows are buffered until a chunk of ``chunk_rows`` rows is full, then written atomically;
    closing writes the last, shorter chunk and compacts the metadata into one
    ``metadata.parquet``. Leaving a ``with`` block through an exception does not close the
    store: it stays resumable, with every finished chunk kept. Embeddings are stored as
    float32 (float16 and float64 input are converted). An open store is a paired source
    (``n``, ``dim``, ``iter_chunks``, ``arrays``, ``metadata``, ``columns``, ``column``):
    :func:`fastsas.audit` takes it as its images argument.

    Parameters
    ----------
    path : Path
        The store directory.
    manifest : dict
        Its checked manifest.
    mode : {"r", "a", "w"}
        Read, append (resume), or write a new store. Use :meth:`create`, :meth:`open` or
        :meth:`build` rather than the constructor.

    Examples
    --------
    Write, then read:

    >>> import tempfile, numpy as np, fastsas as fs
    >>> from fastsas.store import EmbeddingStore
    >>> path = tempfile.mkdtemp() + "/archive"
    >>> demo = fs.synthetic.demo_archive(1000, 32)
    >>> with EmbeddingStore.create(path, dim=32, chunk_rows=256, model="demo") as store:
    ...     for s in range(0, 1000, 300):
    ...         store.append(demo["images"][s:s + 300], demo["texts"][s:s + 300],
    ...                      {k: v[s:s + 300] for k, v in demo["metadata"].items()})
    >>> store = EmbeddingStore.open(path)
    >>> store.n, store.chunks_done, store.complete, store.model
    (1000, 4, True, 'demo')
    >>> result = fs.audit(store, groups=store.column("modality"), retrieval=False, backend="cpu")
    >>> result.n
    1000

    Resume after an interruption: ``EmbeddingStore.open(path, mode="a")`` keeps every finished
    chunk; ``n_done`` is the row to continue from.
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
            pa = pyarrow()
            try:
                self._schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(meta["arrow_schema"])))
            except (ValueError, pa.ArrowException) as exc:
                raise StoreError(f"{self.path / MANIFEST}: the metadata schema is unreadable ({exc})") from None

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, dim: int, *, chunk_rows: int = 65536, columns: Any = None,
               model: str | None = None, notes: str | None = None, overwrite: bool = False,
               id_column: str | None = None) -> "EmbeddingStore":
        """A new, empty store open for writing (mode "w").

        Parameters
        ----------
        path : str or os.PathLike
            The directory (created; it must not exist, be empty, hold a store whose creation
            was interrupted, or hold a store to replace).
        dim : int
            The embedding dimension.
        chunk_rows : int, default 65536
            Rows per chunk: the unit of atomic writes and of resumption (a multiple of 1024
            lets :meth:`arrays` map the store without copying).
        columns : pyarrow.Schema, dict or None
            The metadata schema (``{name: type}``, e.g. ``{"study_id": "string", "year":
            "int64"}``); by default taken from the first append's metadata.
        model, notes : str or None
            Free text kept in the manifest.
        overwrite : bool, default False
            Replace an existing store at `path`: only a directory fastsas made a store (it
            has the store's marker), never any other, and only while no writer has it open.
        id_column : str or None
            The metadata column that names the unit each row belongs to (a study: the rows
            of one id share one report), recorded in the manifest (:attr:`id_column`);
            audits use it by default as their unit of uncertainty and retrieval ground truth.

        Returns
        -------
        EmbeddingStore
            The store, holding the single-writer lock until :meth:`close` or :meth:`abandon`.

        Raises
        ------
        FileExistsError
            When `path` holds something else, or a store and `overwrite` is False.
        StoreError
            When another writer has the store at `path` open (its lock is held).
        ValueError, TypeError
            When `dim` or `chunk_rows` is not a positive integer, or `columns` is not a schema.

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> from fastsas.store import EmbeddingStore
        >>> store = EmbeddingStore.create(tempfile.mkdtemp() + "/s", 4, chunk_rows=2, columns={"site": "string"})
        >>> store.append(np.zeros((3, 4)), np.ones((3, 4)), {"site": np.array(["a", "b", "a"])})
        >>> store.n_done, store.n_pending
        (2, 1)
        >>> store.close(); store.n, store.columns
        (3, ['site'])
        """
        dim = check_int(dim, "dim", meaning="the embedding dimension")
        chunk_rows = check_int(chunk_rows, "chunk_rows")
        schema = _schema_from(columns)
        if id_column is not None and (not isinstance(id_column, str) or not id_column):
            raise TypeError(f"id_column must be a metadata column name or None, got {id_column!r}")
        if id_column is not None and schema is not None and id_column not in schema.names:
            raise ValueError(f"id_column {id_column!r} is not a column of the schema ({', '.join(schema.names)}); "
                             "name one of its columns")
        path = Path(path)
        lock_fd = _claim_directory(path, overwrite)  # the lock first: nothing is removed without it
        try:
            write_json(path / "zarr.json", layout.group_meta())
            for name in ARRAY_NAMES:
                (path / name / "c").mkdir(parents=True, exist_ok=True)
                write_json(path / name / "zarr.json", layout.zarr_array_meta(0, dim, chunk_rows))
            (path / METADATA_PARTS).mkdir(exist_ok=True)
            manifest = {
                "format": layout.FORMAT,
                "format_version": layout.FORMAT_VERSION,
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
                "id_column": id_column,
                "fastsas_version": __version__,
                "created": _now(),
                "updated": _now(),
            }
            store = cls(path, manifest, "w")
        except BaseException:
            _unlock(lock_fd)
            raise
        store._hold_lock(lock_fd)
        write_json(path / MANIFEST, manifest)  # last: a directory without a manifest holds no rows
        return store

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> "EmbeddingStore":
        """Open an existing store: mode "r" to read, "a" to continue writing (after an
        interruption, or to add rows to a closed store). Every finished chunk is checked to be
        present with the right size; errors name the file.

        Parameters
        ----------
        path : str or os.PathLike
            The store directory.
        mode : {"r", "a"}, default "r"
            Read, or append.

        Returns
        -------
        EmbeddingStore
            The open store; with "a", half-written files are discarded and a short last chunk is
            reloaded into the buffer, so new rows extend it.

        Raises
        ------
        FileNotFoundError
            When `path` does not exist.
        StoreError
            When it is not a store, or a file is missing, truncated or of another version;
            or, with "a", when another writer holds the lock.

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> from fastsas.store import EmbeddingStore
        >>> path = tempfile.mkdtemp() + "/s"
        >>> EmbeddingStore.build(path, np.zeros((3, 4)), np.ones((3, 4)), chunk_rows=2).close()
        >>> store = EmbeddingStore.open(path, mode="a")
        >>> store.append(np.zeros((2, 4)), np.ones((2, 4))); store.close()
        >>> EmbeddingStore.open(path).n
        5
        """
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' (read) or 'a' (append), got {mode!r}")
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such embedding store")
        if not path.is_dir():
            raise StoreError(f"{path} is not a directory, so not an embedding store "
                             "(open_source reads .npy, .npz and .parquet files)")
        manifest = layout.read_manifest(path)
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
              overwrite: bool = False, vector_columns: Sequence[str] = DEFAULT_VECTOR_COLUMNS,
              id_column: str | None = None) -> "EmbeddingStore":
        """Write any input :func:`open_source` reads (arrays, a dict, an .npy pair, .npz, Parquet,
        another store) into a new store at `path`, chunk by chunk.

        Parameters
        ----------
        path : str or os.PathLike
            The new store's directory.
        images, texts : path, array_like, dict or source
            The input, as :func:`open_source` takes it.
        metadata : dict, pyarrow.Table, DataFrame, path or None
            Per-row metadata for inputs that carry none.
        chunk_rows : int, default 65536
            Rows per chunk.
        model, notes : str or None
            Free text kept in the manifest.
        overwrite : bool, default False
            Replace an existing store.
        vector_columns : tuple of str
            The embedding columns of a Parquet input.
        id_column : str or None
            The id column to record (see :meth:`create`).

        Returns
        -------
        EmbeddingStore
            The new store, open for reading.

        Raises
        ------
        FileExistsError, StoreError, TypeError, ValueError
            As :meth:`create` and :func:`open_source`.

        Examples
        --------
        >>> import tempfile, fastsas as fs
        >>> from fastsas.store import EmbeddingStore
        >>> store = EmbeddingStore.build(tempfile.mkdtemp() + "/s", fs.synthetic.demo_archive(300, 32), chunk_rows=128)
        >>> store.n, store.dim, store.columns[:1]
        (300, 32, ['study_id'])
        """
        source = open_source(images, texts, metadata=metadata, vector_columns=vector_columns)
        meta = source.metadata()
        if id_column is not None and id_column not in meta:
            raise ValueError(f"id_column {id_column!r} is not a metadata column of the input "
                             f"(columns: {', '.join(meta) or 'none'})")
        with cls.create(path, source.dim, chunk_rows=chunk_rows, model=model, notes=notes,
                        overwrite=overwrite, id_column=id_column) as store:
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
        """Finished chunks (what the manifest has committed)."""
        return int(self._m["chunks_done"])

    @property
    def complete(self) -> bool:
        """True once a writer closed the store (False while written or after an interruption)."""
        return bool(self._m["complete"])

    @property
    def model(self) -> str | None:
        """The model text given at create() (None if none)."""
        return self._m.get("model")

    @property
    def notes(self) -> str | None:
        """The notes text given at create() (None if none)."""
        return self._m.get("notes")

    @property
    def id_column(self) -> str | None:
        """The metadata column naming each row's unit (e.g. the study id ``fastsas embed``
        writes), as recorded at create(); None when none was recorded."""
        name = self._m.get("id_column")
        return name if isinstance(name, str) and name else None

    @property
    def manifest(self) -> dict:
        """A copy of the manifest (see :func:`fastsas.store.layout.read_manifest`)."""
        return json.loads(json.dumps(self._m))

    @property
    def columns(self) -> list[str]:
        return [] if self._schema is None else list(self._schema.names)

    def __repr__(self) -> str:
        state = "complete" if self.complete else f"incomplete, {self.chunks_done} chunks done"
        return f"EmbeddingStore({str(self.path)!r}, n={self.n}, dim={self.dim}, mode={self.mode!r}, {state})"

    # -- file layout ------------------------------------------------------------------------------------
    def _chunk_file(self, name: str, i: int) -> Path:
        return layout.chunk_file(self.path, name, i)

    def _part_file(self, i: int) -> Path:
        return layout.part_file(self.path, i)

    def _rows_in_chunk(self, i: int) -> int:
        return layout.rows_in_chunk(self.n, self.chunk_rows, i)

    # -- checks ---------------------------------------------------------------------------------------
    def _check_zarr_meta(self, name: str, repairing: bool) -> None:
        file = self.path / name / "zarr.json"
        meta = layout.read_json(file, f"the {name} array is gone; the store is truncated")
        expected = layout.zarr_array_meta(self.n, self.dim, self.chunk_rows)
        shape = meta.get("shape")
        problems = []
        if meta.get("zarr_format") != 3 or meta.get("node_type") != "array":
            problems.append("it is not a Zarr v3 array")
        if meta.get("data_type") != "float32":
            problems.append(f"data_type is {meta.get('data_type')!r}, not float32")
        if meta.get("chunk_grid") != expected["chunk_grid"]:
            problems.append(f"its chunk grid is not {self.chunk_rows} x {self.dim} rows")
        if meta.get("codecs") != layout.CODECS or meta.get("chunk_key_encoding") != expected["chunk_key_encoding"]:
            problems.append("its chunks are not stored as this format expects (uncompressed little-endian "
                            "'bytes' codec, '/'-separated chunk keys)")
        if not (isinstance(shape, list) and len(shape) == 2 and shape[1] == self.dim
                and isinstance(shape[0], int) and (repairing or shape[0] >= self.n)):
            problems.append(f"its shape {shape} does not match the manifest's n={self.n}, dim={self.dim}")
        if problems:
            raise StoreError(f"{file} does not describe this store's {name}: {'; '.join(problems)}")

    def _check_chunks(self) -> None:
        size = layout.chunk_bytes(self.chunk_rows, self.dim)
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
        self._hold_lock(_lock(self.path))

    def _hold_lock(self, fd: int | None) -> None:
        """Keep the writer lock `fd` until close(), abandon() or garbage collection."""
        if fd is None:  # pragma: no cover - not POSIX
            return
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
            self._buf = np.zeros((2, self.chunk_rows, self.dim), dtype=DTYPE)
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
        for file in self.path.rglob("*" + PARTIAL_SUFFIX):
            file.unlink()
        parts = self.path / METADATA_PARTS
        parts.mkdir(exist_ok=True)
        metadata_layout = self._m["metadata"]["layout"]
        for f in parts.iterdir():
            keep = metadata_layout == "parts" and f.name.startswith("part-") and f.name.endswith(".parquet") \
                and f.name[5:-8].isdigit() and int(f.name[5:-8]) < self.chunks_done
            if not keep:
                f.unlink()
        if metadata_layout == "parts" and (self.path / METADATA_FILE).exists():
            (self.path / METADATA_FILE).unlink()  # a compaction that did not commit
        if metadata_layout == "file" and self._schema is not None and self.chunks_done:
            table = self._metadata_table_checked()
            for i in range(self.chunks_done):
                rows = table.slice(i * self.chunk_rows, self._rows_in_chunk(i))
                write_atomic(self._part_file(i), lambda tmp, t=rows: pyarrow().parquet.write_table(t, tmp))
        self._m["metadata"]["layout"] = "parts"
        self._check_metadata_files()
        for name in ARRAY_NAMES:
            write_json(self.path / name / "zarr.json", layout.zarr_array_meta(self.n, self.dim, self.chunk_rows))
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
                reader = ChunkRows([self._chunk_file(name, last)], rows, self.dim, self.chunk_rows)
                try:
                    reader.read(0, self._buf[k, :rows])
                finally:
                    reader.close()
            self._buf_len = rows
            if self._schema is not None:
                self._buf_meta = [self._read_part(last)]

    def _commit(self) -> None:
        self._m["updated"] = _now()
        write_json(self.path / MANIFEST, self._m)

    def append(self, images: Any, texts: Any, metadata: Any = None) -> None:
        """Append paired rows (any number): (rows, dim) images and texts, and their metadata
        (dict of 1-D arrays, pyarrow Table or pandas DataFrame with the store's columns; the
        first append fixes the columns unless create() was given them). Full chunks are
        written as soon as they fill; nothing is changed when an argument is refused: rows
        with NaN or Inf, or with values float32 cannot hold (|v| > 3.4e38), are refused and
        named."""
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
        pa = pyarrow()
        table = as_table(metadata, rows, "metadata")
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
            write_atomic(file, memoryview(self._buf[k]).cast("B"))
        if self._schema is not None:
            pa = pyarrow()
            table = pa.concat_tables(self._buf_meta).combine_chunks() if self._buf_meta else \
                self._schema.empty_table()
            write_atomic(self._part_file(i), lambda tmp: pa.parquet.write_table(table, tmp))
        n_new = self._buf_start + rows
        for name in ARRAY_NAMES:
            write_json(self.path / name / "zarr.json", layout.zarr_array_meta(n_new, self.dim, self.chunk_rows))
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
        pa = pyarrow()
        table = self._metadata_table_checked()
        write_atomic(self.path / METADATA_FILE, lambda tmp: pa.parquet.write_table(table, tmp))
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
        chunk_rows = check_int(chunk_rows, "chunk_rows")
        if self.n == 0:
            return iter(())
        readers = [ChunkRows(self._array_files(name), self.n, self.dim, self.chunk_rows) for name in ARRAY_NAMES]
        return iter_rows(readers, chunk_rows, prefetch)

    def arrays(self, *, mapped: bool = True) -> tuple[Any, Any]:
        """(images, texts) with random access and no up-front read: read-only (n, dim) float32
        NumPy arrays whose chunk files are memory-mapped into one contiguous range (Linux,
        chunk sizes that are whole pages: chunk_rows * dim a multiple of 1024), otherwise
        (or with mapped=False) StoreArray objects gathering rows from per-chunk memory maps.
        Either way ``np.asarray(x[rows])`` works for any row selection."""
        out = []
        for name in ARRAY_NAMES:
            files = self._array_files(name)
            arr = map_contiguous(files, layout.chunk_bytes(self.chunk_rows, self.dim), self.n, self.dim) \
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
        table = read_parquet(self._part_file(i))
        rows = self._rows_in_chunk(i)
        if table.num_rows < rows:
            raise StoreError(f"{self._part_file(i)} has {table.num_rows} rows but chunk {i} has {rows}; "
                             "the store is corrupt")
        return table.slice(0, rows)

    def _metadata_table_checked(self, columns: Sequence[str] | None = None):
        pa = pyarrow()
        if self._schema is None:
            return pa.table({})
        if self._m["metadata"]["layout"] == "file":
            table = read_parquet(self.path / METADATA_FILE, columns)
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
        return table_to_dict(self.metadata_table())

    def column(self, name: str) -> np.ndarray:
        """One metadata column as a NumPy array (reads only that column)."""
        if name not in self.columns:
            raise missing_column(name, self.columns, str(self.path))
        return column_to_numpy(self._metadata_table_checked([name]).column(name))


def _open_store_directory(path: Path) -> EmbeddingStore:
    return EmbeddingStore.open(path)


def open_source(obj: Any, texts: Any = None, *, metadata: Any = None,
                vector_columns: Sequence[str] = DEFAULT_VECTOR_COLUMNS):
    """One reader for every input: a paired source with ``n``, ``dim``,
    ``iter_chunks(chunk_rows)`` (bounded memory), ``arrays()`` (random access),
    ``metadata()`` (dict of 1-D NumPy arrays, empty when none), ``columns`` and
    ``column(name)``; pass it to :func:`fastsas.audit` as the images argument.

    Parameters
    ----------
    obj, texts : path, array_like, dict, tuple or source
        - an embedding store directory -> :class:`EmbeddingStore` (read mode);
        - a .npz file with ``images`` and ``texts`` arrays -> :class:`~fastsas.io.NpzPairSource`;
        - a .parquet file with two vector columns (`vector_columns`, fixed-size or plain
          lists of floats) and any metadata columns -> :class:`~fastsas.io.ParquetPairSource`;
        - two .npy paths (images, texts), or a tuple of them -> :class:`~fastsas.io.NpyPair`
          (never unpickled);
        - two arrays (or a tuple of them), or a dict with "images", "texts" (and
          "metadata") such as :func:`fastsas.synthetic.demo_archive` ->
          :class:`~fastsas.io.ArrayPairSource`;
        - a source already (has n, dim, iter_chunks, arrays) -> returned as it is.
        File kinds are told by suffix, else by their first bytes.
    metadata : dict, pyarrow.Table, DataFrame, path or None
        Per-row metadata for inputs that carry none (arrays, .npy, .npz).
    vector_columns : tuple of str, default ("image_embedding", "text_embedding")
        The embedding columns of a Parquet file.

    Returns
    -------
    source
        A paired source.

    Raises
    ------
    FileNotFoundError
        When a path does not exist.
    StoreError
        When a file or store is corrupt, truncated, or not a kind fastsas reads; the
        message names the file.
    TypeError, ValueError
        When the arguments do not describe one input.

    Examples
    --------
    >>> import fastsas as fs
    >>> from fastsas.store import open_source
    >>> source = open_source(fs.synthetic.demo_archive(500, 32))
    >>> source.n, source.dim, source.columns[:2]
    (500, 32, ['study_id', 'modality'])
    """
    return open_pair_source(obj, texts, metadata=metadata, vector_columns=vector_columns,
                            open_directory=_open_store_directory)
