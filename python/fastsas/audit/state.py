"""The mergeable partial state of an audit's pass (:class:`AuditState`): one set of moments
per jackknife block, per (subgroup, block) cell and per (period, block) cell, and the
moments of the L2-normalised rows (the mismatch test's), with a compact versioned byte form
to ship between processes and machines."""
from __future__ import annotations

import struct
from typing import Any

import numpy as np

from fastsas import _core
from fastsas._badrows import bad_rows_error
from fastsas._byteform import corrupt, seal, unseal
from fastsas._validate import as_pair
from fastsas.moments import Moments

__all__ = ["AuditState"]

_STATE_MAGIC = b"FSASAUD"
_STATE_VERSION = 3  # 2: the "unit" part (moments of the unit rows) and period cells; 3: sealed with a CRC-32
_STATE_HEADER = struct.Struct("<7sBqq")  # magic, version, dim, number of parts
_PARTS = ("blocks", "cells", "periods", "unit")


class AuditState:
    """The mergeable partial state of an audit's pass: core moments per jackknife block, per
    (subgroup, block) cell, per (period, block) cell, and (part ``unit``) of the rows divided
    by their L2 norms.

    :meth:`accumulate` adds rows (with their codes from :meth:`AuditPlan.codes`), :meth:`merge`
    adds another state, :meth:`to_bytes` / :meth:`from_bytes` is a compact versioned byte form
    (an empty accumulator takes 8 bytes) to ship between processes; it pickles through it.

    Parameters
    ----------
    dim : int
        The embedding dimension.
    sizes : dict
        Accumulators per part: ``blocks``, ``cells``, ``periods``, ``unit``
        (:meth:`AuditPlan.sizes`).

    Examples
    --------
    >>> import fastsas as fs
    >>> from fastsas.audit import AuditPlan, AuditState
    >>> x, y = fs.synthetic.paired_embeddings(1000, 16)
    >>> plan = AuditPlan(1000, 16, jackknife_blocks=4)
    >>> a, b = plan.new_state(), plan.new_state()
    >>> a.accumulate(x[:600], y[:600], plan.codes(0, 600), threads=1)
    >>> b.accumulate(x[600:], y[600:], plan.codes(600, 1000), threads=1, offset=600)
    >>> merged = AuditState.from_bytes(a.merge(b).to_bytes())
    >>> merged.count, [s.count for s in merged.states("blocks")]
    (1000, [250, 250, 250, 250])
    """

    def __init__(self, dim: int, sizes: dict[str, int]):
        self.dim = int(dim)
        self._sizes = {k: int(sizes.get(k, 0)) for k in _PARTS}
        self._groups = {k: _core.MomentsGroups(groups=v, dim=self.dim, track_unit_rows=True) for k, v in self._sizes.items() if v}
        self._lists: dict[str, list] | None = None  # after a merge: one core Moments per accumulator
        self._rows = 0

    @property
    def count(self) -> int:
        """Rows accumulated (every row lands in exactly one jackknife block)."""
        return self._rows

    def accumulate(self, x: Any, y: Any, codes: dict[str, np.ndarray], threads: int, offset: int = 0) -> None:
        """Add rows x, y (paired, one chunk) routed by `codes`; bad rows raise ValueError naming
        them as rows of the whole archive (`offset`: the chunk's first row)."""
        if self._lists is not None:
            raise RuntimeError("accumulate() after merge(): accumulate into a new state and merge it")
        # The one dtype policy of every input (fastsas._validate.computed_dtype): chunks of a
        # float16, big-endian or mixed-precision source are converted as in-memory arrays are.
        x, y = as_pair(x, y, min_rows=0)
        try:
            for part, groups in self._groups.items():
                if part == "unit":  # last: every row has passed the other parts' checks
                    groups.update(_unit_rows(x), _unit_rows(y), codes=codes[part], threads=threads)
                else:
                    groups.update(x, y, codes=codes[part], threads=threads)
        except _core.BadRowsError as exc:
            raise bad_rows_error(exc, {"x": "images", "y": "texts"}, offset=offset) from None
        self._rows += len(x)

    def states(self, part: str) -> list:
        """The core Moments of every accumulator of `part` ("blocks", "cells", "periods", "unit")."""
        self._freeze()
        return self._lists[part]

    def _freeze(self) -> None:
        if self._lists is None:
            self._lists = {k: [g.group(i) for i in range(g.size)] for k, g in self._groups.items()}
            self._lists.update({k: [] for k in _PARTS if k not in self._lists})
            self._groups = {}

    def merge(self, other: "AuditState") -> "AuditState":
        """Add another state of the same plan in place (the same as one pass over both); returns self."""
        if not isinstance(other, AuditState):
            raise TypeError(f"other must be an AuditState, got {type(other).__name__}")
        if other.dim != self.dim or other._sizes != self._sizes:
            raise ValueError(f"cannot merge audit states of different plans: dim {other.dim} vs {self.dim}, "
                             f"accumulators {other._sizes} vs {self._sizes}")
        for part in _PARTS:
            for mine, theirs in zip(self.states(part), other.states(part)):
                if theirs.count:
                    mine.merge(theirs)
        self._rows += other._rows
        return self

    def to_bytes(self) -> bytes:
        """The compact versioned byte form: header, each accumulator's Moments byte form,
        and a CRC-32 of all of it (fastsas._byteform)."""
        out = [_STATE_HEADER.pack(_STATE_MAGIC, _STATE_VERSION, self.dim, len(_PARTS))]
        for part in _PARTS:
            states = self.states(part)
            out.append(struct.pack("<q", len(states)))
            for s in states:
                body = Moments._from_core(s).to_bytes() if s.count else b""
                out.append(struct.pack("<q", len(body)))
                out.append(body)
        return seal(b"".join(out))

    @classmethod
    def from_bytes(cls, data: bytes) -> "AuditState":
        """The state of a byte form written by :meth:`to_bytes`. ValueError says what is
        wrong with a foreign, other-version, truncated or damaged blob (the checksum is
        verified first), or with a state no rows could give (counts of the parts that
        disagree; each accumulator is checked as :meth:`Moments.from_bytes` checks it)."""
        what = "audit state byte form"
        data = unseal(data, _STATE_MAGIC, _STATE_VERSION, what)
        if len(data) < _STATE_HEADER.size:
            raise ValueError(f"{what} is truncated: {len(data)} bytes, shorter than its "
                             f"{_STATE_HEADER.size}-byte header")
        _, _, dim, parts = _STATE_HEADER.unpack_from(data)
        if parts != len(_PARTS):
            raise corrupt(what, f"its header has {parts} parts, this version has {len(_PARTS)}")
        if dim < 1:
            raise corrupt(what, f"dim {dim} in its header")
        pos = _STATE_HEADER.size
        lists: dict[str, list] = {}

        def read_q() -> int:
            nonlocal pos
            if pos + 8 > len(data):
                raise corrupt(what, "it ends inside an accumulator's length")
            (value,) = struct.unpack_from("<q", data, pos)
            pos += 8
            return value

        for part in _PARTS:
            states = []
            count = read_q()
            if count < 0 or count > (len(data) - pos) // 8:
                raise corrupt(what, f"{count} {part} accumulators in a form of {len(data)} bytes")
            for _ in range(count):
                size = read_q()
                if size < 0 or pos + size > len(data):
                    raise corrupt(what, f"a {part} accumulator of {size} bytes runs past its end")
                if size:
                    m = Moments.from_bytes(data[pos:pos + size])
                    if m.dim != dim or not m.tracks_unit_rows:
                        raise corrupt(what, f"a {part} state of dim {m.dim} (unit rows tracked: "
                                            f"{m.tracks_unit_rows}) in a state of dim {dim}")
                    if m.n == 0:
                        raise corrupt(what, f"an empty {part} accumulator stored with a body")
                    states.append(m._core)
                else:
                    states.append(_core.Moments(dim, track_unit_rows=True))
                pos += size
            lists[part] = states
        if pos != len(data):
            raise corrupt(what, f"{len(data) - pos} bytes after its last accumulator")
        rows = {part: int(sum(s.count for s in states)) for part, states in lists.items()}
        for part in ("cells", "periods"):  # every row lands in exactly one block, one cell and one period
            if lists[part] and rows[part] != rows["blocks"]:
                raise corrupt(what, f"its {part} hold {rows[part]} rows but its jackknife blocks hold "
                                    f"{rows['blocks']}")
        out = cls(dim, {})
        out._sizes = {k: len(v) for k, v in lists.items()}
        out._lists = lists
        out._rows = rows["blocks"]
        return out

    def __reduce__(self):
        return (AuditState.from_bytes, (self.to_bytes(),))


def _unit_rows(a: Any) -> np.ndarray:
    """Rows divided by their L2 norms (computed in float64), in the precision the core
    computes the chunk in (float64 for float64 input, else float32)."""
    a = np.asarray(a)
    out_dtype = np.float64 if a.dtype == np.float64 else np.float32
    wide = a.astype(np.float64, copy=False)
    norms = np.sqrt(np.einsum("ij,ij->i", wide, wide))
    return (wide / norms[:, None]).astype(out_dtype, copy=False)
