"""The one JSON encoder of fastsas: strict JSON (RFC 8259), so NaN and infinities are
written as ``null``, never as the bare ``NaN`` / ``Infinity`` that other parsers refuse.
Every JSON file fastsas writes goes through :func:`dumps`: report.json, compare.json,
gap.json, ``fastsas align --json``, the embedding store's manifests."""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fastsas.results import to_python  # noqa: F401 - the plain-data half of the encoder

__all__ = ["dumps", "jsonable", "to_python"]


def jsonable(value: Any) -> Any:
    """A strict-JSON copy of `value`: :func:`to_python`, and NaN / infinities become
    ``None``; paths become strings; objects with ``to_dict()`` are converted through it;
    anything else unknown becomes its ``str``.

    Parameters
    ----------
    value : any
        What is to be written.

    Returns
    -------
    object
        Dicts, lists, str, int, finite float, bool and None only.

    Examples
    --------
    >>> import numpy as np

from fastsas.results import to_python  # noqa: F401 - the plain-data half of the encoder
    >>> from fastsas.io.strict_json import jsonable
    >>> jsonable({"x": np.array([1.0, np.nan]), "y": (float("inf"),)})
    {'x': [1.0, None], 'y': [None]}
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_dict"):
        return jsonable(value.to_dict())
    return str(value)


def dumps(value: Any, *, indent: int | None = 2, sort_keys: bool = False) -> str:
    """`value` as strict JSON text (UTF-8 characters kept, not escaped).

    Parameters
    ----------
    value : any
        Converted with :func:`jsonable` first.
    indent : int or None, default 2
        Spaces per level, or None for one line.
    sort_keys : bool, default False
        Sort the keys of every object.

    Returns
    -------
    str
        The JSON text (no trailing newline).

    Examples
    --------
    >>> from fastsas.io.strict_json import dumps
    >>> dumps({"sas": float("nan"), "n": 2}, indent=None)
    '{"sas": null, "n": 2}'
    """
    return json.dumps(jsonable(value), indent=indent, ensure_ascii=False, allow_nan=False, sort_keys=sort_keys)
