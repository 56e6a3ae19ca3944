"""Argument checks shared by every public function: clear messages that name the
argument and say what to do."""
from __future__ import annotations

import os
from typing import Any

import numpy as np

_FLOATS = (np.float32, np.float64)

_threads: int | None = None


def default_threads() -> int:
    if _threads is not None:
        return _threads
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def set_num_threads(threads: int | None) -> None:
    """Set how many worker threads fastsas uses (None: every core this process may use).

    Results do not depend on it: reductions run in a fixed block order.
    """
    global _threads
    _threads = None if threads is None else resolve_threads(threads)


def resolve_threads(threads: int | None) -> int:
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    return int(threads)


def as_embeddings(x: Any, name: str, *, min_rows: int = 2) -> np.ndarray:
    """A 2-D float32/float64 array view of `x` (float16 is converted to float32 once).

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
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    elif arr.dtype.type not in _FLOATS:
        kind = {"i": "integer", "u": "unsigned integer", "b": "boolean", "c": "complex", "O": "object"}.get(
            arr.dtype.kind, str(arr.dtype)
        )
        raise TypeError(
            f"{name} must hold float16, float32 or float64 values, got {kind} dtype {arr.dtype}; "
            f"convert it first, e.g. {name}.astype(np.float32)"
        )
    check_matrix_shape(arr.shape, name, min_rows)
    return arr


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


def as_pair(
    images: Any, texts: Any, names: tuple[str, str] = ("images", "texts"), *, min_rows: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Validated paired arrays of one dtype (float32 only when both are float32)."""
    x = as_embeddings(images, names[0], min_rows=min_rows)
    y = as_embeddings(texts, names[1], min_rows=min_rows)
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{names[0]} and {names[1]} must be paired row by row: got {x.shape[0]} and {y.shape[0]} rows"
        )
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must live in the same embedding space: got dims "
            f"{x.shape[1]} and {y.shape[1]}"
        )
    if x.dtype != y.dtype:  # mixed precisions are computed in float64
        x = x.astype(np.float64, copy=False)
        y = y.astype(np.float64, copy=False)
    return x, y


def check_topq(topq: Any, name: str = "topq") -> float:
    if isinstance(topq, bool) or not isinstance(topq, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number in (0, 1], got {topq!r}")
    q = float(topq)
    if not (0.0 < q <= 1.0):
        raise ValueError(f"{name} must be in (0, 1] (the top fraction of anchor modes kept), got {q}")
    return q


def rename_bad_rows(exc: ValueError, names: dict[str, str], *, offset: int = 0, suffix: str = "") -> ValueError:
    """Re-word a core BadRowsError with the caller's argument names and row numbering."""
    name = names.get(getattr(exc, "input", ""), "input")
    rows = [r + offset for r in exc.rows]
    listed = ", ".join(str(r) for r in rows) + (", ..." if exc.total > len(rows) else "")
    noun = "row" if exc.total == 1 else "rows"
    if "non-finite" in exc.problem:
        fix = "drop or repair those rows before computing alignment metrics"
    elif "too large" in exc.problem or "too small" in exc.problem:
        fix = "rescale the embeddings (multiply them by a power of ten) or drop those rows"
    else:
        fix = "remove those rows (an embedding of all zeros usually means a failed encoder call)"
    err = ValueError(f"{name} has {exc.problem} in {exc.total} {noun}: {listed}{suffix}; {fix}")
    err.rows = rows  # type: ignore[attr-defined]
    err.input = name  # type: ignore[attr-defined]
    return err


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


# -- backends -----------------------------------------------------------------------------------
BACKENDS = ("auto", "cpu", "cuda")


def resolve_backend(backend: Any, *inputs: Any) -> str:
    """"cpu" or "cuda" for a public function's ``backend`` argument.

    "auto": the GPU when CuPy sees one (or when an input already lives on the GPU), else the
    CPU, silently. "cuda" without a usable GPU raises RuntimeError saying why and how to
    install the GPU extra. Importing CuPy happens here, on first use, never at import time.
    """
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if backend == "cpu":
        return "cpu"
    from fastsas import gpu

    if gpu.available():
        return "cuda"
    if backend == "cuda":
        raise RuntimeError(
            f"backend='cuda' needs a CUDA GPU visible to CuPy, and none is usable: {gpu.unavailable_reason()}. "
            'Install the GPU extra with pip install "fastsas[gpu]" (CuPy for CUDA 13) on a machine with an '
            "NVIDIA driver, or use backend='cpu'"
        )
    from fastsas.gpu._arrays import is_device_array

    for x in inputs:
        if is_device_array(x):
            raise RuntimeError(f"an input lives on a CUDA device but the GPU backend is not usable: "
                               f"{gpu.unavailable_reason()}")
    return "cpu"


class Result(dict):
    """A result dict that also says which backend produced it (``.backend``: "cpu" or
    "cuda"). An attribute, not a key, so code that treats every value as a number (reports,
    tables, float conversions of the alignment dict) is unaffected; ``dict(result)`` and
    JSON see the same keys as before."""

    backend: str

    def __init__(self, values: Any = (), backend: str = "cpu"):
        super().__init__(values)
        self.backend = backend

    def __reduce__(self):
        return (Result, (dict(self), self.backend))


class Value(float):
    """A float result that also says which backend produced it (``.backend``)."""

    backend: str

    def __new__(cls, value: float, backend: str = "cpu") -> "Value":
        out = super().__new__(cls, value)
        out.backend = backend
        return out

    def __reduce__(self):
        return (Value, (float(self), self.backend))
