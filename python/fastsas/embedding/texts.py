"""Reports and captions: a CSV or Parquet table with an id column and a text column, or a
folder of ``.txt`` files (the id is the file name without ``.txt``). One text per id:
several reports of a study are joined by the user before embedding."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ID_COLUMNS", "TEXT_COLUMNS", "pick_column", "read_table", "read_texts"]

ID_COLUMNS = ("id", "study_id")  # tried in this order when id_column is not given
TEXT_COLUMNS = ("text", "report", "caption")


def pick_column(columns: list[str], wanted: str | None, defaults: tuple[str, ...], option: str, path: Path) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise ValueError(f"{option}={wanted!r}: {path} has no such column (columns: {', '.join(columns)})")
        return wanted
    for name in defaults:
        if name in columns:
            return name
    raise ValueError(f"{path} has none of the columns {', '.join(defaults)}; name its column with {option} "
                     f"(columns: {', '.join(columns)})")


def read_table(path: Path):
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet

    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pa.parquet.read_table(path)
        # Every column read as a string: an id "00123" must not become the number 123.
        names = pa.csv.open_csv(path).schema.names
        convert = pa.csv.ConvertOptions(column_types={n: pa.string() for n in names}, strings_can_be_null=False)
        return pa.csv.read_csv(path, convert_options=convert)
    except (OSError, pa.ArrowException) as exc:
        raise ValueError(f"texts: {path} is unreadable as {'Parquet' if path.suffix.lower() != '.csv' else 'CSV'} "
                         f"({exc})") from None


def _as_strings(values: list, what: str, path: Path) -> list[str]:
    out = []
    for i, v in enumerate(values):
        if v is None:
            raise ValueError(f"texts: {path} has an empty {what} in row {i}; every row needs one")
        out.append(str(v))
    return out


def _check_unique(ids: list[str], path: Path) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"texts: id {i!r} appears more than once in {path}; give one text per id "
                             "(join a study's reports into one text)")
        seen.add(i)


def _read_folder(path: Path) -> dict[str, str]:
    files = sorted(p for p in path.rglob("*.txt") if p.is_file())
    if not files:
        raise ValueError(f"texts: {path} holds no .txt files; give a folder of <id>.txt reports or a CSV/Parquet "
                         "table")
    ids = [p.stem for p in files]
    _check_unique(ids, path)
    return {i: p.read_text(encoding="utf-8", errors="replace") for i, p in zip(ids, files)}


def read_texts(path: str | os.PathLike, id_column: str | None = None,
               text_column: str | None = None) -> tuple[dict[str, str], str]:
    """The texts of an archive as {id: text} (ids as strings), and the id column's name.

    Parameters
    ----------
    path : str or os.PathLike
        A CSV or Parquet table (every CSV column is read as text: an id "00123" stays a
        string), or a folder of ``<id>.txt`` files.
    id_column, text_column : str or None
        The columns (default: id or study_id / text, report or caption).

    Returns
    -------
    tuple
        ({id: text}, the id column's name: "id" for a folder unless `id_column` names another).

    Raises
    ------
    FileNotFoundError
        When `path` does not exist.
    ValueError
        For a missing column, an empty id, or an id that appears twice.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from fastsas.embedding import read_texts
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "reports.csv"
    >>> _ = path.write_text("study_id,report\\n007,no acute findings\\n")
    >>> read_texts(path)
    ({'007': 'no acute findings'}, 'study_id')
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"texts: {path}: no such file or folder")
    if path.is_dir():
        return _read_folder(path), id_column or "id"
    if path.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise ValueError(f"texts: {path} is not a .csv or .parquet table, nor a folder of .txt files")
    table = read_table(path)
    columns = list(table.column_names)
    id_name = pick_column(columns, id_column, ID_COLUMNS, "id_column", path)
    text_name = pick_column(columns, text_column, TEXT_COLUMNS, "text_column", path)
    if id_name == text_name:
        raise ValueError(f"texts: the id column and the text column are both {id_name!r}")
    ids = _as_strings(table.column(id_name).to_pylist(), "id", path)
    texts = _as_strings([("" if v is None else v) for v in table.column(text_name).to_pylist()], "text", path)
    _check_unique(ids, path)
    return dict(zip(ids, texts)), id_name
