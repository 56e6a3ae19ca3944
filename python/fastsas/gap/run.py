"""The gap sweep (:func:`sweep`): every alignment metric, retrieval and a downstream probe
as a function of the modality-gap shift, from one pass per lambda group over the data."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import numpy as np

from fastsas import _core, _dispatch
from fastsas._validate import as_pair, check_int, check_ks, check_number_sequence, check_topq, resolve_threads
from fastsas.gap.probe import PROBE_MAX_ITER, check_labels, fit_probe
from fastsas.gap.results import GapPoint, GapSweep
from fastsas.gap.transform import check_gap, out_dtype, raise_bad_rows, shift_into, unit_sums, unpack_pair
from fastsas.moments import Moments
from fastsas.retrieval import retrieval as run_retrieval

__all__ = ["DEFAULT_LAMS", "sweep"]

DEFAULT_LAMS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _check_lams(lams: Any) -> tuple[float, ...]:
    return check_number_sequence(lams, "lams", integers=False, low=0.0, high=1.0,
                                 sequence_of="numbers in [0, 1]", example="(0, 0.5, 1)", item="lambda",
                                 item_range="in [0, 1]")


class _ArraySource:
    """Two in-memory (or memory-mapped) arrays read in slices of chunk_rows."""

    kind = "arrays"
    suffix = ""

    def __init__(self, images: Any, texts: Any, chunk_rows: int):
        self.x, self.y = as_pair(images, texts)
        self.n, self.dim = self.x.shape
        self.chunk_rows = chunk_rows
        self.dtype = out_dtype(self.x)

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
            x, y = as_pair(*unpack_pair(item, i), names=(f"images (chunk {i})", f"texts (chunk {i})"), min_rows=0)
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


class _Ticker:
    """A progress hook driven stage by stage: :meth:`tick` after each stage, :meth:`close`
    at the end (the hook's bar then reaches its total and closes)."""

    def __init__(self, progress: Any, description: str, total: int):
        self._steps = iter(progress(range(total), description, total)) if progress is not None else None
        if self._steps is not None:
            next(self._steps, None)
        self._left = total

    def tick(self) -> None:
        if self._steps is not None and self._left > 1:
            next(self._steps, None)
        self._left -= 1

    def close(self) -> None:
        if self._steps is not None:
            for _ in self._steps:
                pass
            self._steps = None


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
    progress: Any = None,
) -> GapSweep:
    """Every alignment metric, retrieval and a downstream probe as a function of the
    modality-gap shift ``lam`` (docs/definitions.md, "Modality-gap control").

    A first pass computes the gap vector (unless `gap` is given) and the alignment of the
    input as given (``baseline``). Then the data are shifted chunk by chunk and streamed into
    one ``fs.Moments`` per lambda, so the alignment needs no shifted copy of the data: with
    ``retrieval=False`` and no labels, one more pass serves every lambda. Retrieval and the
    probe need whole arrays: then each lambda gets its own pass, which writes that lambda's
    shifted pair into one (n, 2d) buffer reused from lambda to lambda.

    Parameters
    ----------
    images, texts : array_like, shape (n, d)
        float16/32/64 arrays (NumPy or memmap), paired row by row; or `texts` None and
        `images` a chunk source: a function returning a fresh iterable of (images_chunk,
        texts_chunk) pairs (e.g. ``lambda: fs.io.iter_npy_pairs(a, b)``) or a re-iterable such
        as a list of pairs, read once per pass.
    lams : float or sequence of float, default (0, 0.25, 0.5, 0.75, 1)
        Distinct lambdas in [0, 1], reported in the order given.
    labels : array_like or None
        One class label per pair: then each lambda gets a linear probe
        (``LogisticRegression(max_iter=5000)`` on ``hstack([x', y'])``, scored by
        ``StratifiedKFold(cv, shuffle=True, random_state=seed)``, the same folds at every
        lambda); every class needs at least `cv` members.
    topq : float, default 0.1
        SAS's top fraction of anchor modes.
    ks : int or sequence of int, default (1, 5, 10)
        Retrieval cutoffs, checked as :func:`fastsas.retrieval` checks them.
    cv : int, default 5
        Folds of the probe, >= 2.
    seed : int, default 0
        The folds' shuffle, in [0, 2**32).
    retrieval : bool, default True
        Compute the retrieval summary at every lambda.
    chunk_rows : int, default 65536
        Rows shifted at a time (array inputs).
    gap : array_like, shape (d,), or None
        A gap vector to use instead of the data's own (e.g. a training split's).
    threads : int or None
        Worker threads of the core (None: the fastsas default).
    backend : {"auto", "cpu", "cuda"}, default "auto"
        Where each lambda's retrieval (the O(n^2) part) runs; the moment passes stay on the
        CPU. Recorded in ``settings["backend"]``.
    progress : callable or None
        ``progress(iterable, description, total)`` (as :func:`fastsas.audit` takes it): one
        bar per lambda, advancing after its moments, its retrieval and each probe fold.

    Returns
    -------
    GapSweep
        One :class:`GapPoint` per lambda; ``.series("sas_sym")`` gives one value per lambda,
        ``.to_dict()`` is JSON-ready. At lam = 0 a point equals :func:`fastsas.alignment` and
        :func:`fastsas.retrieval` of the unit-normalised rows.

    Raises
    ------
    TypeError, ValueError
        For any bad argument (all checked before the first pass where the size is known),
        bad rows, or a chunk source that changes between passes.
    RuntimeError
        When ``backend="cuda"`` and no GPU is usable.

    Examples
    --------
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
    kind = _dispatch.resolve_backend(backend)
    resolve_threads(threads)
    if not isinstance(retrieval, (bool, np.bool_)):
        raise TypeError(f"retrieval must be True or False, got {retrieval!r}")
    chunk_rows = check_int(chunk_rows, "chunk_rows")
    if labels is not None:
        cv = check_int(cv, "cv", low=2, meaning="the number of cross-validation folds")
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
            checked["ks"] = check_ks(ks, n, n)
        if labels is not None:
            checked["codes"], checked["classes"] = check_labels(labels, n, cv)

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
            cx, cy = unit_sums(x, y, offset, source.suffix)
        except ValueError:
            if isinstance(source, _ArraySource):  # name the bad rows of the whole arrays
                raise_bad_rows(source.x, source.y, 0, "")
            raise
        sx += cx
        sy += cy
        baseline.update(x, y)
    n, dim = int(source.n), int(source.dim)
    if not checked:
        check_sized(n)
    g = (sx - sy) / n if gap is None else check_gap(gap, dim)
    dtype = source.dtype

    materialise = bool(retrieval) or labels is not None
    fused = np.empty((n, 2 * dim), dtype=dtype) if materialise else None
    groups = [[lam] for lam in lams] if materialise else [list(lams)]
    points: dict[float, GapPoint] = {}
    for group in groups:
        stages = 1 + (len(group) if retrieval else 0) + (len(group) * cv if labels is not None else 0)
        what = ", ".join(["moments"] + (["retrieval"] if retrieval else []) + ([f"{cv} probe folds"] if labels is not None
                                                                              else []))
        ticker = _Ticker(progress, f"gap sweep, λ = {', '.join(f'{lam:g}' for lam in group)} ({what})", stages)
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
                shift_into(x, y, g, lam, block[:, :dim], block[:, dim:], offset, source.suffix)
                moments[lam].update(block[:, :dim], block[:, dim:])
        ticker.tick()
        for lam in group:
            m = moments[lam]
            ret = None
            if retrieval:
                ret = run_retrieval(fused[:, :dim], fused[:, dim:], ks=checked["ks"], threads=threads, backend=kind)
                ticker.tick()
            probe = None
            if labels is not None:
                probe = fit_probe(fused, checked["codes"], len(checked["classes"]), cv, seed, on_fold=ticker.tick)
            points[lam] = GapPoint(lam, float(np.linalg.norm(m.gap_vector())), m.alignment(q), ret, probe)
        ticker.close()

    best = None
    gain = None
    if labels is not None:
        top = max(points[lam].probe["accuracy"] for lam in lams)
        best = min(lam for lam in lams if points[lam].probe["accuracy"] >= top - 1e-12)
        gain = probe_gain(points, best)
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
            "model": f"LogisticRegression(max_iter={PROBE_MAX_ITER}) on hstack([x', y'])",
            "folds": f"StratifiedKFold(n_splits={cv}, shuffle=True, random_state={seed})",
            "cv": cv,
            "seed": seed,
            "classes": [str(c) for c in checked["classes"]],
        },
        "definitions_version": _core.DEFINITIONS_VERSION,
    }
    return GapSweep(lams, g, baseline.alignment(q), tuple(points[lam] for lam in lams), best, settings, gain)


def probe_gain(points: dict, best: float) -> dict:
    """Whether the best lambda beats lambda = 0 beyond the probe's cross-validation spread:
    the per-fold accuracy differences (the same folds at every lambda) have a mean larger
    than their standard deviation (docs/definitions.md, "Modality-gap control")."""
    if 0.0 not in points:
        return {"reference": None, "declared": None,
                "rule": "no lambda = 0 in the sweep to compare the best lambda against"}
    diffs = np.asarray(points[best].probe["fold_accuracy"]) - np.asarray(points[0.0].probe["fold_accuracy"])
    mean = float(diffs.mean())
    spread = float(diffs.std(ddof=1)) if diffs.size > 1 else 0.0
    declared = bool(best != 0.0 and mean > spread)
    return {"reference": 0.0, "candidate": best, "mean_gain": mean, "spread": spread, "declared": declared,
            "rule": "declared when the mean per-fold accuracy gain over lambda = 0 exceeds the standard deviation "
                    "of the per-fold gains (same folds at every lambda)"}
