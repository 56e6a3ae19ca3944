"""Labels and ids to integer codes: the one encoder of fastsas. Subgroup and period labels
of audits, the class labels of the gap probe, and the ids that are retrieval's ground truth
(in process, in audits and on Dask) are all coded here, so they agree on what is equal.

Rules: values are equal when they are exactly equal, whatever their dtypes: integers of any
width and signedness compare as integers (an int64 id and a uint64 id are equal only when
they are the same integer; nothing goes through float64, where distinct ids above 2**53
would collide), integers and floats compare exactly (3 == 3.0, 2**53 + 1 != 2.0**53),
strings compare as strings and never equal a number or bytes. Numbers and strings are
coded in sorted order of their distinct values; other values (Python objects, mixed kinds)
by Python equality, in sorted order when they sort, else in order of first appearance. A
list mixing kinds ([1, "1"]) keeps each element's kind (NumPy would turn it into strings).
NaN and infinities are refused (a missing value has no class); unhashable values are
refused.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fastsas._badrows import listed_rows
from fastsas._validate import one_per_row

__all__ = ["encode_ids", "encode_labels"]


def _numeric(kind: str) -> bool:
    return kind in "iubf"


def _check_finite(arr: np.ndarray, name: str, item: str) -> None:
    if arr.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            noun = "row" if bad.size == 1 else "rows"
            raise ValueError(f"{name} has NaN or Inf {item}s in {bad.size} {noun}: {listed_rows(bad, bad.size)}; "
                             f"every {item} must be a value (use a string such as 'unknown' for missing ones)")


def _kind_word(kind: str) -> str | None:
    """What a dtype kind holds, for the sides of an id comparison that can never be equal."""
    return {"i": "numbers", "u": "numbers", "b": "numbers", "f": "numbers", "U": "strings", "S": "bytes"}.get(kind)


def _as_array(values: Any, name: str, rows: int, *, item: str, per: str, counted: str | None = None) -> np.ndarray:
    """One value per row, each keeping its own kind: a list or tuple of several Python types
    becomes an object array (np.asarray would turn [1, "1"] into two equal strings, and
    large ints beside floats into colliding floats)."""
    if isinstance(values, (list, tuple)) and len({type(v) for v in values}) > 1:
        arr = np.empty(len(values), dtype=object)
        arr[:] = list(values)
        values = arr
    return one_per_row(values, name, rows, item=item, per=per, counted=counted)


_INT_LIMIT = 2 ** 53  # integers up to this magnitude are exact in float64


def _exact_integers(arrays: Sequence[np.ndarray]) -> tuple[list, np.ndarray]:
    """(sorted distinct values, codes) of integer (and bool) arrays of different dtypes,
    compared as integers: negatives as int64, the rest as uint64, so every value of every
    width and signedness keeps its identity."""
    negatives, non_negatives, neg_at, non_neg_at = [], [], [], []
    offset = 0
    for a in arrays:
        where = np.arange(offset, offset + a.shape[0])
        if a.dtype.kind == "i":
            negative = a < 0
            negatives.append(a[negative].astype(np.int64))
            neg_at.append(where[negative])
            non_negatives.append(a[~negative].astype(np.uint64))
            non_neg_at.append(where[~negative])
        else:
            non_negatives.append(a.astype(np.uint64))
            non_neg_at.append(where)
        offset += a.shape[0]
    codes = np.empty(offset, dtype=np.int32)
    neg_values, neg_codes = np.unique(np.concatenate(negatives or [np.empty(0, np.int64)]), return_inverse=True)
    pos_values, pos_codes = np.unique(np.concatenate(non_negatives), return_inverse=True)
    codes[np.concatenate(neg_at or [np.empty(0, np.int64)])] = neg_codes.reshape(-1)
    codes[np.concatenate(non_neg_at)] = pos_codes.reshape(-1) + len(neg_values)
    return neg_values.tolist() + pos_values.tolist(), codes


def _fits_float64(a: np.ndarray) -> bool:
    """Whether every value of `a` is exactly representable in float64."""
    if a.dtype.kind == "f" or a.dtype.kind == "b" or a.shape[0] == 0:
        return True
    return bool(-_INT_LIMIT <= int(a.min()) and int(a.max()) <= _INT_LIMIT)


def _encode(parts: Sequence[tuple[np.ndarray, str]]) -> tuple[list, list[np.ndarray]]:
    """(distinct values as Python values, one int32 code array per part), coded jointly:
    equal values in any part get the same code (exact equality, see the module docstring)."""
    arrays = [a for a, _ in parts]
    kinds = {a.dtype.kind for a in arrays}
    numeric = all(_numeric(k) for k in kinds)
    joined = None
    if (numeric and len({a.dtype for a in arrays}) == 1) or (len(kinds) == 1 and kinds <= {"U", "S"}):
        joined = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]  # one dtype, or strings of one kind
    elif numeric and "f" in kinds and all(_fits_float64(a) for a in arrays):
        joined = np.concatenate([a.astype(np.float64) for a in arrays])  # every value exact in float64
    if joined is not None:
        uniques, inverse = np.unique(joined, return_inverse=True)
        values = uniques.tolist()
        codes = inverse.reshape(-1).astype(np.int32)
    elif numeric and "f" not in kinds:  # integers of different dtypes
        values, codes = _exact_integers(arrays)
    else:  # objects, mixed kinds, or floats beside integers beyond 2**53: Python equality (exact)
        table: dict[Any, int] = {}
        first = []
        for arr, name in parts:
            codes_part = np.empty(arr.shape[0], dtype=np.int32)
            for i, v in enumerate(arr.tolist()):
                try:
                    codes_part[i] = table.setdefault(v, len(table))
                except TypeError:
                    raise TypeError(f"{name}[{i}] = {v!r} is not hashable; ids and labels must be hashable "
                                    "values") from None
            first.append(codes_part)
        values = list(table)
        try:
            order = sorted(range(len(values)), key=lambda c: values[c])
        except TypeError:  # values of kinds that do not compare: first appearance
            order = list(range(len(values)))
        rank = np.empty(len(values), dtype=np.int32)
        rank[order] = np.arange(len(values), dtype=np.int32)
        values = [values[c] for c in order]
        codes = np.concatenate([rank[c] for c in first]) if first else np.empty(0, dtype=np.int32)
    out, start = [], 0
    for arr, _ in parts:
        out.append(codes[start:start + arr.shape[0]])
        start += arr.shape[0]
    return values, out


def encode_labels(labels: Any, name: str, rows: int, *, item: str = "label", per: str = "pair",
                  counted: str | None = None) -> tuple[list, np.ndarray]:
    """(classes, codes): the distinct labels as Python values, and the int32 code of each row
    (``classes[codes[i]]`` is row i's label).

    `name` is the argument in messages; the labels must be 1-D with one `item` per `per`
    (`counted`: the word for the elements when the count is wrong).
    """
    arr = _as_array(labels, name, rows, item=item, per=per, counted=counted)
    _check_finite(arr, name, item)
    classes, (codes,) = _encode([(arr, name)])
    return classes, codes


def encode_ids(image_ids: Any, text_ids: Any, n_images: int, n_texts: int) -> tuple[np.ndarray, np.ndarray]:
    """int32 codes of the image and text ids, coded jointly: an image and a text match when
    their codes are equal (exact equality, whatever the dtypes: see the module docstring).
    Ids may be ints, strings or any hashable values; numbers on one side and strings on the
    other are refused (they could never match)."""
    a = _as_array(image_ids, "image_ids", n_images, item="id", per="image row")
    b = _as_array(text_ids, "text_ids", n_texts, item="id", per="text row")
    _check_finite(a, "image_ids", "id")
    _check_finite(b, "text_ids", "id")
    kinds = {_kind_word(a.dtype.kind), _kind_word(b.dtype.kind)}
    if len(kinds) == 2 and None not in kinds:
        raise TypeError(f"image_ids hold {_kind_word(a.dtype.kind)} ({a.dtype}) and text_ids hold "
                        f"{_kind_word(b.dtype.kind)} ({b.dtype}): ids of different kinds never match; give both "
                        "sides the same kind (e.g. image_ids.astype(str) and text_ids.astype(str))")
    _, (icodes, tcodes) = _encode([(a, "image_ids"), (b, "text_ids")])
    return icodes, tcodes
