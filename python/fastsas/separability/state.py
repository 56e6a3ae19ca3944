"""The streaming per-class state of the separability measures (docs/definitions.md, "Class
separability"): per (block, class) counts, shifted sums, shifted squared norms and sums of
unit rows, and per block the shifted scatter, accumulated chunk by chunk in float64 and
merged exactly. Everything the moment-based measures need (Fisher ratio, pairwise class
separations, LDA with held-out blocks, the cosine silhouette's class sums, PCA) comes from it.
"""
from __future__ import annotations

import io as _bytes_io
from typing import Any

import numpy as np

__all__ = ["ClassMoments"]

_FORMAT = "fastsas.ClassMoments/1"


class ClassMoments:
    """Per-class moments of one set of embeddings, mergeable, with a byte form.

    Row ``i`` (its global position, counted from 0 over every chunk given to
    :meth:`update`) belongs to held-out block ``i % blocks``. Sums are taken about a shift
    (the mean of the first chunk) so that the float64 scatter keeps its precision when the
    mean is far from zero.

    Parameters
    ----------
    dim : int
        Embedding dimension d.
    n_classes : int
        Number of classes C (labels are integer codes 0..C-1).
    blocks : int, optional
        Held-out blocks of the LDA cross-validation (default 5; at least 2).

    Examples
    --------
    >>> import numpy as np
    >>> from fastsas.separability import ClassMoments
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(100, 4)), rng.integers(0, 3, 100)
    >>> a = ClassMoments(4, 3).update(x[:60], y[:60])
    >>> b = ClassMoments(4, 3, start=60).update(x[60:], y[60:])
    >>> merged, one = a.merge(b), ClassMoments(4, 3).update(x, y)
    >>> bool(np.allclose(merged.class_means(), one.class_means()))
    True
    """

    def __init__(self, dim: int, n_classes: int, blocks: int = 5, *, start: int = 0) -> None:
        if int(dim) < 1 or int(n_classes) < 1 or int(blocks) < 2 or int(start) < 0:
            raise ValueError(f"ClassMoments needs dim >= 1, n_classes >= 1, blocks >= 2 and start >= 0 "
                             f"(got dim={dim}, n_classes={n_classes}, blocks={blocks}, start={start})")
        self.dim, self.n_classes, self.blocks = int(dim), int(n_classes), int(blocks)
        self.next_row = int(start)  # global position of the next row given to update
        self.shift: np.ndarray | None = None
        self.counts = np.zeros((self.blocks, self.n_classes), dtype=np.int64)
        self.sums = np.zeros((self.blocks, self.n_classes, self.dim))          # sum of (x - shift)
        self.square_norms = np.zeros((self.blocks, self.n_classes))            # sum of |x - shift|^2
        self.unit_sums = np.zeros((self.blocks, self.n_classes, self.dim))     # sum of x / |x| (0 for x = 0)
        self.scatter = np.zeros((self.blocks, self.dim, self.dim))             # sum of (x - shift)(x - shift)^T

    # ---------------------------------------------------------------- accumulation
    def update(self, x: Any, codes: Any) -> "ClassMoments":
        """Adds one chunk: `x` (m, d) float32/float64, `codes` (m,) integer class codes."""
        x = np.asarray(x)
        codes = np.asarray(codes)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (m, {self.dim}); got {x.shape}")
        if codes.shape != (x.shape[0],):
            raise ValueError(f"codes must have one class code per row of x ({x.shape[0]}); got shape {codes.shape}")
        if codes.size and (codes.min() < 0 or codes.max() >= self.n_classes):
            raise ValueError(f"codes must lie in 0..{self.n_classes - 1}; got {codes.min()}..{codes.max()}")
        m = x.shape[0]
        if m == 0:
            return self
        if not np.all(np.isfinite(x)):
            raise ValueError("x has non-finite values (NaN or Inf); drop or repair those rows")
        block = (self.next_row + np.arange(m)) % self.blocks
        group = block * self.n_classes + codes.astype(np.int64)
        groups = self.blocks * self.n_classes
        # The rows sorted by group = block * C + class, gathered once (in the input's dtype,
        # then converted): every (block, class) is a contiguous slice, and so is every block,
        # so the per-group sums are BLAS products of slices and the per-block scatter a SYRK
        # of a slice, with no mask copies (O(m d) passes plus the scatter's m d^2).
        order = np.argsort(group, kind="stable")
        rows = x[order].astype(np.float64, copy=False)  # x[order] is already a copy
        if self.shift is None:
            self.shift = rows.mean(axis=0)
        norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
        inverse_norms = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)  # unit of 0 is 0
        sorted_groups = group[order]
        starts = np.concatenate(([0], np.flatnonzero(np.diff(sorted_groups)) + 1))
        ends = np.concatenate((starts[1:], [m]))
        present = sorted_groups[starts].tolist()
        flat_units = self.unit_sums.reshape(groups, self.dim)
        for g, a, b in zip(present, starts.tolist(), ends.tolist()):
            flat_units[g] += inverse_norms[a:b] @ rows[a:b]  # sum of the unit rows, one GEMV
        rows -= self.shift  # centred in place
        flat_sums = self.sums.reshape(groups, self.dim)
        ones = np.ones(m)
        for g, a, b in zip(present, starts.tolist(), ends.tolist()):
            flat_sums[g] += ones[a:b] @ rows[a:b]
        self.counts += np.bincount(group, minlength=groups).reshape(self.blocks, self.n_classes)
        self.square_norms += np.bincount(sorted_groups, weights=np.einsum("ij,ij->i", rows, rows),
                                         minlength=groups).reshape(self.blocks, self.n_classes)
        block_starts = np.searchsorted(sorted_groups, np.arange(self.blocks + 1) * self.n_classes)
        for b in range(self.blocks):
            part = rows[block_starts[b]:block_starts[b + 1]]
            if part.shape[0]:
                self.scatter[b] += part.T @ part  # NumPy's SYRK for a.T @ a
        self.next_row += m
        return self

    @classmethod
    def from_chunks(cls, chunks: Any, dim: int, n_classes: int, blocks: int = 5) -> "ClassMoments":
        """One pass over an iterable of ``(x, codes)`` chunks."""
        state = cls(dim, n_classes, blocks)
        for x, codes in chunks:
            state.update(x, codes)
        return state

    def _reshifted(self, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sums, square_norms, scatter) about another shift (exact algebra, float64)."""
        if self.shift is None:
            return self.sums, self.square_norms, self.scatter
        delta = self.shift - shift  # x - shift = (x - self.shift) + delta
        n = self.counts.astype(np.float64)
        sums = self.sums + n[:, :, None] * delta
        square_norms = self.square_norms + 2.0 * self.sums @ delta + n * float(delta @ delta)
        block_sums = self.sums.sum(axis=1)
        nb = n.sum(axis=1)
        scatter = (self.scatter + block_sums[:, :, None] * delta[None, None, :]
                   + delta[None, :, None] * block_sums[:, None, :] + nb[:, None, None] * np.outer(delta, delta))
        return sums, square_norms, scatter

    def merge(self, other: "ClassMoments") -> "ClassMoments":
        """A new state equal to one pass over both (same dim, classes and blocks)."""
        if (self.dim, self.n_classes, self.blocks) != (other.dim, other.n_classes, other.blocks):
            raise ValueError("merge needs states of the same dim, n_classes and blocks; got "
                             f"{(self.dim, self.n_classes, self.blocks)} and {(other.dim, other.n_classes, other.blocks)}")
        out = ClassMoments(self.dim, self.n_classes, self.blocks, start=max(self.next_row, other.next_row))
        shift = self.shift if self.shift is not None else other.shift
        out.shift = None if shift is None else shift.copy()
        out.counts = self.counts + other.counts
        out.unit_sums = self.unit_sums + other.unit_sums
        if shift is None:
            return out
        a, b = self._reshifted(shift), other._reshifted(shift)
        out.sums, out.square_norms, out.scatter = a[0] + b[0], a[1] + b[1], a[2] + b[2]
        return out

    # ---------------------------------------------------------------- byte form
    def to_bytes(self) -> bytes:
        """The state as bytes (a NumPy .npz; :meth:`from_bytes` reads it back exactly)."""
        buf = _bytes_io.BytesIO()
        np.savez(buf, format=np.array(_FORMAT), meta=np.array([self.dim, self.n_classes, self.blocks, self.next_row]),
                 shift=np.zeros(0) if self.shift is None else self.shift, counts=self.counts, sums=self.sums,
                 square_norms=self.square_norms, unit_sums=self.unit_sums, scatter=self.scatter)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "ClassMoments":
        """Reads :meth:`to_bytes`'s form."""
        with np.load(_bytes_io.BytesIO(data), allow_pickle=False) as z:
            if str(z["format"]) != _FORMAT:
                raise ValueError(f"data is not a {_FORMAT} state (format {str(z['format'])!r})")
            dim, n_classes, blocks, next_row = (int(v) for v in z["meta"])
            out = cls(dim, n_classes, blocks, start=next_row)
            out.shift = None if z["shift"].size == 0 else z["shift"].copy()
            for name in ("counts", "sums", "square_norms", "unit_sums", "scatter"):
                setattr(out, name, z[name].copy())
        return out

    # ---------------------------------------------------------------- derived (all blocks, or leaving one out)
    def _pooled(self, leave_out: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(counts (C,), shifted sums (C, d), within-class scatter Sw (d, d)) over the blocks
        (all, or all but `leave_out`)."""
        keep = [b for b in range(self.blocks) if b != leave_out]
        counts = self.counts[keep].sum(axis=0)
        sums = self.sums[keep].sum(axis=0)
        total = self.scatter[keep].sum(axis=0)
        present = counts > 0
        within = total - (sums[present].T / counts[present]) @ sums[present]
        return counts, sums, (within + within.T) / 2.0

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def class_counts(self) -> np.ndarray:
        return self.counts.sum(axis=0)

    def class_means(self, leave_out: int | None = None) -> np.ndarray:
        """(C, d) class means (NaN rows for empty classes)."""
        counts, sums, _ = self._pooled(leave_out)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = sums / counts[:, None]
        return means + (0.0 if self.shift is None else self.shift)

    def within_scatter(self, leave_out: int | None = None) -> np.ndarray:
        """Sw = sum over classes of sum (x - mean_c)(x - mean_c)^T, (d, d) float64."""
        return self._pooled(leave_out)[2]

    def class_unit_sums(self) -> np.ndarray:
        """(C, d) sums of the unit rows of every class."""
        return self.unit_sums.sum(axis=0)

    def class_spreads(self) -> np.ndarray:
        """(C,) root mean squared distance of a class's rows to their mean (NaN when empty)."""
        counts = self.class_counts().astype(np.float64)
        sums = self.sums.sum(axis=0)
        sq = self.square_norms.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            inner = sq / counts - np.einsum("ij,ij->i", sums, sums) / counts**2
        return np.sqrt(np.maximum(inner, 0.0))

    def covariance(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean (d,), covariance (d, d), divided by n - 1) of all rows, for PCA."""
        n = self.count
        sums = self.sums.sum(axis=(0, 1))
        scatter = self.scatter.sum(axis=0) - np.outer(sums, sums) / n
        return sums / n + self.shift, (scatter + scatter.T) / (2.0 * max(n - 1, 1))
