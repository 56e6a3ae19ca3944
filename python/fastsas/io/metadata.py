"""Per-row metadata (study ids, modality, site, year, ...) between its forms: Arrow tables
(the store's Parquet files), dicts of 1-D NumPy arrays (what sources return), pandas
DataFrames (what users often have). pyarrow is imported on first use."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fastsas.io.errors import StoreError, missing_column

__all__ = ["MetadataMixin", "as_table", "column_to_numpy", "is_pathlike", "normalise_metadata", "pyarrow",
           "read_parquet", "table_to_dict"]


def pyarrow():
    """The pyarrow module, with pyarrow.parquet loaded (a dependency; imported on first use
    so that ``import fastsas`` stays light)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet  # noqa: F401 - registers pa.parquet
    except ImportError:  # pragma: no cover - a dependency
        raise ImportError("the embedding store's metadata and Parquet inputs need pyarrow: "
                          "pip install 'pyarrow>=14'") from None
    return pa


def is_pathlike(obj: Any) -> bool:
    return isinstance(obj, (str, os.PathLike))


def column_to_numpy(col: Any) -> np.ndarray:
    """One Arrow column as a NumPy array: strings without nulls become a fixed-width str
    array (as fastsas.synthetic produces), everything else what Arrow gives."""
    pa = pyarrow()
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    arr = col.to_numpy() if isinstance(col, pa.ChunkedArray) else col.to_numpy(zero_copy_only=False)
    if (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)) and col.null_count == 0:
        arr = arr.astype(str) if len(arr) else np.array([], dtype=str)
    return arr


def table_to_dict(table: Any) -> dict[str, np.ndarray]:
    """An Arrow table as {column name: 1-D NumPy array} (see :func:`column_to_numpy`)."""
    return {name: column_to_numpy(table.column(name)) for name in table.column_names}


def as_table(metadata: Any, rows: int, what: str):
    """A pyarrow Table of `rows` rows from a dict of 1-D arrays, a pyarrow Table/RecordBatch
    or a pandas DataFrame; `what` names the argument in errors."""
    pa = pyarrow()
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


def read_parquet(path: Path, columns: Sequence[str] | None = None):
    """A Parquet file (or some of its columns) as an Arrow table.

    Raises
    ------
    StoreError
        When the file is missing or unreadable; the message names it.
    """
    pa = pyarrow()
    try:
        return pa.parquet.read_table(path, columns=list(columns) if columns is not None else None)
    except FileNotFoundError:
        raise StoreError(f"{path} is missing; the store is truncated") from None
    except (OSError, pa.ArrowException) as exc:
        raise StoreError(f"{path} is unreadable as Parquet ({exc}); the file is corrupt") from None


def normalise_metadata(metadata: Any, n: int, what: str) -> dict[str, np.ndarray]:
    """Per-row metadata of `n` rows as a dict of 1-D NumPy arrays, from None (empty), a
    dict, a pyarrow Table, a DataFrame or the path of a Parquet file."""
    if metadata is None:
        return {}
    if is_pathlike(metadata):
        table = read_parquet(Path(metadata))
        if table.num_rows != n:
            raise StoreError(f"{metadata} has {table.num_rows} rows but the embeddings have {n}")
        return table_to_dict(table)
    if isinstance(metadata, Mapping):
        out = {}
        for key, value in metadata.items():
            arr = np.asarray(value)
            if arr.ndim != 1 or len(arr) != n:
                raise ValueError(f"{what}: column {key!r} must be 1-D with one value per pair ({n}), "
                                 f"got shape {arr.shape}")
            out[str(key)] = arr
        return out
    return table_to_dict(as_table(metadata, n, what))


class MetadataMixin:
    """``metadata()`` / ``columns`` / ``column(name)`` over an in-memory dict of NumPy
    arrays (``_meta``), named in errors by ``_where``; sources are context managers."""

    _meta: dict[str, np.ndarray]
    _where: str

    def metadata(self) -> dict[str, np.ndarray]:
        """Per-row metadata columns as a dict of 1-D NumPy arrays (empty when none)."""
        return dict(self._meta)

    @property
    def columns(self) -> list[str]:
        """The metadata column names."""
        return list(self._meta)

    def column(self, name: str) -> np.ndarray:
        """One metadata column; ColumnNotFoundError names the available ones."""
        if name not in self._meta:
            raise missing_column(name, list(self._meta), self._where)
        return self._meta[name]

    def close(self) -> None:
        """Release what the source holds (nothing, unless it says otherwise)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
