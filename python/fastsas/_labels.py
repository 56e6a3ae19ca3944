"""Labels and ids to integer codes: the one encoder of fastsas. Subgroup and period labels
of audits, the class labels of the gap probe, and the ids that are retrieval's ground truth
(in process, in audits and on Dask) are all coded here, so they agree on what is equal.

Rules: numbers (int, unsigned, bool, float) and strings are coded in sorted order of their
distinct values; other values (Python objects, mixed kinds) by Python equality, in sorted
order when they sort, else in order of first appearance; NaN and infinities are refused (a
missing value has no class); unhashable values are refused.
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


def _encode(parts: Sequence[tuple[np.ndarray, str]]) -> tuple[list, list[np.ndarray]]:
    """(distinct values as Python values, one int32 code array per part), coded jointly:
    equal values in any part get the same code."""
    kinds = {a.dtype.kind for a, _ in parts}
    if all(_numeric(k) for k in kinds) or (len(kinds) == 1 and kinds <= {"U", "S"}):
        joined = np.concatenate([a for a, _ in parts]) if len(parts) > 1 else parts[0][0]
        uniques, inverse = np.unique(joined, return_inverse=True)
        values = uniques.tolist()
        codes = inverse.reshape(-1).astype(np.int32)
    else:  # objects or mixed kinds: Python equality
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
    arr = one_per_row(labels, name, rows, item=item, per=per, counted=counted)
    _check_finite(arr, name, item)
    classes, (codes,) = _encode([(arr, name)])
    return classes, codes


def encode_ids(image_ids: Any, text_ids: Any, n_images: int, n_texts: int) -> tuple[np.ndarray, np.ndarray]:
    """int32 codes of the image and text ids, coded jointly: an image and a text match when
    their codes are equal. Ids may be ints, strings or any hashable values."""
    a = one_per_row(image_ids, "image_ids", n_images, item="id", per="image row")
    b = one_per_row(text_ids, "text_ids", n_texts, item="id", per="text row")
    _check_finite(a, "image_ids", "id")
    _check_finite(b, "text_ids", "id")
    _, (icodes, tcodes) = _encode([(a, "image_ids"), (b, "text_ids")])
    return icodes, tcodes
