"""The on-disk layout of an embedding store, format version 1: every name, path and file
format a reader needs, and the checks of the manifest. :class:`fastsas.store.EmbeddingStore`
writes and reads this layout; :mod:`fastsas.dask` reads it directly (workers open the chunk
files themselves); any Zarr v3 or Parquet reader can read it too.

A store is a directory::

    store/
      zarr.json                    Zarr v3 root group (attributes name the fastsas format)
      images/zarr.json             Zarr v3 array, float32 (n, dim), chunks of chunk_rows rows,
      images/c/<i>/0               one uncompressed little-endian file per chunk ("bytes" codec),
                                   always chunk_rows x dim (a short last chunk is zero padded)
      texts/...                    the same for the text embeddings
      metadata/part-<i>.parquet    per-row metadata of chunk i while the store is written
      metadata.parquet             the same rows compacted into one table when the writer closes
      manifest.json                format version, n, dim, dtype, chunk_rows, chunks_done, ...
      .lock                        held (flock) by the one writer
      .fastsas-store               the marker: written first by create(), so a directory is
                                   known to be a store before anything else is in it

The manifest is the commit point: a chunk counts once the manifest's ``chunks_done`` says so.
A directory with the marker but no manifest is a store whose creation was interrupted: it
holds no rows, and ``EmbeddingStore.create`` starts it again. Only a directory with the
marker (or, from stores written before the marker, a manifest of this format) is ever
replaced by ``create(..., overwrite=True)``.

>>> from pathlib import Path
>>> from fastsas.store import layout
>>> layout.chunk_file(Path("store"), "images", 3).as_posix()
'store/images/c/3/0'
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from fastsas.io.errors import StoreError

__all__ = ["ARRAY_NAMES", "CODECS", "DTYPE", "FORMAT", "FORMAT_VERSION", "LOCK_FILE", "MANIFEST", "MARKER",
           "METADATA_FILE", "METADATA_PARTS", "chunk_bytes", "is_half_created", "is_store_directory", "chunk_file", "group_meta", "missing_chunk_files", "part_file",
           "read_json", "read_manifest", "rows_in_chunk", "zarr_array_meta"]

FORMAT = "fastsas-embedding-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
METADATA_FILE = "metadata.parquet"
METADATA_PARTS = "metadata"
LOCK_FILE = ".lock"
MARKER = ".fastsas-store"
ARRAY_NAMES = ("images", "texts")
DTYPE = np.dtype("<f4")
CODECS = [{"name": "bytes", "configuration": {"endian": "little"}}]


def chunk_file(root: Path, name: str, i: int) -> Path:
    """The file of chunk `i` of array `name` ("images" or "texts") of the store at `root`.

    Parameters
    ----------
    root : Path
        The store directory.
    name : str
        "images" or "texts".
    i : int
        The chunk number.

    Returns
    -------
    Path
        ``root/name/c/<i>/0``.

    Examples
    --------
    >>> from pathlib import Path
    >>> from fastsas.store import layout
    >>> layout.chunk_file(Path("s"), "texts", 0).as_posix()
    's/texts/c/0/0'
    """
    return root / name / "c" / str(i) / "0"


def part_file(root: Path, i: int) -> Path:
    """The metadata part of chunk `i` (the layout while the store is written).

    Parameters
    ----------
    root : Path
        The store directory.
    i : int
        The chunk number.

    Returns
    -------
    Path
        ``root/metadata/part-<i, six digits>.parquet``.

    Examples
    --------
    >>> from pathlib import Path
    >>> from fastsas.store import layout
    >>> layout.part_file(Path("s"), 7).as_posix()
    's/metadata/part-000007.parquet'
    """
    return root / METADATA_PARTS / f"part-{i:06d}.parquet"


def chunk_bytes(chunk_rows: int, dim: int) -> int:
    """The size in bytes of every chunk file (a short last chunk is zero padded).

    Parameters
    ----------
    chunk_rows, dim : int
        Rows per chunk and the embedding dimension.

    Returns
    -------
    int
        ``chunk_rows * dim * 4`` (float32).

    Examples
    --------
    >>> from fastsas.store import layout
    >>> layout.chunk_bytes(1024, 768)
    3145728
    """
    return chunk_rows * dim * DTYPE.itemsize


def rows_in_chunk(n: int, chunk_rows: int, i: int) -> int:
    """The rows of chunk `i` that hold data (the last chunk may be shorter).

    Parameters
    ----------
    n, chunk_rows, i : int
        The store's rows, rows per chunk, and the chunk number.

    Returns
    -------
    int
        The rows of data in chunk `i`.

    Examples
    --------
    >>> from fastsas.store import layout
    >>> [layout.rows_in_chunk(2500, 1024, i) for i in range(3)]
    [1024, 1024, 452]
    """
    return min(chunk_rows, n - i * chunk_rows)


def group_meta() -> dict:
    """The root ``zarr.json``: a Zarr v3 group whose attributes name this format.

    Returns
    -------
    dict
        The JSON object.

    Examples
    --------
    >>> from fastsas.store import layout
    >>> layout.group_meta()["attributes"]["fastsas"]["format_version"]
    1
    """
    return {"zarr_format": 3, "node_type": "group",
            "attributes": {"fastsas": {"format": FORMAT, "format_version": FORMAT_VERSION, "manifest": MANIFEST}}}


def zarr_array_meta(n: int, dim: int, chunk_rows: int) -> dict:
    """The ``zarr.json`` of one (n, dim) float32 array stored in chunks of `chunk_rows` rows,
    uncompressed little-endian ("bytes" codec), "/"-separated chunk keys.

    Parameters
    ----------
    n, dim, chunk_rows : int
        The shape and the rows per chunk.

    Returns
    -------
    dict
        The JSON object.

    Examples
    --------
    >>> from fastsas.store import layout
    >>> meta = layout.zarr_array_meta(10, 4, 8)
    >>> meta["shape"], meta["chunk_grid"]["configuration"]["chunk_shape"]
    ([10, 4], [8, 4])
    """
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [n, dim],
        "data_type": "float32",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [chunk_rows, dim]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0.0,
        "codecs": CODECS,
        "attributes": {},
        "dimension_names": ["row", "dim"],
    }


def read_json(path: Path, what: str) -> dict:
    """A JSON object from `path`; `what` says in the error what the file is for.

    Parameters
    ----------
    path : Path
        The file.
    what : str
        Its role, for the message when it is missing.

    Returns
    -------
    dict
        The object.

    Raises
    ------
    StoreError
        When the file is missing, unreadable, not JSON or not an object.

    Examples
    --------
    >>> import json, tempfile, pathlib
    >>> from fastsas.store import layout
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "m.json"
    >>> _ = path.write_text(json.dumps({"n": 1}))
    >>> layout.read_json(path, "a test file")
    {'n': 1}
    """
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


def read_manifest(root: Path) -> dict:
    """The checked manifest of the store at `root`.

    Parameters
    ----------
    root : Path
        The store directory.

    Returns
    -------
    dict
        The manifest: ``format``, ``format_version``, ``n``, ``dim``, ``dtype``,
        ``chunk_rows``, ``chunks_done``, ``complete``, ``arrays``, ``metadata`` (``layout``
        "parts" or "file", ``columns``, ``arrow_schema``), ``model``, ``notes``,
        ``id_column`` (the column naming each row's unit, or None), ``fastsas_version``,
        ``created``, ``updated``.

    Raises
    ------
    StoreError
        When the manifest is missing, of another format or version, or inconsistent.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from fastsas.store import EmbeddingStore, layout
    >>> path = Path(tempfile.mkdtemp()) / "s"
    >>> EmbeddingStore.build(path, np.zeros((5, 4)), np.ones((5, 4)), chunk_rows=2).close()
    >>> m = layout.read_manifest(path)
    >>> m["n"], m["chunks_done"], m["complete"]
    (5, 3, True)
    """
    file = root / MANIFEST
    if not file.exists():
        if is_half_created(root):
            raise StoreError(f"{file} is missing: the creation of the embedding store {root} was interrupted "
                             "before its first commit, so it holds no rows; start it again with "
                             "EmbeddingStore.create(path, dim, ...) (or rerun the fastsas embed that made it)")
        if (root / MARKER).exists():
            raise StoreError(f"{file} is missing: the embedding store {root} is damaged (it has chunk files but "
                             "no manifest saying which are committed); restore manifest.json from a copy, or "
                             "replace the store with EmbeddingStore.create(path, dim, ..., overwrite=True)")
        raise StoreError(f"{file} is missing: {root} is not a fastsas embedding store")
    m = read_json(file, "the store's manifest")
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
    m.setdefault("id_column", None)  # stores written before the id column was recorded
    if m["id_column"] is not None and (not isinstance(m["id_column"], str) or not m["id_column"]):
        raise StoreError(f"{file}: id_column is {m['id_column']!r}, expected a column name or null; the manifest "
                         "is corrupt")
    return m


def is_store_directory(root: Path) -> bool:
    """Whether the directory `root` is an embedding store (finished, being written, or
    half created): it has the marker, or a manifest of this format (stores written before
    the marker). An unrelated directory, a Zarr dataset of another program included, is not.

    Parameters
    ----------
    root : Path
        A directory.

    Returns
    -------
    bool
        True for a store.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from fastsas.store import EmbeddingStore, layout
    >>> path = Path(tempfile.mkdtemp())
    >>> layout.is_store_directory(path)
    False
    >>> EmbeddingStore.build(path / "s", np.zeros((2, 4)), np.ones((2, 4))).close()
    >>> layout.is_store_directory(path / "s")
    True
    """
    if (root / MARKER).is_file():
        return True
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


def is_half_created(root: Path) -> bool:
    """Whether `root` is a store whose creation was interrupted before its first commit: the
    marker, no manifest, no chunk file. It holds no rows, so ``EmbeddingStore.create``
    starts it again without ``overwrite``.

    Parameters
    ----------
    root : Path
        A directory.

    Returns
    -------
    bool
        True for a half-created store.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from fastsas.store import layout
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = (root / layout.MARKER).write_text("{}")
    >>> layout.is_half_created(root)
    True
    """
    if not (root / MARKER).is_file() or (root / MANIFEST).exists():
        return False
    return not any(f.is_file() for name in ARRAY_NAMES for f in (root / name / "c").rglob("*"))


def missing_chunk_files(root: Path, chunks_done: int) -> list[Path]:
    """The chunk files of both arrays, among the first `chunks_done`, that are not on disk (a
    Zarr reader would read them as zeros).

    Parameters
    ----------
    root : Path
        The store directory.
    chunks_done : int
        The finished chunks (the manifest's ``chunks_done``).

    Returns
    -------
    list of Path
        The missing files, images first.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from fastsas.store import EmbeddingStore, layout
    >>> path = Path(tempfile.mkdtemp()) / "s"
    >>> EmbeddingStore.build(path, np.zeros((5, 4)), np.ones((5, 4)), chunk_rows=2).close()
    >>> layout.chunk_file(path, "texts", 1).unlink()
    >>> [p.relative_to(path).as_posix() for p in layout.missing_chunk_files(path, 3)]
    ['texts/c/1/0']
    """
    return [chunk_file(root, name, i) for name in ARRAY_NAMES for i in range(chunks_done)
            if not chunk_file(root, name, i).is_file()]
