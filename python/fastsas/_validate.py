"""Argument checks shared by every public function, before any work is done: clear
messages that name the argument and say what to do. One check per kind of argument, so an
option is accepted or refused the same way by every function that takes it (``ks=5`` by
``fs.retrieval``, ``fs.audit`` and ``fs.gap.sweep`` alike; ``chunk_rows``, ``threads``,
... by :func:`check_int`). Depends on NumPy only."""
from __future__ import annotations

import os
from typing import Any

import numpy as np

_FLOATS = (np.float32, np.float64)
# Integer embeddings that retrieval takes (sign/binary codes, int8 quantisation): their values
# are exact in float32, and rows of integers compare by their exact rational cosines.
INTEGER_EMBEDDINGS = (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.bool_))

_threads: int | None = None


def default_threads() -> int:
    if _threads is not None:
        return _threads
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def set_num_threads(threads: int | None) -> None:
    """Set how many worker threads fastsas uses by default.

    Results do not depend on it: reductions run in a fixed block order.

    Parameters
    ----------
    threads : int or None
        A positive number of threads, or None: every core this process may use.

    Raises
    ------
    ValueError
        When `threads` is not a positive integer or None.

    Examples
    --------
    >>> import fastsas as fs
    >>> fs.set_num_threads(1)
    >>> fs.set_num_threads(None)
    """
    global _threads
    _threads = None if threads is None else resolve_threads(threads)


def resolve_threads(threads: int | None) -> int:
    """The worker thread count for a `threads` argument: None means the fastsas default
    (:func:`set_num_threads`, else every core this process may use)."""
    if threads is None:
        return default_threads()
    return check_int(threads, "threads", allow_none=True)


def _int_range(low: int | None, high: int | None) -> str:
    if high is not None:
        return f"an integer in [{low}, {high}]"
    if low == 1:
        return "a positive integer"
    if low == 0:
        return "a non-negative integer"
    return "an integer" if low is None else f"an integer >= {low}"


def check_int(value: Any, name: str, *, low: int | None = 1, high: int | None = None, meaning: str | None = None,
              allow_none: bool = False) -> int:
    """`value` as a Python int in [low, high] (None: unbounded), or ValueError naming `name`.

    bool is refused (True is not a count); NumPy integers are accepted. `meaning` says in a
    few words what the number is ("rows per task"); with `allow_none` the message says None
    is accepted too (the caller handles None itself). Every integer option of fastsas is
    checked here, so the same option is accepted or refused the same way everywhere.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or (low is not None and value < low) or (high is not None and value > high):
        what = _int_range(low, high) + (" or None" if allow_none else "")
        about = f" ({meaning})" if meaning else ""
        raise ValueError(f"{name} must be {what}{about}, got {value!r}")
    return int(value)


def as_embeddings(x: Any, name: str, *, min_rows: int = 2, integers: bool = False) -> np.ndarray:
    """A 2-D float32/float64 array view of `x` (float16 is converted to float32 once; with
    `integers`, int8 / uint8 / bool too: see :func:`computed_dtype`).

    Memory layout is kept as it is (C, Fortran or strided): the core reads any strides.
    """
    if isinstance(x, np.ndarray):
        arr = x
    else:
        if hasattr(x, "__cuda_array_interface__") or type(x).__module__.startswith(("cupy", "torch")):
            if hasattr(x, "detach") and hasattr(x, "cpu"):
                raise TypeError(
                    f"{name} is a torch tensor: pass {name}.detach().cpu().numpy() "
                    "(or a NumPy array) to the CPU backend"
                )
        try:
            arr = np.asarray(x)
        except Exception as exc:  # noqa: BLE001 - report any conversion failure the same way
            raise TypeError(f"{name} must be a 2-D array of floats; could not convert it: {exc}") from exc
    target = computed_dtype(arr.dtype, name, integers=integers)
    if arr.dtype != target:
        arr = arr.astype(target)
    check_matrix_shape(arr.shape, name, min_rows)
    return arr


def computed_dtype(dtype: Any, name: str, array_module: str = "np", *, integers: bool = False) -> np.dtype:
    """The dtype embeddings of `dtype` are computed in (host and device arrays alike), the
    one policy of every input (arrays, files, stores, chunks of a source): float32 and
    float64 as they are, in native byte order (big-endian '>f4' and '>f8' are converted
    once), float16 as float32 (converted once); with `integers` (retrieval only: quantised
    and binary embeddings) also int8 / uint8 / bool as float32, exactly. Anything else is
    refused with a TypeError naming `name` (`array_module` is the prefix of the fix shown).
    A pair of two precisions is computed in float64 (:func:`match_pair`)."""
    dtype = np.dtype(dtype)
    if dtype.type == np.float16 or (integers and dtype in INTEGER_EMBEDDINGS):
        return np.dtype(np.float32)
    if dtype.type in _FLOATS:
        return dtype.newbyteorder("=")
    kind = {"i": "integer", "u": "unsigned integer", "b": "boolean", "c": "complex", "O": "object"}.get(
        dtype.kind, str(dtype))
    also = " (or int8, uint8 or bool: quantised embeddings)" if integers else ""
    raise TypeError(f"{name} must hold float16, float32 or float64 values{also}, got {kind} dtype {dtype}; "
                    f"convert it first, e.g. {name}.astype({array_module}.float32)")


def check_matrix_shape(shape: tuple, name: str, min_rows: int) -> None:
    """(n_samples, dim) with dim >= 1 and n_samples >= min_rows (host and device arrays)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2:
        raise ValueError(
            f"{name} must be 2-D (n_samples, dim), got shape {shape}; "
            "reshape it, e.g. x.reshape(len(x), -1)"
        )
    if shape[1] < 1:
        raise ValueError(f"{name} has no columns (shape {shape})")
    if shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {shape[0]}")


def match_pair(x: Any, y: Any, names: tuple[str, str] = ("images", "texts"), *, paired: bool = True) -> tuple[Any, Any]:
    """The pair rules, for host (NumPy) and device (CuPy) arrays alike: the same dim, the
    same rows when `paired`, and one dtype (mixed precisions are computed in float64)."""
    if paired and x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{names[0]} and {names[1]} must be paired row by row: got {x.shape[0]} and {y.shape[0]} rows"
        )
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must live in the same embedding space: got dims "
            f"{x.shape[1]} and {y.shape[1]}"
        )
    if x.dtype != y.dtype:
        x = x.astype(np.float64, copy=False)
        y = y.astype(np.float64, copy=False)
    return x, y


def as_pair(images: Any, texts: Any, names: tuple[str, str] = ("images", "texts"), *, min_rows: int = 2,
            paired: bool = True, integers: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Validated 2-D float arrays of one dtype (float32 only when both are float32), paired
    row by row unless `paired` is False (retrieval galleries, the two sets of MMD);
    `integers` as :func:`computed_dtype`."""
    x = as_embeddings(images, names[0], min_rows=min_rows, integers=integers)
    y = as_embeddings(texts, names[1], min_rows=min_rows, integers=integers)
    return match_pair(x, y, names, paired=paired)


def is_source(obj: Any) -> bool:
    """True for a paired source: it has ``n``, ``dim``, ``iter_chunks`` and ``arrays`` (the
    interface of :mod:`fastsas.io.sources` and of the embedding store).

    Parameters
    ----------
    obj : object
        Anything.

    Returns
    -------
    bool
        Whether `obj` is a paired source.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsas.io import ArrayPairSource, is_source
    >>> is_source(ArrayPairSource(np.zeros((2, 3)), np.ones((2, 3)))), is_source(np.zeros((2, 3)))
    (True, False)
    """
    return all(hasattr(obj, a) for a in ("n", "dim", "iter_chunks", "arrays"))


def check_topq(topq: Any, name: str = "topq") -> float:
    if isinstance(topq, bool) or not isinstance(topq, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number in (0, 1], got {topq!r}")
    q = float(topq)
    if not (0.0 < q <= 1.0):
        raise ValueError(f"{name} must be in (0, 1] (the top fraction of anchor modes kept), got {q}")
    return q


def check_number_sequence(value: Any, name: str, *, integers: bool, low: float, high: float | None,
                          sequence_of: str, example: str, item: str, item_range: str) -> tuple:
    """A non-empty tuple of distinct numbers in [low, high] (a lone number is a 1-tuple).

    sequence_of: what a valid value is ("positive integers"); example: "(1, 5, 10)";
    item: the word for one element in messages ("k"); item_range: how the bound is said
    (">= 1", "in [0, 1]").
    """
    scalar = (int, np.integer) if integers else (int, float, np.integer, np.floating)
    if isinstance(value, scalar) and not isinstance(value, bool):
        value = (value,)
    usage = f"{name} must be a sequence of {sequence_of} such as {example}, got {value!r}"
    if isinstance(value, (str, bytes)):
        raise TypeError(usage)
    try:
        items = list(value)
    except TypeError:
        raise TypeError(usage) from None
    if not items:
        raise ValueError(f"{name} is empty: give at least one {'cutoff' if integers else item}"
                         f"{'' if integers else ' ' + item_range}, e.g. {name}={example}")
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, scalar):
            held = "integers" if integers else f"numbers {item_range}"
            raise TypeError(f"{name} must hold {held}, got {v!r} in {name}={tuple(items)!r}")
        number = int(v) if integers else float(v)
        if not (number >= low and (high is None or number <= high)):
            shown = tuple(int(i) if integers else float(i) for i in items)
            raise ValueError(f"every {item} in {name} must be {item_range}, got {number} in {name}={shown}")
        out.append(number)
    if len(set(out)) != len(out):
        raise ValueError(f"{name} has repeated values: {tuple(out)}")
    return tuple(out)


def check_ks(ks: Any, n_images: int, n_texts: int) -> tuple[int, ...]:
    """Retrieval cutoffs: distinct positive integers (a lone integer is one cutoff), none
    larger than the smaller gallery (R@k would be trivially 1)."""
    out = check_number_sequence(ks, "ks", integers=True, low=1, high=None, sequence_of="positive integers",
                                example="(1, 5, 10)", item="k", item_range=">= 1")
    gallery = min(n_images, n_texts)
    too_big = [k for k in out if k > gallery]
    if too_big:
        raise ValueError(
            f"ks={tuple(out)} has k larger than the gallery: {too_big} > "
            f"min(n_images={n_images}, n_texts={n_texts}) = {gallery}; R@k would be trivially 1"
        )
    return tuple(out)


def one_per_row(values: Any, name: str, rows: int, *, item: str, per: str, counted: str | None = None) -> np.ndarray:
    """`values` as a 1-D array with exactly one `item` per `per` (e.g. one "label" per
    "pair"); `counted` is the word for the elements when the count is wrong (default
    item + "s")."""
    try:
        arr = np.asarray(values)
    except Exception as exc:  # noqa: BLE001 - report any conversion failure the same way
        raise TypeError(f"{name} must be a 1-D sequence of {item}s, one per {per}: {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one {item} per {per}), got shape {arr.shape}")
    if arr.shape[0] != rows:
        raise ValueError(f"{name} has {arr.shape[0]} {counted or item + 's'} but there are {rows} {per}s; "
                         f"give one {item} per {per}")
    return arr


def check_tile_precision(precision: Any, names: Any) -> str:
    """A tile precision of the CPU engines, one of `names` (the core lists them:
    ``_core.RETRIEVAL_PRECISIONS``), or a ValueError listing them."""
    names = tuple(names)
    if not isinstance(precision, str) or precision not in names:
        raise ValueError(f"precision must be one of {', '.join(map(repr, names))}, got {precision!r}")
    return precision
