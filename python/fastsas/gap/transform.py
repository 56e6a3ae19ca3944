"""The modality-gap shift (docs/definitions.md, "Modality-gap control"): the gap vector of
a pair of arrays, and the shift of whole arrays or of a stream of chunks.

With unit rows ``x̂ = x / ||x||`` and the gap vector ``gap = mean(X̂) - mean(Ŷ)``, the
shift with strength ``lam`` in [0, 1] is::

    x' = normalize(x̂ - (lam / 2) gap)        y' = normalize(ŷ + (lam / 2) gap)

The work is done in float64 blocks of rows, so the scratch memory stays small whatever the
chunk size.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np

from fastsas._badrows import NON_FINITE, SHOWN, ZERO_NORM, BadRowCollector
from fastsas._validate import as_pair

__all__ = ["check_gap", "check_lam", "gap_vector", "out_dtype", "raise_bad_rows", "shift", "shift_chunks",
           "shift_into", "unit_sums", "unpack_pair"]

# Rows per float64 scratch block: bounds the temporary memory of a shift (block x dim x 8
# bytes per modality) whatever the chunk size.
# Rows per float64 scratch block: bounds the temporary memory of a shift (block x dim x 8
# bytes per modality) whatever the chunk size.
_BLOCK_ROWS = 4096
_NAMES = {"x": "images", "y": "texts"}


def check_lam(lam: Any, name: str = "lam") -> float:
    if isinstance(lam, bool) or not isinstance(lam, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number in [0, 1], got {lam!r}")
    v = float(lam)
    if not (0.0 <= v <= 1.0):  # also refuses NaN
        raise ValueError(
            f"{name} must be in [0, 1] (0: unit rows unchanged, 1: centroids coincide before "
            f"re-normalisation), got {v}"
        )
    return v


def check_gap(gap: Any, dim: int | None) -> np.ndarray:
    """A (dim,) float64 copy of a gap vector (dim None: any length >= 1)."""
    try:
        g = np.asarray(gap)
    except Exception as exc:  # noqa: BLE001 - report any conversion failure the same way
        raise TypeError(f"gap must be a 1-D array of floats: {exc}") from exc
    if g.dtype.kind not in "fiu":
        raise TypeError(f"gap must be a 1-D array of floats, got dtype {g.dtype}")
    g = g.astype(np.float64)
    if g.ndim != 1 or g.shape[0] < 1 or (dim is not None and g.shape[0] != dim):
        want = f"({dim},) to match the embeddings' dim" if dim is not None else "(dim,)"
        raise ValueError(
            f"gap must have shape {want}, got shape {g.shape}; "
            "compute it with fs.gap.gap_vector(images, texts)"
        )
    if not np.all(np.isfinite(g)):
        raise ValueError("gap has NaN or Inf entries")
    norm = float(np.linalg.norm(g))
    if norm > 2.0 + 1e-6:
        raise ValueError(
            f"gap has norm {norm:.4g} > 2, so it is not a difference of two means of unit vectors; "
            "compute it from unit rows with fs.gap.gap_vector(images, texts)"
        )
    return g


def _sq_norms(a64: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a64, a64)


def raise_bad_rows(x: np.ndarray, y: np.ndarray, offset: int, suffix: str) -> None:
    """Slow, exact account of the bad rows of (x, y), run only once a block found one.
    Same rules and order as the core: a squared norm (float64) that is not finite (NaN,
    Inf or overflow) first, images before texts; then zero norms."""
    findings = [("x", NON_FINITE), ("y", NON_FINITE), ("x", ZERO_NORM), ("y", ZERO_NORM)]
    bad = BadRowCollector(findings)
    for start in range(0, x.shape[0], _BLOCK_ROWS):
        for side, a in ((0, x), (1, y)):
            with np.errstate(over="ignore", invalid="ignore"):
                sq = _sq_norms(np.asarray(a[start:start + _BLOCK_ROWS], dtype=np.float64))
            bad.add(side, np.flatnonzero(~np.isfinite(sq)), start + offset)
            bad.add(2 + side, np.flatnonzero(sq == 0.0), start + offset)
    bad.raise_if_any(_NAMES, suffix)
    raise AssertionError("fastsas.gap: a block reported a bad row that a rescan did not find")  # pragma: no cover


def _unit(a: np.ndarray) -> np.ndarray | None:
    """float64 unit rows of a block, or None when a row has no direction."""
    # Always a C-ordered copy (normalised in place below): the same bits for any input layout.
    a64 = np.array(a, dtype=np.float64, order="C")
    with np.errstate(over="ignore", invalid="ignore"):
        sq = _sq_norms(a64)
    if not (np.all(np.isfinite(sq)) and np.all(sq > 0.0)):
        return None
    a64 /= np.sqrt(sq)[:, None]
    return a64


def _unit_blocks(x: np.ndarray, y: np.ndarray, offset: int, suffix: str) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(start, x̂ block, ŷ block) in float64 over blocks of rows; bad rows raise, naming them."""
    for start in range(0, x.shape[0], _BLOCK_ROWS):
        xh = _unit(x[start:start + _BLOCK_ROWS])
        yh = _unit(y[start:start + _BLOCK_ROWS])
        if xh is None or yh is None:
            raise_bad_rows(x, y, offset, suffix)
        yield start, xh, yh


def unit_sums(x: np.ndarray, y: np.ndarray, offset: int = 0, suffix: str = "") -> tuple[np.ndarray, np.ndarray]:
    sx = np.zeros(x.shape[1])
    sy = np.zeros(x.shape[1])
    for _, xh, yh in _unit_blocks(x, y, offset, suffix):
        sx += xh.sum(axis=0)
        sy += yh.sum(axis=0)
    return sx, sy


def shift_into(x: np.ndarray, y: np.ndarray, gap: np.ndarray, lam: float, out_x: np.ndarray,
                out_y: np.ndarray, offset: int = 0, suffix: str = "") -> None:
    """Write the shifted unit rows of (x, y) into out_x, out_y (computed in float64)."""
    half = 0.5 * lam * gap
    for start, xh, yh in _unit_blocks(x, y, offset, suffix):
        if lam:
            xh -= half
            yh += half
            for side, block in (("images", xh), ("texts", yh)):
                norms = np.sqrt(_sq_norms(block))
                if not np.all(norms > 0.0):
                    rows = [offset + start + int(r) for r in np.flatnonzero(~(norms > 0.0))[:SHOWN]]
                    raise ValueError(
                        f"{side} rows {rows} have no direction after the shift: x̂ equals (lam/2) gap "
                        f"(lam={lam}, ||gap||={np.linalg.norm(gap):.4g}); use a smaller lam or the "
                        "gap of these data (fs.gap.gap_vector)"
                    )
                block /= norms[:, None]
        stop = start + xh.shape[0]
        out_x[start:stop] = xh
        out_y[start:stop] = yh


def out_dtype(x: np.ndarray) -> np.dtype:
    return np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)


def gap_vector(images: Any, texts: Any) -> np.ndarray:
    """The modality gap ``mean(X̂) - mean(Ŷ)``: the mean unit image row minus the mean unit text row.

    One O(n d) pass in float64 blocks (the unit-row sums ``fs.Moments(d)`` keeps, without
    the O(n d^2) second moments).

    Parameters
    ----------
    images, texts : array_like, shape (n, d)
        float16/32/64 arrays (NumPy or memmap), paired row by row, n >= 2.

    Returns
    -------
    ndarray, shape (d,), float64
        The gap; its norm is at most 2.

    Raises
    ------
    TypeError, ValueError
        For inputs that are not paired float arrays; zero-norm and non-finite rows are
        refused, naming them.

    Examples
    --------
    >>> import fastsas as fs
    >>> x, y = fs.synthetic.paired_embeddings(1000, 16, gap=1.0, seed=0)
    >>> fs.gap.gap_vector(x, y).shape
    (16,)
    """
    x, y = as_pair(images, texts)
    sx, sy = unit_sums(x, y)
    return (sx - sy) / x.shape[0]


def shift(images: Any, texts: Any, lam: float, gap: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Shift paired embeddings toward each other to close the modality gap
    (docs/definitions.md): ``x' = normalize(x̂ - (lam/2) gap)``, ``y' = normalize(ŷ + (lam/2) gap)``.

    Parameters
    ----------
    images, texts : array_like, shape (n, d)
        float16/32/64 arrays, paired row by row, n >= 2; not modified.
    lam : float
        In [0, 1]. 0 returns the unit-normalised rows; 1 makes the centroids of x̂ - gap/2
        and ŷ + gap/2 coincide (before the re-normalisation, which leaves a small residue).
    gap : array_like, shape (d,), or None
        The gap vector; None computes :func:`gap_vector` of the input. Give the gap of a
        reference set (e.g. the training split) to apply the same shift to new data.

    Returns
    -------
    tuple of ndarray
        (images', texts'), (n, d) unit rows: float64 for float64 input, float32 for float32
        or float16 input (computed in float64 blocks and rounded once).

    Raises
    ------
    TypeError, ValueError
        For a bad `lam` or `gap`, inputs that do not pair, zero-norm or non-finite rows, or
        rows the shift leaves without direction.

    Examples
    --------
    >>> import numpy as np, fastsas as fs
    >>> x, y = fs.synthetic.paired_embeddings(500, 16, seed=0, dtype=np.float64)
    >>> xs, ys = fs.gap.shift(x, y, 0.5)
    >>> np.allclose(np.linalg.norm(xs, axis=1), 1.0)
    True
    """
    lam = check_lam(lam)
    x, y = as_pair(images, texts)
    g = gap_vector(x, y) if gap is None else check_gap(gap, x.shape[1])
    dtype = out_dtype(x)
    out_x = np.empty(x.shape, dtype=dtype)
    out_y = np.empty(y.shape, dtype=dtype)
    shift_into(x, y, g, lam, out_x, out_y)
    return out_x, out_y


def unpack_pair(item: Any, i: int) -> tuple[Any, Any]:
    try:
        x, y = item
    except (TypeError, ValueError):
        raise TypeError(
            f"chunks must yield (images_chunk, texts_chunk) pairs; chunk {i} is a {type(item).__name__}"
        ) from None
    return x, y


def shift_chunks(chunks: Iterable[tuple[Any, Any]], gap: Any, lam: float) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Shift a stream of (images_chunk, texts_chunk) pairs with a precomputed gap, one chunk at a
    time: never more than one shifted chunk (plus a small float64 scratch) in memory.

    Parameters
    ----------
    chunks : iterable of (array_like, array_like)
        Pairs of (n_chunk, d) arrays (e.g. :func:`fastsas.io.iter_npy_pairs`).
    gap : array_like, shape (d,)
        The gap vector, e.g. from a first pass (:func:`gap_vector`, or ``fs.Moments(d)`` fed
        the same chunks, then ``.gap_vector()``).
    lam : float
        In [0, 1].

    Yields
    ------
    tuple of ndarray
        (images', texts') per chunk, as :func:`shift` returns them for those rows: new arrays,
        float64 for float64 chunks and float32 otherwise.

    Raises
    ------
    TypeError, ValueError
        `lam` and `gap` at once; a chunk when it is reached (bad rows are numbered from the
        first row of the first chunk).

    Examples
    --------
    >>> import numpy as np, fastsas as fs
    >>> x, y = fs.synthetic.paired_embeddings(1000, 16, seed=0)
    >>> g = fs.gap.gap_vector(x, y)
    >>> parts = list(fs.gap.shift_chunks(((x[i:i + 300], y[i:i + 300]) for i in range(0, 1000, 300)), g, 1.0))
    >>> np.array_equal(np.concatenate([p[0] for p in parts]), fs.gap.shift(x, y, 1.0, gap=g)[0])
    True
    """
    lam = check_lam(lam)
    g = check_gap(gap, None)
    try:
        it = iter(chunks)
    except TypeError:
        raise TypeError(
            f"chunks must be an iterable of (images_chunk, texts_chunk) pairs, got {type(chunks).__name__}"
        ) from None

    def generate() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        offset = 0
        for i, item in enumerate(it):
            x, y = as_pair(*unpack_pair(item, i), names=(f"images (chunk {i})", f"texts (chunk {i})"), min_rows=0)
            if x.shape[1] != g.shape[0]:
                raise ValueError(
                    f"chunk {i} has dim {x.shape[1]} but gap has {g.shape[0]} entries; "
                    "the gap must come from embeddings of the same model"
                )
            dtype = out_dtype(x)
            out_x = np.empty(x.shape, dtype=dtype)
            out_y = np.empty(y.shape, dtype=dtype)
            suffix = " (row numbers count from the first row of the first chunk)" if offset else ""
            shift_into(x, y, g, lam, out_x, out_y, offset, suffix)
            offset += x.shape[0]
            yield out_x, out_y

    return generate()
