"""Bad rows (NaN or Inf; all zeros where a metric normalises; values too large or too small
for float64 second moments or normalisation): the one builder of their messages, with the
wording and the number of rows listed taken from the C++ core, so a bad row reads the same
whichever engine (CPU, GPU, Dask, a Python pass) found it::

    images has non-finite values (NaN or Inf) in 2 rows: 3, 17; drop or repair those rows ...
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from fastsas import _core

__all__ = ["BadRowCollector", "BadRows", "NON_FINITE", "SHOWN", "TOO_LARGE", "TOO_LARGE_TO_NORMALISE", "TOO_SMALL",
           "ZERO_NORM", "bad_rows_error", "listed_rows", "refuse_non_finite_rows"]

NON_FINITE: str = _core.NON_FINITE_ROWS  # "non-finite values (NaN or Inf)"
ZERO_NORM: str = _core.ZERO_NORM_ROWS  # "zero-norm rows (no direction to normalise)"
TOO_LARGE: str = _core.TOO_LARGE_ROWS  # "values too large for float64 second moments (...)"
TOO_SMALL: str = _core.TOO_SMALL_ROWS  # "values too small for float64 second moments (...)"
TOO_LARGE_TO_NORMALISE: str = _core.TOO_LARGE_TO_NORMALISE_ROWS  # "values too large to normalise in float64 (...)"
SHOWN: int = _core.BAD_ROWS_SHOWN  # rows listed in a message

# What to do about each problem (the zero-norm fix for any other).
_RESCALE_FIX = "rescale the embeddings (multiply them by a power of ten) or drop those rows"
_FIXES = {
    NON_FINITE: "drop or repair those rows before computing alignment metrics",
    TOO_LARGE: _RESCALE_FIX,
    TOO_SMALL: _RESCALE_FIX,
    TOO_LARGE_TO_NORMALISE: _RESCALE_FIX,
}
_ZERO_NORM_FIX = "remove those rows (an embedding of all zeros usually means a failed encoder call)"


class BadRows(ValueError):
    """A finding in the shape of the core's ``BadRowsError``: `input` ("x" or "y"), `problem`
    (:data:`NON_FINITE`, :data:`ZERO_NORM`, :data:`TOO_LARGE`, ...), the first rows (at most :data:`SHOWN`) and the
    total; raised by the Python and GPU passes, re-worded by :func:`bad_rows_error`."""

    def __init__(self, input: str, problem: str, rows: Sequence[int], total: int):
        super().__init__(f"{problem} in {total} rows")
        self.input, self.problem, self.rows, self.total = input, problem, list(rows), int(total)


def listed_rows(rows: Iterable[int], total: int) -> str:
    """The rows of a message: the first :data:`SHOWN`, then ", ..." when there are more."""
    shown = [int(r) for r in rows][:SHOWN]
    return ", ".join(str(r) for r in shown) + (", ..." if total > len(shown) else "")


def bad_rows_error(exc: Any, names: Mapping[str, str], *, offset: int = 0, suffix: str = "",
                   fix: str | None = None) -> ValueError:
    """The ValueError a user sees for a finding (the core's ``BadRowsError`` or a
    :class:`BadRows`): named with the caller's argument names (`names` maps "x"/"y" to
    them), rows shifted by `offset` (the chunk's first row), `suffix` appended to the rows,
    and `fix` (what to do; by default the metrics' advice for the problem). The error keeps
    ``.rows`` (shifted) and ``.input`` (the argument name)."""
    name = names.get(getattr(exc, "input", ""), "input")
    rows = [int(r) + offset for r in exc.rows]
    noun = "row" if exc.total == 1 else "rows"
    if fix is None:
        fix = _FIXES.get(exc.problem, _ZERO_NORM_FIX)
    err = ValueError(f"{name} has {exc.problem} in {exc.total} {noun}: {listed_rows(rows, exc.total)}{suffix}; {fix}")
    err.rows = rows  # type: ignore[attr-defined]
    err.input = name  # type: ignore[attr-defined]
    return err


class BadRowCollector:
    """Gathers per-row findings chunk by chunk, keeping the first :data:`SHOWN` rows and
    the count of each; :meth:`raise_if_any` raises the first finding in the order given
    (the order the CPU engine reports them in)."""

    def __init__(self, findings: Sequence[tuple[str, str]]):
        self._findings = list(findings)
        self._rows: list[list[int]] = [[] for _ in self._findings]
        self._total = [0] * len(self._findings)

    def add(self, which: int, rows: np.ndarray, offset: int = 0) -> None:
        """Add the rows (ascending, relative to `offset`) of finding number `which`."""
        self._total[which] += int(np.size(rows))
        room = SHOWN - len(self._rows[which])
        if room > 0:
            self._rows[which].extend(int(r) + offset for r in np.asarray(rows)[:room])

    @property
    def any(self) -> bool:
        """Whether any row was found."""
        return any(self._total)

    def raise_if_any(self, names: Mapping[str, str], suffix: str = "") -> None:
        """Raise :func:`bad_rows_error` of the first finding with rows, if there is one."""
        for (input, problem), rows, total in zip(self._findings, self._rows, self._total):
            if total:
                raise bad_rows_error(BadRows(input, problem, rows, total), names, suffix=suffix) from None


def refuse_non_finite_rows(values: np.ndarray, name: str, *, problem: str = NON_FINITE, suffix: str = "",
                           fix: str | None = None) -> None:
    """Raise :func:`bad_rows_error` for the rows of the 2-D float array `values` that hold a
    NaN or an infinity (reported as `problem`); nothing when every row is finite."""
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if bad.size:
        raise bad_rows_error(BadRows("x", problem, bad[:SHOWN], bad.size), {"x": name}, suffix=suffix,
                             fix=fix) from None
