"""The fingerprint of an input: a SHA-256 over the shapes, dtypes and bytes of a pair of
arrays, streamed in chunks so a memory-mapped archive is never loaded whole. Reports record
it, so a reader can tell which data a report was computed from."""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from fastsas._validate import check_int

__all__ = ["fingerprint_arrays"]


def fingerprint_arrays(images: Any, texts: Any, chunk_rows: int = 65536) -> str:
    """SHA-256 of a pair of arrays: each array's name, shape and dtype, then its bytes
    (C order, little-endian), read `chunk_rows` rows at a time.

    The result depends only on shapes, dtypes and values: not on `chunk_rows`, the memory
    layout or the byte order of the input.

    Parameters
    ----------
    images, texts : array_like
        NumPy arrays or memmaps (any numeric dtype, any shape).
    chunk_rows : int, default 65536
        Rows hashed at a time.

    Returns
    -------
    str
        ``"sha256:<64 hex digits>"``.

    Raises
    ------
    TypeError
        When an input is not a numeric array.
    ValueError
        When `chunk_rows` is not a positive integer.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsas.io import fingerprint_arrays
    >>> x = np.zeros((4, 3), np.float32)
    >>> fingerprint_arrays(x, x) == fingerprint_arrays(x, x.copy(), chunk_rows=1)
    True
    """
    chunk_rows = check_int(chunk_rows, "chunk_rows")
    h = hashlib.sha256(b"fastsas-fingerprint-v1\n")
    for name, value in (("images", images), ("texts", texts)):
        try:
            arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        except Exception as exc:  # noqa: BLE001 - name the argument whatever went wrong
            raise TypeError(f"{name} must be an array (NumPy array or memmap), got {type(value).__name__}: {exc}") \
                from None
        if arr.dtype.hasobject:
            raise TypeError(f"{name} has dtype object; give a numeric array")
        if arr.ndim == 0:
            arr = arr.reshape(1)
        canonical = arr.dtype.newbyteorder("<") if arr.dtype.byteorder in (">", "<", "=") else arr.dtype
        h.update(f"{name} shape={tuple(int(s) for s in arr.shape)} dtype={canonical.str}\n".encode())
        for start in range(0, arr.shape[0], chunk_rows):
            block = np.ascontiguousarray(arr[start:start + chunk_rows], dtype=canonical)
            h.update(memoryview(block).cast("B"))
    return "sha256:" + h.hexdigest()
