"""Writing a file so that readers see the old file or the new one, never half of one:
the data goes to a temporary name in the same folder, is fsynced, renamed over the target,
and the folder is fsynced. The embedding store, its manifests, the skip log of
``fastsas embed`` and every report file are written this way.

Text is written as UTF-8; a lone surrogate (how Python holds the bytes of a file name that
is not UTF-8) is written as its backslash escape (``\\udcff``) rather than failing the
write: in a JSON string that escape reads back as the same character. :func:`printable`
does the same to text handed to other renderers (figure labels)."""
from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Callable, Union

from fastsas.io.strict_json import dumps

__all__ = ["PARTIAL_SUFFIX", "fsync_dir", "printable", "write_atomic", "write_json"]

# Suffix of a file being written: never read, removed when a store resumes.
PARTIAL_SUFFIX = ".partial"

Data = Union[bytes, bytearray, memoryview, str, Callable[[Path], Any]]


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory, so that a rename inside it survives a crash (a no-op where the
    platform or the file system does not allow it).

    Parameters
    ----------
    path : str or os.PathLike
        The directory.

    Examples
    --------
    >>> import tempfile
    >>> from fastsas.io import fsync_dir
    >>> fsync_dir(tempfile.mkdtemp())
    """
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


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, data: Data) -> None:
    """Write `data` to `path` atomically (temporary name, fsync, rename, fsync of the folder).

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; its folder must exist.
    data : bytes-like, str or callable
        The content: bytes, a str (written as UTF-8, lone surrogates as backslash escapes),
        or a callable that writes the file at
        the temporary path it is given (e.g. ``lambda p: pyarrow.parquet.write_table(t, p)``).

    Raises
    ------
    OSError
        When the file cannot be written; the temporary file is removed.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from fastsas.io import write_atomic
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "note.txt"
    >>> write_atomic(target, "hello\\n")
    >>> target.read_text()
    'hello\\n'
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}{PARTIAL_SUFFIX}")
    try:
        if callable(data):
            data(tmp)
            _fsync_file(tmp)
        else:
            payload = data.encode("utf-8", "backslashreplace") if isinstance(data, str) else data
            with open(tmp, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def printable(value: Any) -> Any:
    r"""`value` with every string in it (in dicts, lists and tuples too) made encodable:
    lone surrogates become their backslash escapes, everything else is unchanged.

    Parameters
    ----------
    value : any
        A string, or a container of them.

    Returns
    -------
    object
        The same structure; other values are returned as they are.

    Examples
    --------
    >>> from fastsas.io import printable
    >>> printable({"label": "ward" + chr(0xDCFF), "n": 3})
    {'label': 'ward\\udcff', 'n': 3}
    """
    if isinstance(value, str):
        return value if value.isascii() else value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, Mapping):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [printable(v) for v in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(printable(v) for v in value)
    return value


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as strict JSON (:func:`fastsas.io.strict_json.dumps`, two-space indent,
    a final newline) with :func:`write_atomic`.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write.
    obj : dict or list
        The data; NaN and infinities are written as null.

    Examples
    --------
    >>> import tempfile, pathlib, json
    >>> from fastsas.io import write_json
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "m.json"
    >>> write_json(target, {"n": 3})
    >>> json.loads(target.read_text())
    {'n': 3}
    """
    write_atomic(path, dumps(obj, indent=2) + "\n")
