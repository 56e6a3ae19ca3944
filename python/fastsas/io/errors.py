"""The errors of reading inputs: a file that is corrupt, truncated or of another format
version (:class:`StoreError`), and a column the input does not have
(:class:`ColumnNotFoundError`). Both are ``ValueError`` subclasses whose message names the
file."""
from __future__ import annotations

from typing import Sequence

__all__ = ["ColumnNotFoundError", "StoreError", "missing_column"]


class StoreError(ValueError):
    """An embedding store or input file is corrupt, truncated, of another format version,
    or does not hold what was asked for. The message names the file.

    Examples
    --------
    >>> from fastsas.io import StoreError
    >>> issubclass(StoreError, ValueError)
    True
    """


class ColumnNotFoundError(StoreError, KeyError):
    """A column (metadata or vector column) that the input does not have; the message
    names it and lists the available ones.

    Parameters
    ----------
    message : str
        The whole message.
    column : str
        The missing column, kept as ``.column``.
    available : sequence of str
        The input's columns, kept as ``.available``.

    Examples
    --------
    >>> from fastsas.io import ColumnNotFoundError
    >>> err = ColumnNotFoundError("x.parquet has no column 'ward'", "ward", ["site"])
    >>> err.column, err.available, str(err)
    ('ward', ['site'], "x.parquet has no column 'ward'")
    """

    def __init__(self, message: str, column: str, available: Sequence[str]):
        super().__init__(message)
        self.column = column
        self.available = list(available)

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def missing_column(name: str, available: Sequence[str], where: str, hint: str = "") -> ColumnNotFoundError:
    """The error for column `name` missing from `where` (a file, or "the metadata")."""
    listed = ", ".join(available) if available else "none"
    return ColumnNotFoundError(f"{where} has no column {name!r}; available columns: {listed}{hint}",
                               name, available)
