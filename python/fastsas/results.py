"""The result types of the one-call metrics: a number or a dict of numbers that also says
which engine computed it (``.backend``: "cpu" or "cuda").

``.backend`` (and a retrieval's ``.screen``) is an attribute, not a key, so code that treats
every value as a number (reports, tables, ``float(...)``, the alignment dict's keys) sees
exactly the plain float or dict; both pickle with their attributes.

Results of the larger computations are their own documented types:
:class:`fastsas.audit.AuditResult`, :class:`fastsas.gap.GapSweep` (and :class:`~fastsas.gap.GapPoint`),
:class:`fastsas.moments.SpectralProfile`, :class:`fastsas.embedding.EmbedResult`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["Metric", "Metrics", "to_python"]


class Metric(float):
    """A metric's value (a ``float``) that also says which backend computed it.

    Parameters
    ----------
    value : float
        The value.
    backend : str, default "cpu"
        "cpu" or "cuda", kept as ``.backend``.

    Examples
    --------
    >>> import fastsas as fs
    >>> x, y = fs.synthetic.paired_embeddings(500, 16, seed=0)
    >>> value = fs.sas(x, y, backend="cpu")
    >>> isinstance(value, float), value.backend
    (True, 'cpu')
    """

    backend: str

    def __new__(cls, value: float, backend: str = "cpu") -> "Metric":
        out = super().__new__(cls, value)
        out.backend = backend
        return out

    def __reduce__(self):
        return (Metric, (float(self), self.backend))


class Metrics(dict):
    """A dict of metrics (the keys of the function that returned it) that also says which
    backend computed them and, for a retrieval, how its similarity tiles were computed;
    ``dict(result)`` and JSON see the keys only.

    Parameters
    ----------
    values : mapping or iterable of pairs
        The metrics.
    backend : str, default "cpu"
        "cpu" or "cuda", kept as ``.backend``.
    screen : dict or None, default None
        Kept as ``.screen``: for :func:`fastsas.retrieval`, ``precision`` (the tile precision
        that ran: "float32", "bfloat16", "int8" on the CPU, the GPU's tile format on the GPU),
        ``screened`` (tile entries, n_images x n_texts) and ``rechecked`` (entries inside the
        proven band, re-decided exactly; the band occupancy is rechecked / screened). None
        for results computed without tiles.

    Examples
    --------
    >>> import fastsas as fs
    >>> x, y = fs.synthetic.paired_embeddings(500, 16, seed=0)
    >>> result = fs.alignment(x, y, backend="cpu")
    >>> result.backend, round(result["sas_i2t"], 3) == round(fs.sas(x, y), 3), result.screen
    ('cpu', True, None)
    >>> r = fs.retrieval(x, y, backend="cpu")
    >>> r.screen["screened"], 0 <= r.screen["rechecked"] <= r.screen["screened"]
    (250000, True)
    """

    backend: str
    screen: dict | None

    def __init__(self, values: Any = (), backend: str = "cpu", screen: Mapping[str, Any] | None = None):
        super().__init__(values)
        self.backend = backend
        self.screen = None if screen is None else dict(screen)

    def __reduce__(self):
        return (Metrics, (dict(self), self.backend, self.screen))


def to_python(value: Any) -> Any:
    """A copy of `value` in plain Python types: NumPy arrays become lists, NumPy scalars
    Python numbers, tuples lists, mapping keys strings. Floats are kept as they are (NaN
    stays NaN): this is the form of ``to_dict()`` results.

    Parameters
    ----------
    value : any
        Nested dicts, lists, tuples, NumPy arrays and scalars, Python scalars.

    Returns
    -------
    object
        The same structure in Python types.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsas.results import to_python
    >>> to_python({"a": np.arange(3), 1: (np.float32(0.5), None)})
    {'a': [0, 1, 2], '1': [0.5, None]}
    """
    if isinstance(value, Mapping):
        return {str(k): to_python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_python(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
