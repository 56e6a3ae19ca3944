"""Streaming sufficient statistics (`Moments`) and everything computed from them."""
from __future__ import annotations

import struct
import threading
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from fastsas import _core, _dispatch
from fastsas._badrows import bad_rows_error
from fastsas._byteform import CHECKSUM_BYTES, check_finite, corrupt, seal, unseal
from fastsas._validate import as_pair, check_int, check_topq, resolve_threads

__all__ = ["ALIGNMENT_KEYS", "DEFAULT_QS", "Moments", "SpectralProfile"]

DEFAULT_QS = tuple(round(0.1 * i, 10) for i in range(1, 11))

# Keys of the alignment dict, in report order.
ALIGNMENT_KEYS = (
    "sas_i2t", "sas_t2i", "sas_sym", "sas_imbalance", "cka", "coral", "svcca",
    "delta_cos", "rmg", "rmg_paper", "centroid_euclidean", "centroid_cosine",
    "cone_images", "cone_texts", "matched_cosine",
)

# Keys of the alignment dict beyond the covariance family: the unbiased linear CKA and the
# orthogonal Procrustes distances (Moments.estimators).
ESTIMATOR_KEYS = ("cka_unbiased", "procrustes", "procrustes_angular", "procrustes_angular_whitened")


@dataclass(frozen=True)
class SpectralProfile:
    """The per-mode profile of one SAS direction (anchor -> other), modes by descending
    anchor eigenvalue (docs/definitions.md, "Spectral Alignment Score").

    Attributes
    ----------
    direction : str
        "i2t" (anchor: the images) or "t2i" (anchor: the texts).
    eigenvalues : ndarray, shape (d,), float64
        ``l_k`` of the anchor's covariance (biased; negative round-off clipped to 0).
    a : ndarray, shape (d,), float64
        ``v_k^T Cov(anchor, other) v_k``.
    s : ndarray, shape (d,), float64
        ``v_k^T Cov(other) v_k``.
    rho : ndarray, shape (d,), float64
        ``a_k / sqrt(l_k s_k + 1e-8)``, the per-mode correlation.

    Examples
    --------
    >>> import fastsas as fs
    >>> x, y = fs.synthetic.paired_embeddings(2000, 16, image_only_factors=2)
    >>> profile = fs.Moments(16).update(x, y).spectral_profile("i2t")
    >>> int(profile.kept(0.25).sum()), round(float(profile.weights(0.25).sum()), 12)
    (4, 1.0)
    >>> profile.sas(0.1) == fs.sas(x, y, backend="cpu")
    True
    """

    direction: str
    eigenvalues: np.ndarray
    a: np.ndarray
    s: np.ndarray
    rho: np.ndarray

    def kept(self, topq: float = 0.1) -> np.ndarray:
        """Boolean mask of the modes SAS keeps at `topq` (l_k >= quantile(l, 1 - topq))."""
        q = check_topq(topq)
        return self.eigenvalues >= _core.quantile_linear(self.eigenvalues, p=1.0 - q)

    def weights(self, topq: float = 0.1) -> np.ndarray:
        """Each mode's weight in SAS at `topq`: l_k / sum of kept l, 0 for dropped modes."""
        kept = self.kept(topq)
        w = np.where(kept, self.eigenvalues, 0.0)
        return w / w.sum()

    def sas(self, topq: float = 0.1) -> float:
        """SAS of this direction at `topq` (the kept modes' |rho| weighted by their eigenvalues)."""
        return float(_core.sas_from_profile(eigenvalues=self.eigenvalues, rho=self.rho, q=check_topq(topq)))

    def to_dict(self) -> dict[str, Any]:
        """The profile as plain data: ``direction`` and the four arrays as lists."""
        return {
            "direction": self.direction,
            "eigenvalues": self.eigenvalues.tolist(),
            "a": self.a.tolist(),
            "s": self.s.tolist(),
            "rho": self.rho.tolist(),
        }


_MAGIC = b"FSASMOM"
_FORMAT_VERSION = 3  # 3: version 2 sealed with a CRC-32 (fastsas._byteform)
_UNSEALED_VERSIONS = (1, 2)  # written before forms were sealed: still read, their content checked
_HEADER = struct.Struct("<7sBqqBBd")  # magic, version, dim, count, has_pilot, tracks, cosine sum
# Versions 2 and 3 append a flag byte (the fourth-order sums are tracked) and, always, those
# sums: [sum a^2, sum a b, sum b^2] then the 2 dim x 2 matrix [sum a z, sum b z] by columns.
# Version 1 does not carry them; its moments do not track the fourth-order sums.
_NORM_FLAG = struct.Struct("<B")
# Rounding slack of the count checks below: a cosine sum or a norm of a sum of unit rows
# exceeds its count only by accumulated rounding.
_COUNT_SLACK = 1e-6


def _check_state(what: str, count: int, has_pilot: bool, tracks: bool, cos_sum: float, pilot: np.ndarray,
                 shifted_sum: np.ndarray, unit_sum: np.ndarray, upper: np.ndarray, dim: int,
                 further: np.ndarray) -> None:
    """Refuse a decoded state that no rows could give: values not finite (`further`: the
    accumulators after the scatter, whatever they are), sums without rows, rows without a
    pilot, cosine sums or unit-row sums larger than the count, a negative sum of squares."""
    for field, values in (("the pilot mean", pilot), ("the shifted sum", shifted_sum), ("the unit-row sum", unit_sum),
                          ("the scatter", upper), ("the matched cosine sum", np.array([cos_sum])),
                          ("the sums after the scatter", further)):
        check_finite(values, what, field)
    if count == 0:
        if np.any(shifted_sum) or np.any(unit_sum) or np.any(upper) or np.any(further) or cos_sum:
            raise corrupt(what, "it has no rows (n = 0) but non-zero sums")
        return
    if not has_pilot:
        raise corrupt(what, f"it has {count} rows but no pilot mean")
    limit = count * (1.0 + _COUNT_SLACK)
    if tracks:
        norms = [float(np.linalg.norm(unit_sum[:dim])), float(np.linalg.norm(unit_sum[dim:]))]
        if abs(cos_sum) > limit or max(norms) > limit:
            raise corrupt(what, f"its matched cosine sum {cos_sum:.6g} or unit-row sums (norms {norms[0]:.6g}, "
                                f"{norms[1]:.6g}) exceed its {count} rows (a cosine is at most 1)")
    elif np.any(unit_sum) or cos_sum:
        raise corrupt(what, "it does not track unit rows but has unit-row sums")
    d2 = 2 * dim
    diagonal = upper[np.cumsum(np.arange(d2, 0, -1)) - np.arange(d2, 0, -1)]  # (i, i) of the packed upper triangle
    scale = float(np.max(np.abs(diagonal))) if diagonal.size else 0.0
    if diagonal.size and float(np.min(diagonal)) < -_COUNT_SLACK * scale:
        raise corrupt(what, f"its scatter has a negative sum of squares ({float(np.min(diagonal)):.6g})")


class Moments:
    """Streaming moments of paired embeddings: accumulate chunk by chunk, merge partial
    states from other threads, processes or machines, then compute every metric.

    The state is n, the two means, the joint second moments of ``[images texts]`` (shifted
    by a pilot mean, float64) and, with `track_unit_rows`, the sums of unit rows and of
    matched cosines: everything SAS, the covariance family and the pairwise family need
    (docs/definitions.md). float32 chunks use float32 block products with float64
    accumulation; float64 chunks are float64 throughout. It pickles, and has a compact
    versioned byte form (:meth:`to_bytes`).

    Parameters
    ----------
    dim : int
        The embedding dimension d.
    track_unit_rows : bool, default True
        Also keep the unit-row sums (Delta-cos, RMG, the cone, the gap): then all-zero
        rows are refused, since they have no direction.
    threads : int or None
        Worker threads of the core for updates and the analysis (None: the fastsas default).

    Raises
    ------
    ValueError
        When `dim` or `threads` is not a positive integer.

    Examples
    --------
    >>> import numpy as np, fastsas as fs
    >>> rng = np.random.default_rng(0)
    >>> m = fs.Moments(16)
    >>> for _ in range(3):
    ...     x = rng.standard_normal((100, 16))
    ...     _ = m.update(x, x + 0.1 * rng.standard_normal((100, 16)))
    >>> m
    Moments(dim=16, n=300)
    >>> 0.98 < m.alignment()["sas_i2t"] <= 1.0
    True
    >>> m2 = fs.Moments.from_bytes(m.to_bytes())
    >>> m2.n, m2.alignment() == m.alignment()
    (300, True)
    """

    def __init__(self, dim: int, *, track_unit_rows: bool = True, threads: int | None = None):
        dim = check_int(dim, "dim", meaning="the embedding dimension")
        self._core = _core.Moments(dim, track_unit_rows=bool(track_unit_rows))
        self._threads = threads if threads is None else resolve_threads(threads)
        self._analysis: dict[str, Any] | None = None
        # The core runs without the GIL: concurrent calls on one object take turns.
        self._lock = threading.Lock()

    # -- accumulation -------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """The embedding dimension."""
        return self._core.dim

    @property
    def n(self) -> int:
        """Number of pairs accumulated."""
        return self._core.count

    @property
    def tracks_unit_rows(self) -> bool:
        """Whether the unit-row sums are kept (see the class docstring)."""
        return self._core.tracks_unit_rows

    def update(self, images: Any, texts: Any) -> "Moments":
        """Add a chunk of paired rows (n_chunk x dim each). All-or-nothing: a chunk with a
        bad row (NaN/Inf, or all zeros) raises ValueError naming it and adds nothing."""
        x, y = as_pair(images, texts, min_rows=0)
        if x.shape[1] != self.dim:
            raise ValueError(f"images has dim {x.shape[1]} but this Moments was created with dim {self.dim}")
        try:
            with self._lock:
                self._core.update(x, y, threads=resolve_threads(self._threads))
                self._analysis = None
        except _core.BadRowsError as exc:
            suffix = f" (rows of this chunk; {self.n} rows were added before it)" if self.n else ""
            raise bad_rows_error(exc, {"x": "images", "y": "texts"}, suffix=suffix) from None
        return self

    def merge(self, other: "Moments") -> "Moments":
        """Add another partial state in place; the same as one pass over both inputs."""
        if not isinstance(other, Moments):
            raise TypeError(f"other must be a fastsas.Moments, got {type(other).__name__}")
        if other.dim != self.dim:
            raise ValueError(f"cannot merge Moments of dim {other.dim} into Moments of dim {self.dim}")
        if other.tracks_unit_rows != self.tracks_unit_rows:
            raise ValueError("cannot merge Moments with different track_unit_rows settings")
        if other is self:
            other = self.copy()
        with self._lock, other._lock:
            self._core.merge(other._core)
            self._analysis = None
        return self

    @classmethod
    def _from_core(cls, core: "_core.Moments", threads: int | None = None) -> "Moments":
        """Wrap a core state (e.g. one group of a MomentsGroups) without copying it."""
        out = cls.__new__(cls)
        out._core = core
        out._threads = threads
        out._analysis = None
        out._lock = threading.Lock()
        return out

    def copy(self) -> "Moments":
        """An independent copy of this state."""
        out = Moments.__new__(Moments)
        with self._lock:
            out._core = self._core.copy()
            out._analysis = self._analysis
        out._threads = self._threads
        out._lock = threading.Lock()
        return out

    @classmethod
    def from_chunks(cls, chunks: Iterable[tuple[Any, Any]], dim: int | None = None, *, backend: str = "auto",
                    **kwargs: Any) -> "Moments":
        """The Moments of an iterable of (images_chunk, texts_chunk) pairs.

        `dim` is needed only when `chunks` may yield nothing; `kwargs` go to the
        constructor (track_unit_rows, threads). `backend`: "auto" (the GPU when CuPy sees
        one), "cpu" or "cuda". On the GPU, host chunks are streamed through pinned double
        buffers and device chunks (CuPy, torch CUDA) are used in place; the result is the
        same Moments up to rounding (1e-6 relative for float32).
        """
        if _dispatch.resolve_backend(backend) == "cuda":
            core = _dispatch.accumulate_chunks(chunks, dim, kwargs.get("track_unit_rows", True))
            if core is None:
                if dim is None:
                    raise ValueError("chunks yielded nothing and no dim was given")
                return cls(dim, **kwargs)
            return cls._from_core(core, kwargs.get("threads"))
        m: Moments | None = None if dim is None else cls(dim, **kwargs)
        for x, y in chunks:
            if m is None:
                m = cls(np.shape(x)[1], **kwargs)
            m.update(x, y)
        if m is None:
            raise ValueError("chunks yielded nothing and no dim was given")
        return m

    # -- derived statistics ---------------------------------------------------------------
    def mean_images(self) -> np.ndarray:
        """(d,) float64: the mean image row."""
        return self._core.mean()[: self.dim]

    def mean_texts(self) -> np.ndarray:
        """(d,) float64: the mean text row."""
        return self._core.mean()[self.dim:]

    def covariance(self) -> np.ndarray:
        """Biased joint covariance of [images texts], (2 dim) x (2 dim)."""
        self._need(1)
        return self._core.centered_scatter() / self.n

    def _need(self, rows: int) -> None:
        if self.n < rows:
            raise ValueError(f"needs at least {rows} pairs, this Moments has {self.n}")

    def analysis(self) -> dict[str, Any]:
        """The q-independent analysis (both spectral profiles and every other metric),
        computed once and cached until the next update or merge."""
        if self._analysis is None:
            self._need(2)
            try:
                with self._lock:
                    self._analysis = _core.analyze(self._core, threads=resolve_threads(self._threads))
            except ValueError as exc:
                raise ValueError(f"cannot analyse these moments: {exc}") from None
        return self._analysis

    def _defined(self, key: str) -> float:
        """One metric of the analysis, or ValueError saying why these moments leave it undefined
        (CKA and SVCCA for a modality without variance, the centroid cosine for a zero mean,
        CORAL beyond the float64 range: docs/definitions.md)."""
        a = self.analysis()
        reason = a["undefined"].get(key)
        if reason is not None:
            raise ValueError(f"{key} is undefined for these embeddings: {reason}")
        return float(a[key])

    def spectral_profile(self, direction: str = "i2t") -> SpectralProfile:
        """Per-mode profile of SAS(I->T) (`"i2t"`, anchor images) or SAS(T->I) (`"t2i"`)."""
        if direction not in ("i2t", "t2i"):
            raise ValueError(f'direction must be "i2t" or "t2i", got {direction!r}')
        p = self.analysis()[direction]
        return SpectralProfile(direction, p["eigenvalues"], p["a"], p["s"], p["rho"])

    def sas_sweep(self, qs: Iterable[float] = DEFAULT_QS) -> dict[str, np.ndarray]:
        """SAS in both directions for every q, from one eigendecomposition per direction."""
        qs = np.array([check_topq(q, "qs") for q in qs], dtype=np.float64)
        i2t, t2i = self.spectral_profile("i2t"), self.spectral_profile("t2i")
        return {
            "q": qs,
            "sas_i2t": np.array([i2t.sas(q) for q in qs]),
            "sas_t2i": np.array([t2i.sas(q) for q in qs]),
        }

    def gap_vector(self) -> np.ndarray:
        """mean of unit image rows minus mean of unit text rows (the modality gap)."""
        self._require_unit_rows("the gap vector")
        self._need(1)
        u = self._core.unit_sum() / self.n
        return u[: self.dim] - u[self.dim:]

    def _require_unit_rows(self, what: str) -> None:
        if not self.tracks_unit_rows:
            raise ValueError(f"{what} needs Moments(..., track_unit_rows=True)")

    def estimators(self) -> dict[str, float]:
        """The unbiased linear CKA and the orthogonal Procrustes distances (ESTIMATOR_KEYS),
        computed once per analysis and cached until the next update or merge.

        cka_unbiased: the unbiased HSIC (Song et al. 2012) of the linear kernels, normalised;
        may be negative near zero alignment; 0 when a modality shows no spread; NaN when it is
        undefined (fewer than 4 pairs, moments restored from the first byte form, which does not
        carry the fourth-order sums, or magnitudes whose fourth powers leave float64), with the
        reason in :meth:`estimator_reasons`.
        procrustes: min over orthogonal Q of ||Xc Q - Yc||_F^2 / n; procrustes_angular:
        arccos(||Cxy||_* / sqrt(tr Cx tr Cy)); procrustes_angular_whitened: the same on
        whitened modalities, arccos(sum of canonical correlations / sqrt(rank_x rank_y)).

        >>> import numpy as np, fastsas as fs
        >>> rng = np.random.default_rng(0)
        >>> x = rng.standard_normal((500, 8))
        >>> e = fs.Moments(8).update(x, x).estimators()
        >>> round(e["cka_unbiased"], 6), round(e["procrustes"], 6)
        (1.0, 0.0)
        """
        values, _ = self._estimates_and_reasons()
        return dict(values)

    def estimator_reasons(self) -> dict[str, str]:
        """Why an estimator of :meth:`estimators` is NaN for these moments, by key (empty when
        every one is defined)."""
        return dict(self._estimates_and_reasons()[1])

    def _estimates_and_reasons(self) -> tuple[dict[str, float], dict[str, str]]:
        a = self.analysis()
        cached = getattr(self, "_estimates", None)
        if cached is None or cached[0] is not a:
            with self._lock:
                threads = resolve_threads(self._threads)
                reasons: dict[str, str] = {}
                cka_u, reason = self.unbiased_cka()
                if reason is not None:
                    reasons["cka_unbiased"] = reason
                p = _core.procrustes(self._core, threads)
                values = {"cka_unbiased": cka_u, "procrustes": float(p["distance"]),
                          "procrustes_angular": float(p["angular"]),
                          "procrustes_angular_whitened": float(p["whitened_angular"])}
                for key, value in values.items():
                    if not np.isfinite(value) and key not in reasons:
                        reasons[key] = ("its value leaves the float64 range at this magnitude: multiply both "
                                        "modalities by a constant that brings their values near 1")
                        values[key] = float("nan")
            self._estimates = (a, values, reasons)
            cached = self._estimates
        return cached[1], cached[2]

    def unbiased_cka(self) -> tuple[float, str | None]:
        """The unbiased linear CKA of these moments and None, or NaN and why it is undefined
        (fewer than 4 pairs, byte form 1, fourth powers beyond float64): the part of
        :meth:`estimators` the audit's jackknife evaluates on every leave-one-out state."""
        norm = _core.moments_norm_state(self._core)
        if self.n < 4:
            return float("nan"), f"it needs at least 4 pairs, these moments hold {self.n}"
        if not norm["tracked"]:
            return float("nan"), ("these moments were restored from byte form 1, which does not carry the "
                                  "fourth-order sums: recompute them from the embeddings")
        if not self._fourth_powers_in_range(norm):
            return float("nan"), ("the embeddings' squared norms squared leave the float64 range at this "
                                  "magnitude: multiply both modalities by a constant that brings their values "
                                  "near 1 (CKA does not depend on scale)")
        value = float(_core.linear_cka_unbiased(self._core)["value"])
        if not np.isfinite(value):
            return float("nan"), ("its value leaves the float64 range at this magnitude: multiply both "
                                  "modalities by a constant that brings their values near 1")
        return value, None

    def _fourth_powers_in_range(self, norm: dict) -> bool:
        """Whether the fourth-order sums hold the rows' squared norms squared without overflow
        or underflow: finite, and not lost below float64's smallest normal number while the
        rows do spread (their shifted squared norms sum to the scatter's trace)."""
        products = np.asarray(norm["products"], dtype=np.float64)
        if not np.all(np.isfinite(products)):
            return False
        scatter_diagonal = np.diag(np.asarray(self._core.state()["shifted_scatter"]))
        for trace, fourth in ((scatter_diagonal[: self.dim].sum(), products[0]),
                              (scatter_diagonal[self.dim:].sum(), products[2])):
            mean_square = trace / max(self.n, 1)
            if mean_square > 0 and (mean_square < 1e-140 or fourth < 1e-280):
                return False
        return True

    def alignment(self, topq: float = 0.1, *, estimators: bool = True) -> dict[str, float]:
        """Every alignment metric of docs/definitions.md, as a dict of floats (plus n), with the
        estimators (ESTIMATOR_KEYS) after the covariance family; an estimator these moments
        leave undefined (see :meth:`estimators`) is absent rather than NaN. With
        ``estimators=False`` only the covariance family (the estimators cost about as much
        again at large d: a study's leave-one-out analyses leave them out on request)."""
        q = check_topq(topq)
        self._require_unit_rows("alignment()")
        a = self.analysis()
        i2t = self.spectral_profile("i2t").sas(q)
        t2i = self.spectral_profile("t2i").sas(q)
        out: dict[str, Any] = {
            "sas_i2t": i2t,
            "sas_t2i": t2i,
            "sas_sym": 0.5 * (i2t + t2i),
            "sas_imbalance": i2t - t2i,
        }
        for key in ALIGNMENT_KEYS[4:]:
            out[key] = self._defined(key)
        if estimators:
            values, undefined = self._estimates_and_reasons()
            out.update({key: value for key, value in values.items() if key not in undefined})
        out["n"] = int(self.n)
        out["topq"] = q
        return out

    # -- byte form ------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Compact versioned byte form (version 3): a header, the state as little-endian
        float64 (upper triangle of the scatter only, then the fourth-order sums), and a CRC-32
        of all of it (fastsas._byteform)."""
        s = self._core.state()
        d2 = 2 * self.dim
        upper = np.asarray(s["shifted_scatter"])[np.triu_indices(d2)]
        header = _HEADER.pack(_MAGIC, _FORMAT_VERSION, self.dim, s["count"], int(s["has_pilot"]),
                              int(self.tracks_unit_rows), s["matched_cosine_sum"])
        norm = _core.moments_norm_state(self._core)
        body = np.concatenate([s["pilot"], s["shifted_sum"], s["unit_sum"], upper, norm["products"],
                               np.asarray(norm["weighted"]).ravel(order="F")]).astype("<f8")
        return seal(header + _NORM_FLAG.pack(int(norm["tracked"])) + body.tobytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> "Moments":
        """The Moments of a byte form written by :meth:`to_bytes`. ValueError names what is
        wrong with a foreign, other-version, truncated, padded or damaged blob (the checksum
        is verified first), or with a state no rows could give (negative or inconsistent
        counts, NaN or infinite sums). Forms of versions 1 and 2, written before forms were
        sealed, are still read, with the same checks of what they decode to."""
        what = "Moments byte form"
        framed = unseal(data, _MAGIC, _FORMAT_VERSION, what, _UNSEALED_VERSIONS)
        if len(framed) < _HEADER.size:
            raise ValueError(f"{what} is truncated: {len(framed)} bytes, shorter than its {_HEADER.size}-byte header")
        _, version, dim, count, has_pilot, tracks, cos_sum = _HEADER.unpack_from(framed)
        if dim < 1 or count < 0 or has_pilot > 1 or tracks > 1:
            raise corrupt(what, f"its header says dim {dim}, n {count}, has_pilot {has_pilot}, unit rows {tracks}")
        d2 = 2 * dim
        triangle = d2 * (d2 + 1) // 2
        start = _HEADER.size + (_NORM_FLAG.size if version >= 2 else 0)
        expected = start + 8 * (3 * d2 + triangle + (3 + 2 * d2 if version >= 2 else 0))
        sealed = CHECKSUM_BYTES if version == _FORMAT_VERSION else 0
        if len(framed) != expected:
            raise ValueError(f"{what} is truncated or padded: {len(framed) + sealed} bytes, expected "
                             f"{expected + sealed} for dim {dim}")
        norm_tracked = version >= 2 and _NORM_FLAG.unpack_from(framed, _HEADER.size)[0]
        if norm_tracked > 1:
            raise corrupt(what, f"its fourth-order flag is {norm_tracked}")
        body = np.frombuffer(framed, dtype="<f8", offset=start).astype(np.float64)
        pilot, shifted_sum, unit_sum = body[:d2], body[d2:2 * d2], body[2 * d2:3 * d2]
        _check_state(what, count, bool(has_pilot), bool(tracks), cos_sum, pilot, shifted_sum, unit_sum,
                     body[3 * d2:3 * d2 + triangle], dim, body[3 * d2 + triangle:])
        scatter = np.zeros((d2, d2))
        scatter[np.triu_indices(d2)] = body[3 * d2:3 * d2 + triangle]
        m = cls(dim, track_unit_rows=bool(tracks))
        m._core.restore(count=count, has_pilot=bool(has_pilot), pilot=pilot, shifted_sum=shifted_sum,
                        shifted_scatter=np.asfortranarray(scatter), unit_sum=unit_sum, matched_cosine_sum=cos_sum)
        if norm_tracked:
            norm = body[3 * d2 + triangle:]
            _core.moments_restore_norm(m._core, norm[:3], np.asfortranarray(norm[3:].reshape(d2, 2, order="F")))
        return m

    def __reduce__(self):
        return (Moments.from_bytes, (self.to_bytes(),))

    def __repr__(self) -> str:
        return f"Moments(dim={self.dim}, n={self.n})"
