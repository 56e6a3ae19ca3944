"""Post-hoc modality-gap control for frozen dual encoders (METRICS.md "Modality-gap control").

With unit rows ``x̂ = x / ||x||`` and the gap vector ``gap = mean(X̂) - mean(Ŷ)``, the
shift with strength ``lam`` in [0, 1] is::

    x' = normalize(x̂ - (lam / 2) gap)        y' = normalize(ŷ + (lam / 2) gap)

``lam = 0`` gives the unit-normalised embeddings unchanged; ``lam = 1`` makes the two
centroids coincide before re-normalisation. The outputs are unit rows.

- :func:`gap_vector`: the gap of a pair of arrays, (d,) float64.
- :func:`shift`: shift whole arrays (the output is materialised; the work is done in
  blocks of rows, so the float64 scratch stays small).
- :func:`shift_chunks`: shift a stream of chunks with a precomputed gap, one chunk at a time.
- :func:`sweep`: every alignment metric, retrieval and (with labels) a cross-validated
  linear probe as a function of ``lam``.

>>> import numpy as np, fastsas as fs
>>> x, y = fs.synthetic.paired_embeddings(2000, 32, seed=0)
>>> xs, ys = fs.gap.shift(x, y, lam=1.0)
>>> xs.shape, xs.dtype
((2000, 32), dtype('float32'))
>>> before = np.linalg.norm(fs.gap.gap_vector(x, y))
>>> bool(np.linalg.norm(xs.mean(0) - ys.mean(0)) < 0.1 * before)
True
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from fastsas import _core
from fastsas._validate import (as_pair, check_number_sequence, check_topq, one_per_row, rename_bad_rows,
                               resolve_backend, resolve_threads)
from fastsas.moments import Moments
from fastsas.retrieval import _check_ks
from fastsas.retrieval import retrieval as _retrieval

__all__ = ["GapPoint", "GapSweep", "DEFAULT_LAMS", "gap_vector", "shift", "shift_chunks", "sweep"]

DEFAULT_LAMS = (0.0, 0.25, 0.5, 0.75, 1.0)

# Rows per float64 scratch block: bounds the temporary memory of a shift (block x dim x 8
# bytes per modality) whatever the chunk size.
_BLOCK_ROWS = 4096
# Rows listed in a bad-row message (the core lists the same number).
_SHOWN = 10
_NAMES = {"x": "images", "y": "texts"}
# Same wording as the C++ core's BadRowsError, so messages look alike everywhere.
_NON_FINITE = "non-finite values (NaN or Inf)"
_ZERO_NORM = "zero-norm rows (no direction to normalise)"
# The probe's solver budget: lbfgs on unit-norm features converges in far fewer.
_PROBE_MAX_ITER = 5000


# --------------------------------------------------------------------------- checks
def _check_lam(lam: Any, name: str = "lam") -> float:
    if isinstance(lam, bool) or not isinstance(lam, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number in [0, 1], got {lam!r}")
    v = float(lam)
    if not (0.0 <= v <= 1.0):  # also refuses NaN
        raise ValueError(
            f"{name} must be in [0, 1] (0: unit rows unchanged, 1: centroids coincide before "
            f"re-normalisation), got {v}"
        )
    return v


def _check_lams(lams: Any) -> tuple[float, ...]:
    return check_number_sequence(lams, "lams", integers=False, low=0.0, high=1.0,
                                 sequence_of="numbers in [0, 1]", example="(0, 0.5, 1)", item="lambda",
                                 item_range="in [0, 1]")


def _check_gap(gap: Any, dim: int | None) -> np.ndarray:
    """A (dim,) float64 copy of a gap vector (dim None: any length >= 1)."""
    try:
        g = np.asarray(gap)
    except Exception as exc:  # noqa: BLE001 - report any conversion failure the same way
        raise TypeError(f"gap must be a 1-D array of floats: {exc}") from exc
    if g.dtype.kind not in "fiu":
        raise TypeError(f"gap must be a 1-D array of floats, got dtype {g.dtype}")
    g = g.astype(np.float64)
    if g.ndim != 1 or g.shape[0] < 1 or (dim is not None and g.shape[0] != dim):
        want = f"({dim},) to match the embeddings' dim" if dim is not None else "(dim,)"
        raise ValueError(
            f"gap must have shape {want}, got shape {g.shape}; "
            "compute it with fs.gap.gap_vector(images, texts)"
        )
    if not np.all(np.isfinite(g)):
        raise ValueError("gap has NaN or Inf entries")
    norm = float(np.linalg.norm(g))
    if norm > 2.0 + 1e-6:
        raise ValueError(
            f"gap has norm {norm:.4g} > 2, so it is not a difference of two means of unit vectors; "
            "compute it from unit rows with fs.gap.gap_vector(images, texts)"
        )
    return g


def _check_positive_int(value: Any, name: str, minimum: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} ({what}), got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- row blocks
class _BadRows:
    """Carries a finding in the shape of the core's BadRowsError, for rename_bad_rows."""

    def __init__(self, input: str, problem: str, rows: list[int], total: int):
        self.input, self.problem, self.rows, self.total = input, problem, rows, total


def _sq_norms(a64: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a64, a64)


def _raise_bad_rows(x: np.ndarray, y: np.ndarray, offset: int, suffix: str) -> None:
    """Slow, exact account of the bad rows of (x, y), run only once a block found one.
    Same rules and order as the core: a squared norm (float64) that is not finite (NaN,
    Inf or overflow) first, images before texts; then zero norms."""
    found = {key: ([], 0) for key in (("x", _NON_FINITE), ("y", _NON_FINITE), ("x", _ZERO_NORM), ("y", _ZERO_NORM))}
    for start in range(0, x.shape[0], _BLOCK_ROWS):
        for side, a in (("x", x), ("y", y)):
            with np.errstate(over="ignore", invalid="ignore"):
                sq = _sq_norms(np.asarray(a[start:start + _BLOCK_ROWS], dtype=np.float64))
            for problem, mask in ((_NON_FINITE, ~np.isfinite(sq)), (_ZERO_NORM, sq == 0.0)):
                rows, total = found[(side, problem)]
                hits = np.flatnonzero(mask)
                rows.extend(int(start + r) for r in hits[: max(0, _SHOWN - len(rows))])
                found[(side, problem)] = (rows, total + int(hits.size))
    for (side, problem), (rows, total) in found.items():
        if total:
            raise rename_bad_rows(_BadRows(side, problem, rows, total), _NAMES, offset=offset, suffix=suffix)
    raise AssertionError("fastsas.gap: a block reported a bad row that a rescan did not find")  # pragma: no cover


def _unit(a: np.ndarray) -> np.ndarray | None:
    """float64 unit rows of a block, or None when a row has no direction."""
    # Always a C-ordered copy (normalised in place below): the same bits for any input layout.
    a64 = np.array(a, dtype=np.float64, order="C")
    with np.errstate(over="ignore", invalid="ignore"):
        sq = _sq_norms(a64)
    if not (np.all(np.isfinite(sq)) and np.all(sq > 0.0)):
        return None
    a64 /= np.sqrt(sq)[:, None]
    return a64


def _unit_blocks(x: np.ndarray, y: np.ndarray, offset: int, suffix: str) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(start, x̂ block, ŷ block) in float64 over blocks of rows; bad rows raise, naming them."""
    for start in range(0, x.shape[0], _BLOCK_ROWS):
        xh = _unit(x[start:start + _BLOCK_ROWS])
        yh = _unit(y[start:start + _BLOCK_ROWS])
        if xh is None or yh is None:
            _raise_bad_rows(x, y, offset, suffix)
        yield start, xh, yh


def _unit_sums(x: np.ndarray, y: np.ndarray, offset: int = 0, suffix: str = "") -> tuple[np.ndarray, np.ndarray]:
    sx = np.zeros(x.shape[1])
    sy = np.zeros(x.shape[1])
    for _, xh, yh in _unit_blocks(x, y, offset, suffix):
        sx += xh.sum(axis=0)
        sy += yh.sum(axis=0)
    return sx, sy


def _shift_into(x: np.ndarray, y: np.ndarray, gap: np.ndarray, lam: float, out_x: np.ndarray,
                out_y: np.ndarray, offset: int = 0, suffix: str = "") -> None:
    """Write the shifted unit rows of (x, y) into out_x, out_y (computed in float64)."""
    half = 0.5 * lam * gap
    for start, xh, yh in _unit_blocks(x, y, offset, suffix):
        if lam:
            xh -= half
            yh += half
            for side, block in (("images", xh), ("texts", yh)):
                norms = np.sqrt(_sq_norms(block))
                if not np.all(norms > 0.0):
                    rows = [offset + start + int(r) for r in np.flatnonzero(~(norms > 0.0))[:_SHOWN]]
                    raise ValueError(
                        f"{side} rows {rows} have no direction after the shift: x̂ equals (lam/2) gap "
                        f"(lam={lam}, ||gap||={np.linalg.norm(gap):.4g}); use a smaller lam or the "
                        "gap of these data (fs.gap.gap_vector)"
                    )
                block /= norms[:, None]
        stop = start + xh.shape[0]
        out_x[start:stop] = xh
        out_y[start:stop] = yh


def _out_dtype(x: np.ndarray) -> np.dtype:
    return np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)


# --------------------------------------------------------------------------- public: shift
def gap_vector(images: Any, texts: Any) -> np.ndarray:
    """The modality gap ``mean(X̂) - mean(Ŷ)``: mean unit image row minus mean unit text row.

    images, texts: (n, d) float16/32/64 arrays (NumPy or memmap), paired row by row, n >= 2.
    Returns a (d,) float64 array; its norm is at most 2. One O(n d) pass in float64 blocks
    (the same unit-row sums ``fs.Moments(d).update(images, texts).gap_vector()`` keeps,
    without the O(n d^2) second moments). Zero-norm and non-finite rows are refused, naming them.

    >>> import fastsas as fs
    >>> x, y = fs.synthetic.paired_embeddings(1000, 16, gap=1.0, seed=0)
    >>> fs.gap.gap_vector(x, y).shape
    (16,)
    """
    x, y = as_pair(images, texts)
    sx, sy = _unit_sums(x, y)
    return (sx - sy) / x.shape[0]


def shift(images: Any, texts: Any, lam: float, gap: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Shift paired embeddings toward each other to close the modality gap (METRICS.md).

    ``x' = normalize(x̂ - (lam/2) gap)``, ``y' = normalize(ŷ + (lam/2) gap)``, where ``x̂`` is
    a row divided by its L2 norm.

    images, texts: (n, d) float16/32/64 arrays, paired row by row, n >= 2.
    lam: in [0, 1]. 0 returns the unit-normalised rows; 1 makes the centroids of x̂ - gap/2
        and ŷ + gap/2 coincide (before the re-normalisation, which leaves a small residue).
    gap: (d,) gap vector; None (default) computes ``gap_vector(images, texts)``. Give the gap
        of a reference set (e.g. the training split) to apply the same shift to new data.

    Returns (images', texts'), (n, d) unit rows: float64 for float64 input, float32 for
    float32 or float16 input (computed in float64 blocks and rounded once). The input is
    not modified. Zero-norm and non-finite rows are refused, naming them.

    >>> import numpy as np, fastsas as fs
    >>> x, y = fs.synthetic.paired_embeddings(500, 16, seed=0, dtype=np.float64)
    >>> xs, ys = fs.gap.shift(x, y, 0.5)
    >>> np.allclose(np.linalg.norm(xs, axis=1), 1.0)
    True
    """
    lam = _check_lam(lam)
    x, y = as_pair(images, texts)
    g = gap_vector(x, y) if gap is None else _check_gap(gap, x.shape[1])
    dtype = _out_dtype(x)
    out_x = np.empty(x.shape, dtype=dtype)
    out_y = np.empty(y.shape, dtype=dtype)
    _shift_into(x, y, g, lam, out_x, out_y)
    return out_x, out_y


def _unpack(item: Any, i: int) -> tuple[Any, Any]:
    try:
        x, y = item
    except (TypeError, ValueError):
        raise TypeError(
            f"chunks must yield (images_chunk, texts_chunk) pairs; chunk {i} is a {type(item).__name__}"
        ) from None
    return x, y


def shift_chunks(chunks: Iterable[tuple[Any, Any]], gap: Any, lam: float) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Shift a stream of (images_chunk, texts_chunk) pairs with a precomputed gap, one chunk
    at a time: never more than one shifted chunk (plus a small float64 scratch) in memory.

    chunks: any iterable of pairs of (n_chunk, d) arrays (e.g. ``fs.io.iter_npy_pairs``).
    gap: (d,) gap vector, e.g. from a first pass (``fs.gap.gap_vector`` or
        ``fs.Moments(d)`` fed the same chunks, then ``.gap_vector()``).
    lam: in [0, 1].

    Yields (images', texts') per chunk, as :func:`shift` would return for those rows:
    new arrays, float64 for float64 chunks and float32 otherwise. Bad rows are named by
    their row number counted from the first row of the first chunk. ``lam`` and ``gap``
    are checked at once; each chunk is checked when it is reached.

    >>> import numpy as np, fastsas as fs
    >>> x, y = fs.synthetic.paired_embeddings(1000, 16, seed=0)
    >>> g = fs.gap.gap_vector(x, y)
    >>> parts = list(fs.gap.shift_chunks(((x[i:i + 300], y[i:i + 300]) for i in range(0, 1000, 300)), g, 1.0))
    >>> np.array_equal(np.concatenate([p[0] for p in parts]), fs.gap.shift(x, y, 1.0, gap=g)[0])
    True
    """
    lam = _check_lam(lam)
    g = _check_gap(gap, None)
    try:
        it = iter(chunks)
    except TypeError:
        raise TypeError(
            f"chunks must be an iterable of (images_chunk, texts_chunk) pairs, got {type(chunks).__name__}"
        ) from None

    def generate() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        offset = 0
        for i, item in enumerate(it):
            x, y = as_pair(*_unpack(item, i), names=(f"images (chunk {i})", f"texts (chunk {i})"), min_rows=0)
            if x.shape[1] != g.shape[0]:
                raise ValueError(
                    f"chunk {i} has dim {x.shape[1]} but gap has {g.shape[0]} entries; "
                    "the gap must come from embeddings of the same model"
                )
            dtype = _out_dtype(x)
            out_x = np.empty(x.shape, dtype=dtype)
            out_y = np.empty(y.shape, dtype=dtype)
            suffix = " (row numbers count from the first row of the first chunk)" if offset else ""
            _shift_into(x, y, g, lam, out_x, out_y, offset, suffix)
            offset += x.shape[0]
            yield out_x, out_y

    return generate()


# --------------------------------------------------------------------------- sources
class _ArraySource:
    """Two in-memory (or memory-mapped) arrays read in slices of chunk_rows."""

    kind = "arrays"
    suffix = ""

    def __init__(self, images: Any, texts: Any, chunk_rows: int):
        self.x, self.y = as_pair(images, texts)
        self.n, self.dim = self.x.shape
        self.chunk_rows = chunk_rows
        self.dtype = _out_dtype(self.x)

    def chunks(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        for start in range(0, self.n, self.chunk_rows):
            yield start, self.x[start:start + self.chunk_rows], self.y[start:start + self.chunk_rows]


class _ChunkSource:
    """A re-readable source of (images_chunk, texts_chunk) pairs: read once per pass."""

    kind = "chunks"
    suffix = " (row numbers count from the first row of the first chunk)"

    def __init__(self, source: Any):
        if callable(source):
            self._open: Callable[[], Any] = source
        else:
            try:
                it = iter(source)
            except TypeError:
                raise TypeError(
                    "images must be an array (with texts), or, with texts=None, a chunk source: a function "
                    "returning a fresh iterable of (images_chunk, texts_chunk) pairs, or a re-iterable such "
                    f"as a list of pairs; got {type(source).__name__}"
                ) from None
            if it is source:
                raise TypeError(
                    "images is a one-shot iterator, but the sweep reads its chunks once per pass; pass a "
                    "function returning a fresh iterator instead, e.g. "
                    "lambda: fs.io.iter_npy_pairs('images.npy', 'texts.npy')"
                )
            self._open = lambda: source
        self.n: int | None = None
        self.dim: int | None = None
        self.dtype = np.dtype(np.float32)

    def chunks(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        first = self.n is None
        try:
            it = iter(self._open())
        except TypeError:
            raise TypeError("the chunk source must return an iterable of (images_chunk, texts_chunk) pairs") from None
        offset = 0
        for i, item in enumerate(it):
            x, y = as_pair(*_unpack(item, i), names=(f"images (chunk {i})", f"texts (chunk {i})"), min_rows=0)
            if self.dim is None:
                self.dim = x.shape[1]
            elif x.shape[1] != self.dim:
                raise ValueError(f"chunk {i} has dim {x.shape[1]} but the first chunk had dim {self.dim}")
            if first and x.dtype == np.float64:
                self.dtype = np.dtype(np.float64)
            if not first and offset + x.shape[0] > self.n:
                raise ValueError(self._changed(f"more than {self.n}"))
            if x.shape[0]:
                yield offset, x, y
            offset += x.shape[0]
        if first:
            if offset < 2:
                raise ValueError(f"the chunk source yielded {offset} pairs; the sweep needs at least 2")
            self.n = offset
        elif offset != self.n:
            raise ValueError(self._changed(str(offset)))

    def _changed(self, got: str) -> str:
        return (f"the chunk source yielded {got} rows on a later pass but {self.n} on the first; it must "
                "give the same data on every pass")


# --------------------------------------------------------------------------- probe
def _check_labels(labels: Any, n: int, cv: int) -> tuple[np.ndarray, list[Any]]:
    """Integer class codes 0..k-1 (one per pair) and the class values."""
    arr = one_per_row(labels, "labels", n, item="class label", per="pair", counted="entries")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        bad = np.flatnonzero(~np.isfinite(arr))
        raise ValueError(f"labels has NaN or Inf at {bad.size} rows (first: {bad[:_SHOWN].tolist()}); "
                         "every pair needs a class label")
    if arr.dtype.kind in "iubfUS":
        values, codes, counts = np.unique(arr, return_inverse=True, return_counts=True)
        classes = values.tolist()
        codes = codes.reshape(-1)
    else:  # objects or mixed kinds: classes in order of first appearance
        table: dict[Any, int] = {}
        codes = np.empty(n, dtype=np.int64)
        for i, v in enumerate(arr.tolist()):
            try:
                codes[i] = table.setdefault(v, len(table))
            except TypeError:
                raise TypeError(f"labels[{i}] = {v!r} is not hashable; labels must be hashable values") from None
        classes = list(table)
        counts = np.bincount(codes, minlength=len(classes))
    if len(classes) < 2:
        raise ValueError(f"labels has a single class ({classes[0]!r}); a probe needs at least 2 classes")
    small = [(c, int(k)) for c, k in zip(classes, counts) if k < cv]
    if small:
        listed = ", ".join(f"{c!r} ({k})" for c, k in small[:_SHOWN]) + (", ..." if len(small) > _SHOWN else "")
        least = int(np.min(counts))
        fix = (f"use cv={least} or fewer folds" if least >= 2
               else "drop or merge the classes with a single member")
        raise ValueError(
            f"labels: {len(small)} class(es) have fewer members than cv={cv} folds: {listed}; "
            f"stratified folds need every class in every fold, so {fix}"
        )
    return codes.astype(np.int64), classes


def _probe(features: np.ndarray, codes: np.ndarray, n_classes: int, cv: int, seed: int) -> dict[str, Any]:
    """Cross-validated logistic-regression probe: mean accuracy and macro one-vs-rest AUROC."""
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import roc_auc_score
        from sklearn.model_selection import StratifiedKFold
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        raise ImportError("the linear probe needs scikit-learn: pip install scikit-learn") from None
    accuracy, auroc, iterations = [], [], []
    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
    for train, test in folds.split(np.zeros((codes.shape[0], 1)), codes):
        clf = LogisticRegression(max_iter=_PROBE_MAX_ITER)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence is reported in the result instead
            clf.fit(features[train], codes[train])
        proba = clf.predict_proba(features[test])
        accuracy.append(float(np.mean(clf.classes_[np.argmax(proba, axis=1)] == codes[test])))
        if n_classes == 2:
            auroc.append(float(roc_auc_score(codes[test], proba[:, 1])))
        else:
            auroc.append(float(roc_auc_score(codes[test], proba, multi_class="ovr", average="macro",
                                             labels=clf.classes_)))
        iterations.append(int(np.max(clf.n_iter_)))
    return {
        "accuracy": float(np.mean(accuracy)),
        "accuracy_std": float(np.std(accuracy)),
        "auroc": float(np.mean(auroc)),
        "auroc_std": float(np.std(auroc)),
        "fold_accuracy": accuracy,
        "fold_auroc": auroc,
        "converged": all(i < _PROBE_MAX_ITER for i in iterations),
    }


# --------------------------------------------------------------------------- results
def _plain(value: Any) -> Any:
    """JSON-ready copy: NumPy scalars and arrays become Python numbers and lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(frozen=True, eq=False)
class GapPoint:
    """The sweep at one lambda.

    lam: the shift strength. gap_norm: ``||mean(x') - mean(y')||`` of the shifted unit rows
    (equal to ``alignment["centroid_euclidean"]``). alignment: the full ``fs.alignment`` dict
    of (x', y'). retrieval: ``fs.retrieval`` summary of (x', y') or None. probe: None, or
    ``accuracy``, ``auroc`` (fold means), ``accuracy_std``, ``auroc_std``, ``fold_accuracy``,
    ``fold_auroc`` (one value per fold) and ``converged``.
    """

    lam: float
    gap_norm: float
    alignment: dict[str, Any]
    retrieval: dict[str, Any] | None
    probe: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return _plain({"lam": self.lam, "gap_norm": self.gap_norm, "alignment": self.alignment,
                       "retrieval": self.retrieval, "probe": self.probe})


@dataclass(frozen=True, eq=False)
class GapSweep:
    """Result of :func:`sweep`: one :class:`GapPoint` per lambda, in the order given.

    lams: the lambdas. gap: (d,) float64 gap vector the shifts used. baseline: ``fs.alignment``
    of the input as given (before unit normalisation; SAS, CKA, CORAL, SVCCA and the centroid
    distances depend on row norms, so they differ from the lambda = 0 point, while Delta-cos,
    RMG, the cone and the matched cosine do not). best_lam: the lambda with the highest probe
    accuracy (ties: the smaller lambda), None without labels. settings: how it was computed.
    """

    lams: tuple[float, ...]
    gap: np.ndarray
    baseline: dict[str, Any]
    points: tuple[GapPoint, ...]
    best_lam: float | None
    settings: dict[str, Any]

    @property
    def gap_norm(self) -> float:
        """Norm of the gap of the unshifted data."""
        return float(np.linalg.norm(self.gap))

    def point(self, lam: float) -> GapPoint:
        for p in self.points:
            if p.lam == float(lam):
                return p
        raise KeyError(f"lam={lam} is not in this sweep; it has lams={self.lams}")

    def series(self, key: str) -> np.ndarray:
        """One number per lambda: ``"gap_norm"``, any alignment key (``"sas_sym"``), any
        retrieval key (``"rsum"``) or any probe key (``"accuracy"``, ``"auroc"``)."""
        if key == "gap_norm":
            return np.array([p.gap_norm for p in self.points])
        for part in ("alignment", "retrieval", "probe"):
            first = getattr(self.points[0], part)
            if first is not None and key in first:
                return np.array([getattr(p, part)[key] for p in self.points], dtype=np.float64)
        known = ["gap_norm"] + [k for part in ("alignment", "retrieval", "probe")
                                for k in (getattr(self.points[0], part) or {})]
        raise KeyError(f"{key!r} is not a metric of this sweep; known: {', '.join(known)}")

    def to_dict(self) -> dict[str, Any]:
        return _plain({"lams": list(self.lams), "gap": self.gap, "gap_norm": self.gap_norm,
                       "baseline": self.baseline, "points": [p.to_dict() for p in self.points],
                       "best_lam": self.best_lam, "settings": self.settings})


# --------------------------------------------------------------------------- sweep
def sweep(
    images: Any,
    texts: Any = None,
    lams: Iterable[float] = DEFAULT_LAMS,
    labels: Any = None,
    *,
    topq: float = 0.1,
    ks: Iterable[int] = (1, 5, 10),
    cv: int = 5,
    seed: int = 0,
    retrieval: bool = True,
    chunk_rows: int = 65536,
    gap: Any = None,
    threads: int | None = None,
    backend: str = "auto",
) -> GapSweep:
    """Every alignment metric, retrieval and a downstream probe as a function of the
    modality-gap shift ``lam`` (METRICS.md "Modality-gap control").

    Input: ``images``, ``texts``: (n, d) float16/32/64 arrays (NumPy or memmap), paired row by
    row; or ``texts=None`` and ``images`` a chunk source: a function returning a fresh iterable
    of (images_chunk, texts_chunk) pairs (e.g. ``lambda: fs.io.iter_npy_pairs(a, b)``) or a
    re-iterable such as a list of pairs. The source is read once per pass.

    How: a first pass computes the gap vector (unless ``gap`` is given) and the alignment of
    the input as given (``baseline``). Then the data are shifted chunk by chunk (``chunk_rows``
    rows at a time for arrays, the source's own chunks otherwise) and streamed into one
    ``fs.Moments`` per lambda, so the alignment needs no shifted copy of the data: with
    ``retrieval=False`` and no labels, one more pass serves every lambda. Retrieval and the
    probe need whole arrays: then each lambda gets its own pass, which writes that lambda's
    shifted pair into one (n, 2d) buffer (float32, float64 for float64 input) reused from
    lambda to lambda, so one shifted copy of the data is held at a time.

    lams: lambdas in [0, 1], distinct; reported in the order given.
    labels: None, or one class label per pair (ints, strings, ...). Then each lambda gets a
        linear probe: scikit-learn ``LogisticRegression(max_iter=5000)`` (default C=1, lbfgs)
        on the fused features ``np.hstack([x', y'])``, scored by
        ``StratifiedKFold(cv, shuffle=True, random_state=seed)`` (the same folds at every
        lambda): mean accuracy and AUROC (binary, or macro one-vs-rest for 3+ classes).
        ``best_lam`` is the lambda with the highest accuracy (ties: the smaller lambda).
        Every class needs at least ``cv`` members.
    topq: SAS's top fraction of modes. ks: retrieval cutoffs (``fs.retrieval``).
    retrieval: compute the retrieval summary at every lambda.
    gap: a (d,) gap vector to use instead of the data's own (e.g. a training split's).
    threads: worker threads for the core (None: the fastsas default).
    backend: "auto" (the GPU when CuPy sees one), "cpu" or "cuda": where each lambda's retrieval
        (the O(n^2) part) runs; the moment passes stay on the CPU, streamed with the shifts.
        Recorded in ``settings["backend"]``.

    Returns a :class:`GapSweep` (``.to_dict()`` is JSON-ready; ``.series("sas_sym")``
    gives one value per lambda). At ``lam = 0`` the point equals ``fs.alignment`` and
    ``fs.retrieval`` of the unit-normalised rows (retrieval normalises anyway, so it equals
    ``fs.retrieval(images, texts)``).

    >>> import numpy as np, fastsas as fs
    >>> x, y = fs.synthetic.paired_embeddings(600, 32, gap=1.0, seed=0)
    >>> labels = (x[:, 0] > np.median(x[:, 0])).astype(int)
    >>> res = fs.gap.sweep(x, y, lams=(0, 0.5, 1), labels=labels, ks=(1, 5))
    >>> bool(np.all(np.diff(res.series("gap_norm")) < 0))
    True
    >>> res.best_lam in res.lams
    True
    """
    lams = _check_lams(lams)
    q = check_topq(topq)
    kind = resolve_backend(backend)
    if threads is not None:
        resolve_threads(threads)
    if not isinstance(retrieval, (bool, np.bool_)):
        raise TypeError(f"retrieval must be True or False, got {retrieval!r}")
    chunk_rows = _check_positive_int(chunk_rows, "chunk_rows", 1, "rows shifted at a time")
    if labels is not None:
        cv = _check_positive_int(cv, "cv", 2, "the number of cross-validation folds")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
            raise ValueError(f"seed must be an integer in [0, 2**32) (it fixes the probe's folds), got {seed!r}")
        seed = int(seed)
    if texts is None:
        if isinstance(images, np.ndarray) or hasattr(images, "__array__"):
            raise ValueError("texts is missing: give sweep(images, texts), or a chunk source as images alone")
        source: _ArraySource | _ChunkSource = _ChunkSource(images)
    else:
        source = _ArraySource(images, texts, chunk_rows)

    checked: dict[str, Any] = {}

    def check_sized(n: int) -> None:
        if retrieval:
            checked["ks"] = _check_ks(ks, n, n)
        if labels is not None:
            checked["codes"], checked["classes"] = _check_labels(labels, n, cv)

    if source.n is not None:
        check_sized(source.n)

    # Pass 1: the gap (unit-row sums) and the baseline alignment of the data as given.
    baseline: Moments | None = None
    sx = sy = None
    for offset, x, y in source.chunks():
        if baseline is None:
            baseline = Moments(x.shape[1], threads=threads)
            sx, sy = np.zeros(x.shape[1]), np.zeros(x.shape[1])
        try:
            cx, cy = _unit_sums(x, y, offset, source.suffix)
        except ValueError:
            if isinstance(source, _ArraySource):  # name the bad rows of the whole arrays
                _raise_bad_rows(source.x, source.y, 0, "")
            raise
        sx += cx
        sy += cy
        baseline.update(x, y)
    n, dim = int(source.n), int(source.dim)
    if not checked:
        check_sized(n)
    g = (sx - sy) / n if gap is None else _check_gap(gap, dim)
    dtype = source.dtype

    materialise = bool(retrieval) or labels is not None
    fused = np.empty((n, 2 * dim), dtype=dtype) if materialise else None
    groups = [[lam] for lam in lams] if materialise else [list(lams)]
    points: dict[float, GapPoint] = {}
    for group in groups:
        moments = {lam: Moments(dim, threads=threads) for lam in group}
        scratch: np.ndarray | None = None
        for offset, x, y in source.chunks():
            rows = x.shape[0]
            if fused is not None:
                block = fused[offset:offset + rows]
            else:
                if scratch is None or scratch.shape[0] < rows:
                    scratch = np.empty((rows, 2 * dim), dtype=dtype)
                block = scratch[:rows]
            for lam in group:
                _shift_into(x, y, g, lam, block[:, :dim], block[:, dim:], offset, source.suffix)
                moments[lam].update(block[:, :dim], block[:, dim:])
        for lam in group:
            m = moments[lam]
            ret = None
            if retrieval:
                ret = _retrieval(fused[:, :dim], fused[:, dim:], ks=checked["ks"], threads=threads, backend=kind)
            probe = None
            if labels is not None:
                probe = _probe(fused, checked["codes"], len(checked["classes"]), cv, seed)
            points[lam] = GapPoint(lam, float(np.linalg.norm(m.gap_vector())), m.alignment(q), ret, probe)

    best = None
    if labels is not None:
        top = max(points[lam].probe["accuracy"] for lam in lams)
        best = min(lam for lam in lams if points[lam].probe["accuracy"] >= top - 1e-12)
    settings = {
        "n": n,
        "dim": dim,
        "dtype": str(dtype),
        "source": source.kind,
        "chunk_rows": chunk_rows if source.kind == "arrays" else None,
        "topq": q,
        "ks": list(checked["ks"]) if retrieval else None,
        "gap_given": gap is not None,
        "backend": kind if retrieval else "cpu",
        "probe": None if labels is None else {
            "model": f"LogisticRegression(max_iter={_PROBE_MAX_ITER}) on hstack([x', y'])",
            "folds": f"StratifiedKFold(n_splits={cv}, shuffle=True, random_state={seed})",
            "cv": cv,
            "seed": seed,
            "classes": [str(c) for c in checked["classes"]],
        },
        "definitions_version": _core.DEFINITIONS_VERSION,
    }
    return GapSweep(lams, g, baseline.alignment(q), tuple(points[lam] for lam in lams), best, settings)
