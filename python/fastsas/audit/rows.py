"""Access to an audit's rows after its pass (:class:`ArchiveRows`): the passes that need the
merged moments first (the mismatch statistic, the permuted-pairing chance level) read the
rows again through it, in order, chunk by chunk, or gather the rows of a few units."""
from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np

from fastsas._validate import computed_dtype

__all__ = ["ArchiveRows"]


class ArchiveRows:
    """The images and texts of an archive, read again after the pass.

    Parameters
    ----------
    images, texts : array_like
        Anything sliced by rows: NumPy arrays, memory maps (a store's ``arrays()``), Dask
        arrays.
    materialise : callable or None
        Turns a slice into a NumPy array (``np.asarray`` by default; ``lambda a:
        a.compute()`` for Dask).

    Examples
    --------
    >>> import numpy as np
    >>> from fastsas.audit.rows import ArchiveRows
    >>> rows = ArchiveRows(np.arange(12.0).reshape(6, 2), np.ones((6, 2)))
    >>> [start for start, _, _ in rows.chunks(4)], rows.images(np.array([5, 0])).tolist()
    ([0, 4], [[10.0, 11.0], [0.0, 1.0]])
    """

    def __init__(self, images: Any, texts: Any, materialise: Callable[[Any], np.ndarray] | None = None):
        self._x, self._y = images, texts
        # The one dtype policy of every input, as in the pass: big-endian to native order,
        # float16 as float32, two precisions in float64.
        one = [computed_dtype(a.dtype, name) for a, name in ((images, "images"), (texts, "texts"))]
        self.dtype = one[0] if one[0] == one[1] else np.dtype(np.float64)
        get = materialise or np.asarray
        self._get = lambda a: np.asarray(get(a)).astype(self.dtype, copy=False)
        self.n = int(images.shape[0])
        self.dim = int(images.shape[1])

    def chunks(self, chunk_rows: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(first row, images, texts) of consecutive chunks of `chunk_rows` rows."""
        for start in range(0, self.n, chunk_rows):
            stop = min(self.n, start + chunk_rows)
            yield start, self._get(self._x[start:stop]), self._get(self._y[start:stop])

    def image_rows(self, start: int, stop: int) -> np.ndarray:
        """Image rows [start, stop)."""
        return self._get(self._x[start:stop])

    def text_rows(self, start: int, stop: int) -> np.ndarray:
        """Text rows [start, stop)."""
        return self._get(self._y[start:stop])

    def images(self, rows: np.ndarray) -> np.ndarray:
        """The image rows `rows` (any order), read in ascending order."""
        return self._gather(self._x, rows)

    def texts(self, rows: np.ndarray) -> np.ndarray:
        """The text rows `rows` (any order), read in ascending order."""
        return self._gather(self._y, rows)

    def _gather(self, a: Any, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return np.empty((0, self.dim), dtype=np.float64)
        unique, inverse = np.unique(rows, return_inverse=True)
        return self._get(a[unique])[inverse.reshape(-1)]
