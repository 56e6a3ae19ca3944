"""`GpuMoments`: the CPU `fs.Moments` accumulation on the GPU, with the same state.

Semantics are the CPU engine's (cpp/src/moments.cpp): the first rows fix a pilot mean (the
mean of the first min(n, 2048) rows, rounded to the input precision T so the shifted values
are exactly the values multiplied); every row is shifted by it and stored in T; each block
of 2048 shifted rows gives a T-precision Gram matrix (cuBLAS, float32 accumulation for
float32 input, never TF32) that is added in float64; the sums of shifted rows, of unit rows
and of matched cosines are float64. An update is all-or-nothing: a bad row anywhere in it
raises (naming the rows like the CPU does) and adds nothing. `to_moments()` restores exactly
this state into a CPU `fs.Moments` (its byte form, merge and every metric then apply), so a
GPU pass and a CPU pass differ only by the rounding of the sums (1e-6 relative for float32).
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from fastsas import _core
from fastsas._validate import as_embeddings, check_int
from fastsas.gpu import _arrays
from fastsas.gpu._arrays import NON_FINITE, ZERO_NORM, BadRowCollector, PinnedStream
from fastsas.gpu._blas import batched_gram
from fastsas.gpu._kernels import kernel
from fastsas.moments import Moments

__all__ = ["BLOCK_ROWS", "GpuMoments", "SLAB_BLOCKS"]

BLOCK_ROWS = _core.BLOCK_ROWS  # the CPU engine's Moments::kBlockRows: same blocks, same rounding per block
SLAB_BLOCKS = 16   # blocks per slab: rows shifted and multiplied per round of kernels


class GpuMoments:
    """Streaming moments accumulated on the GPU, with the CPU engine's semantics (see the module
    docstring); :meth:`to_moments` gives the :class:`fastsas.Moments` of the same state.

    Parameters
    ----------
    dim : int
        The embedding dimension.
    track_unit_rows : bool, default True
        As :class:`fastsas.Moments`.
    chunk_rows : int, default 32768
        Rows per pinned, double-buffered chunk when host arrays are streamed.
    names : tuple of str, default ("images", "texts")
        The two inputs' names in bad-row messages.

    Raises
    ------
    ValueError
        When `dim` or `chunk_rows` is not a positive integer; bad rows in :meth:`update`.

    Notes
    -----
    update(images, texts) takes CuPy arrays or torch CUDA tensors (used in place, through
    DLPack) or host arrays (NumPy, memmap), streamed through pinned, double-buffered chunks.

    Examples
    --------
    >>> import fastsas as fs                                                   # doctest: +SKIP
    >>> x, y = fs.synthetic.paired_embeddings(100_000, 768)                    # doctest: +SKIP
    >>> m = fs.gpu.GpuMoments(768).update(x, y)                                # doctest: +SKIP
    >>> m.to_moments().alignment()["sas_i2t"] - fs.alignment(x, y, backend="cpu")["sas_i2t"]  # doctest: +SKIP
    """

    def __init__(self, dim: int, *, track_unit_rows: bool = True, chunk_rows: int = _arrays.DEFAULT_CHUNK_ROWS,
                 names: tuple[str, str] = ("images", "texts")):
        self.dim = check_int(dim, "dim", meaning="the embedding dimension")
        self.chunk_rows = check_int(chunk_rows, "chunk_rows")
        cp = _arrays.cupy_module()
        self.track_unit_rows = bool(track_unit_rows)
        self._names = {"x": names[0], "y": names[1]}
        w = 2 * self.dim
        self.n = 0
        self._pilot: np.ndarray | None = None  # float64, rounded to the precision of the first chunk
        self._scatter = cp.zeros((w, w), dtype=cp.float64)
        self._sum = cp.zeros(w, dtype=cp.float64)
        self._unit = cp.zeros(w, dtype=cp.float64)
        self._cosine = cp.zeros((), dtype=cp.float64)
        # Fourth-order sums about the pilot (the CPU's NormMoments): [sum a^2, sum a b, sum b^2]
        # and [sum a z, sum b z] with a, b the squared norms of the shifted image and text rows.
        self._norm_products = cp.zeros(3, dtype=cp.float64)
        self._norm_weighted = cp.zeros((w, 2), dtype=cp.float64)
        self._streams: dict[Any, PinnedStream] = {}
        self.bytes_from_host = 0

    # -- accumulation ---------------------------------------------------------------------
    def update(self, images: Any, texts: Any) -> "GpuMoments":
        """Add paired rows (device arrays in place, host arrays streamed); all-or-nothing: a bad row raises, naming it, and adds nothing. Returns self."""
        if _arrays.is_device_array(images) or _arrays.is_device_array(texts):
            x = _arrays.as_device(images, "images")
            y = _arrays.as_device(texts, "texts")
            self._check_pair(x.shape, y.shape)
            dtype = _arrays.common_dtype(x, y)
            self._accumulate(iter([(0, x.astype(dtype, copy=False), y.astype(dtype, copy=False))]), dtype)
            return self
        x = as_embeddings(images, "images", min_rows=0)
        y = as_embeddings(texts, "texts", min_rows=0)
        self._check_pair(x.shape, y.shape)
        return self._update_host([(0, x, y)], np.float32 if x.dtype == y.dtype == np.float32 else np.float64)

    def update_chunks(self, chunks: Iterable[tuple[Any, Any]]) -> "GpuMoments":
        """Add every (images_chunk, texts_chunk) pair of an iterable, chunk by chunk (each
        chunk all-or-nothing, as `update`)."""
        for x, y in chunks:
            self.update(x, y)
        return self

    def _check_pair(self, xs: tuple, ys: tuple) -> None:
        if xs[0] != ys[0]:
            raise ValueError(f"images and texts must be paired row by row: got {xs[0]} and {ys[0]} rows")
        if xs[1] != self.dim or ys[1] != self.dim:
            raise ValueError(f"images and texts have dims {xs[1]} and {ys[1]} but this GpuMoments was created "
                             f"with dim {self.dim}")

    def _update_host(self, chunks: list, dtype) -> "GpuMoments":
        key = np.dtype(dtype)
        if key not in self._streams:
            self._streams[key] = PinnedStream(self.dim, key, self.chunk_rows)
        stream = self._streams[key]
        before = stream.bytes_copied
        cp = _arrays.cupy_module()
        self._accumulate(stream.stream(chunks), cp.dtype(key))
        self.bytes_from_host += stream.bytes_copied - before
        return self

    def _accumulate(self, parts: Iterable[tuple[int, Any, Any]], dtype) -> None:
        """All-or-nothing: sums go to deltas first, added only when no row was bad."""
        cp = _arrays.cupy_module()
        w = 2 * self.dim
        first = self._pilot is None
        d_scatter = cp.zeros((w, w), dtype=cp.float64)
        d_sum = cp.zeros(w, dtype=cp.float64)
        d_unit = cp.zeros(w, dtype=cp.float64)
        d_cos = cp.zeros((), dtype=cp.float64)
        d_norm_products = cp.zeros(3, dtype=cp.float64)
        d_norm_weighted = cp.zeros((w, 2), dtype=cp.float64)
        pilot_host = self._pilot
        pilot = None if pilot_host is None else cp.asarray(pilot_host)
        bad = BadRowCollector([("x", NON_FINITE), ("y", NON_FINITE), ("x", ZERO_NORM), ("y", ZERO_NORM)])
        added = 0
        sfx = "f32" if dtype == cp.float32 else "f64"
        shift_rows = kernel("moments.cu", f"shift_rows_{sfx}")
        column_sums = kernel("moments.cu", f"column_sums_{sfx}")
        slab = BLOCK_ROWS * SLAB_BLOCKS
        z = cp.empty((slab, w), dtype=dtype)
        gram = cp.empty((SLAB_BLOCKS, w, w), dtype=dtype)
        inv_x = cp.empty(slab, dtype=cp.float64)
        inv_y = cp.empty(slab, dtype=cp.float64)
        cosine = cp.empty(slab, dtype=cp.float64)
        flags = cp.empty(slab, dtype=cp.int8)
        part_sum = cp.empty((SLAB_BLOCKS, w), dtype=cp.float64)
        part_unit = cp.empty((SLAB_BLOCKS, w), dtype=cp.float64)
        for offset, x, y in parts:
            n = x.shape[0]
            if n == 0:
                continue
            if pilot is None:
                head = min(n, BLOCK_ROWS)
                p = cp.concatenate([x[:head].mean(axis=0, dtype=cp.float64), y[:head].mean(axis=0, dtype=cp.float64)])
                pilot = p.astype(dtype).astype(cp.float64)  # exactly representable in T
            for s0 in range(0, n, slab):
                rows = min(slab, n - s0)
                xs, ys = x[s0:s0 + rows], y[s0:s0 + rows]
                warps_per_block = 8
                grid = (rows + warps_per_block - 1) // warps_per_block
                shift_rows((grid,), (32 * warps_per_block,),
                           (xs, np.int64(_arrays.row_stride(xs)), ys, np.int64(_arrays.row_stride(ys)), np.int64(rows),
                            np.int32(self.dim), pilot, z, inv_x, inv_y, cosine, flags, np.int32(self.track_unit_rows)))
                f = flags[:rows]
                if bool(f.any()):
                    self._collect(bad, f, offset + s0)
                if bad.any:
                    continue  # keep scanning to name every bad row, add nothing
                chunks = (rows + BLOCK_ROWS - 1) // BLOCK_ROWS
                column_sums(((w + 255) // 256, chunks), (256,),
                            (xs, np.int64(_arrays.row_stride(xs)), ys, np.int64(_arrays.row_stride(ys)), z,
                             np.int64(rows), np.int32(self.dim), inv_x, inv_y, np.int64(BLOCK_ROWS), part_sum,
                             part_unit, np.int32(self.track_unit_rows)))
                d_sum += part_sum[:chunks].sum(axis=0)
                if self.track_unit_rows:
                    d_unit += part_unit[:chunks].sum(axis=0)
                    d_cos += cosine[:rows].sum()
                self._add_norm_moments(z[:rows], d_norm_products, d_norm_weighted)
                full = rows // BLOCK_ROWS
                if full:
                    batched_gram(z, BLOCK_ROWS, full, gram)
                    d_scatter += gram[:full].sum(axis=0, dtype=cp.float64)
                tail = rows - full * BLOCK_ROWS
                if tail:
                    batched_gram(z[full * BLOCK_ROWS:rows], tail, 1, gram)
                    d_scatter += gram[0].astype(cp.float64)
            added += n
        if bad.any:
            suffix = f" (rows of this chunk; {self.n} rows were added before it)" if self.n else ""
            bad.raise_if_any(self._names, suffix)
        if added == 0:
            return
        if first:
            self._pilot = cp.asnumpy(pilot)
        self._scatter += d_scatter
        self._sum += d_sum
        self._unit += d_unit
        self._cosine += d_cos
        self._norm_products += d_norm_products
        self._norm_weighted += d_norm_weighted
        self.n += added

    def _add_norm_moments(self, z, products, weighted) -> None:
        """Adds the fourth-order terms of shifted rows z (rows x 2 dim, in T) in float64, a
        block at a time (bounded scratch)."""
        cp = _arrays.cupy_module()
        d = self.dim
        for b0 in range(0, z.shape[0], BLOCK_ROWS):
            zd = z[b0:b0 + BLOCK_ROWS].astype(cp.float64)
            a = cp.einsum("ij,ij->i", zd[:, :d], zd[:, :d])
            b = cp.einsum("ij,ij->i", zd[:, d:], zd[:, d:])
            products += cp.stack([a @ a, a @ b, b @ b])
            weighted[:, 0] += zd.T @ a
            weighted[:, 1] += zd.T @ b

    @staticmethod
    def _collect(bad: BadRowCollector, flags, offset: int) -> None:
        f = _arrays.cupy_module().asnumpy(flags)
        for which, bit in enumerate((1, 2, 4, 8)):
            rows = np.flatnonzero(f & bit)
            if rows.size:
                bad.add(which, rows, offset)

    # -- results ---------------------------------------------------------------------------
    def to_core(self) -> "_core.Moments":
        """The core moments (``fastsas._core.Moments``) holding this state, a copy."""
        cp = _arrays.cupy_module()
        w = 2 * self.dim
        core = _core.Moments(self.dim, track_unit_rows=self.track_unit_rows)
        pilot = self._pilot if self._pilot is not None else np.zeros(w)
        scatter = np.asfortranarray(np.triu(cp.asnumpy(self._scatter)))
        core.restore(count=int(self.n), has_pilot=self._pilot is not None, pilot=pilot,
                     shifted_sum=cp.asnumpy(self._sum), shifted_scatter=scatter, unit_sum=cp.asnumpy(self._unit),
                     matched_cosine_sum=float(self._cosine.get()))
        _core.moments_restore_norm(core, cp.asnumpy(self._norm_products),
                                   np.asfortranarray(cp.asnumpy(self._norm_weighted)))
        return core

    def to_moments(self, threads: int | None = None) -> Moments:
        """The CPU `fs.Moments` holding this state (a copy: later GPU updates do not reach it)."""
        return Moments._from_core(self.to_core(), threads)

    def alignment(self, topq: float = 0.1) -> dict[str, Any]:
        """Every alignment metric of the state: ``self.to_moments().alignment(topq)``."""
        return self.to_moments().alignment(topq)

    def __repr__(self) -> str:
        return f"GpuMoments(dim={self.dim}, n={self.n})"
