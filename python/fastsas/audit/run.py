"""The audit in process (:func:`audit`): the plan, one pass of the state over the archive
in chunks, then retrieval (with progress in query rows), the passes that read the rows
again, and the result."""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from fastsas import _core, _dispatch
from fastsas._validate import as_pair, check_int, is_source, resolve_threads
from fastsas.audit.plan import AuditPlan
from fastsas.audit.results import AuditResult
from fastsas.neighbourhood import NEIGHBOURHOOD_KEYS
from fastsas.neighbourhood import neighbourhood as neighbourhood_of
from fastsas.audit.rows import ArchiveRows
from fastsas.retrieval import rank_summary
from fastsas.retrieval import retrieval as retrieval_of

__all__ = ["audit"]


def audit(
    images: Any,
    texts: Any = None,
    groups: Any = None,
    image_ids: Any = None,
    text_ids: Any = None,
    topq: float = 0.1,
    *,
    periods: Any = None,
    jackknife_blocks: int = 20,
    mismatches: int = 20,
    mismatch_fdr: float | None = 0.05,
    chance_repeats: int = 3,
    seed: int = 0,
    recorded_ids: bool = True,
    unit_name: str | None = None,
    retrieval: str | bool = "both",
    ks: Sequence[int] = (1, 5, 10),
    chunk_rows: int = 65536,
    threads: int | None = None,
    progress: Any = None,
    max_cell_bytes: int = 2 << 30,
    backend: str = "auto",
    neighbourhood: int | None = None,
) -> AuditResult:
    """Audit paired embeddings: the whole archive, subgroups against the rest, uncertainty
    by units, SAS's conditioning, the chance level, suspected mismatches at a false
    discovery rate, drift with a trend test, from one streaming pass over the moments, exact
    retrieval, and passes that read the rows again (docs/definitions.md, "Audits").

    Parameters
    ----------
    images, texts : array_like or source
        (n, d) float16/float32/float64 arrays paired row by row (in memory or
        ``np.load(..., mmap_mode="r")``); or `images` a paired source (an
        :class:`~fastsas.store.EmbeddingStore`, anything :func:`fastsas.store.open_source`
        returns) and `texts` None: the moments are then streamed from it in chunks (bounded
        memory), and retrieval reads its memory-mapped arrays.
    groups : array_like or None
        One label per pair (modality, body part, site, ...): each subgroup gets its own
        alignment with jackknife intervals and retrieval.
    image_ids, text_ids : array_like or None
        Retrieval ground truth as in :func:`fastsas.retrieval` (default: row i <-> row i);
        with ids the id is the unit of uncertainty (all rows of one id share a jackknife
        block) and of the mismatch test.
    topq : float, default 0.1
        SAS's top fraction of anchor modes, in (0, 1].
    periods : array_like or None
        One time-like label per pair (year, month): one drift point per period.
    jackknife_blocks : int, default 20
        Blocks of the delete-a-block jackknife, in [2, n].
    mismatches : int, default 20
        Suspected mismatches to list (the count flagged is never capped; 0: list none).
    mismatch_fdr : float or None, default 0.05
        False discovery rate of the suspected-mismatch test, in (0, 1); None: no test (and no
        moments of the unit rows in the pass).
    chance_repeats : int, default 3
        Random re-pairings of the chance level (0: none); each is one more pass.
    seed : int, default 0
        Seed of the re-pairings and of the mismatch test's sampled mismatches.
    recorded_ids : bool, default True
        With a source that records its id column (an embedding store: ``store.id_column``,
        as ``fastsas embed`` writes it) and no `image_ids`, use that column as the ids (the
        unit, the ground truth, the mismatch test's units); False: every pair is a unit.
    unit_name : str or None
        The name of the ids' column, shown in the result and the report.
    retrieval : {"both", "whole", "within", "none"} or bool, default "both"
        Retrieval over the whole gallery, within each subgroup, both (True) or none
        (False). Suspected mismatches come from the whole-gallery ranks, or from the
        within-subgroup ranks when only those are computed.
    ks : int or sequence of int, default (1, 5, 10)
        Retrieval cutoffs, checked as :func:`fastsas.retrieval` checks them.
    chunk_rows : int, default 65536
        Rows per chunk of the pass.
    threads : int or None
        Worker threads of the core (None: every core this process may use).
    progress : callable or None
        ``progress(iterable, description, total) -> iterable`` wrapping each long step
        (the CLI passes rich progress bars); an item that is a ``range`` stands for that
        many rows (whole-gallery retrieval advances in query rows, `total` rows); None:
        silent.
    max_cell_bytes : int, default 2 GiB
        Memory cap of the (subgroup, jackknife block) cells whose merges give each
        subgroup's intervals (a cell is (2d)^2 float64): fewer blocks per subgroup when
        needed (at least 5, else no subgroup interval).
    backend : {"auto", "cpu", "cuda"}, default "auto"
        Where retrieval (the n^2 part) runs; the moments run on the CPU core.
    neighbourhood : int or None, default None
        With a `topk`, the neighbourhood family (:func:`fastsas.neighbourhood`: mutual, cycle,
        LCS and edit-distance k-NN, CKNNA) of the whole archive and of each subgroup with more
        than `topk` pairs, from exact within-modality neighbours (CPU; as costly as
        whole-gallery retrieval, twice over). None: not computed.

    Returns
    -------
    AuditResult
        Every number; ``.to_dict()`` is JSON-ready, printing it shows a summary.

    Raises
    ------
    TypeError, ValueError
        For bad inputs or options, all checked before the pass; bad rows (NaN/Inf, all
        zeros) are named by their row in the archive.
    RuntimeError
        When ``backend="cuda"`` and no GPU is usable.

    Notes
    -----
    The pass is :meth:`AuditPlan.new_state` / :meth:`AuditState.accumulate` / merge, the
    rest is :meth:`AuditPlan.finalize`: :func:`fastsas.dask.audit` maps the same pieces over
    a cluster. The imbalance's sign: see docs/definitions.md.

    Examples
    --------
    >>> import fastsas as fs, numpy as np
    >>> x, y = fs.synthetic.paired_embeddings(4000, 32, image_only_factors=3)
    >>> r = fs.audit(x, y, groups=np.arange(4000) % 2)
    >>> [g["n"] for g in r.groups]
    [2000, 2000]
    >>> r.alignment["sas_imbalance"] < 0  # structure only the images carry
    True
    """
    nthreads = resolve_threads(threads)
    retrieval_backend = _dispatch.resolve_backend(backend)
    chunk_rows = check_int(chunk_rows, "chunk_rows")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be None or a callable progress(iterable, description, total), got {progress!r}")
    source = images if texts is None and is_source(images) else None
    if source is not None:
        n, d = int(source.n), int(source.dim)
        if n < 2:
            raise ValueError(f"the source needs at least 2 pairs, has {n}")
        x = y = None
        recorded = getattr(source, "id_column", None) if recorded_ids else None
        if recorded and image_ids is None and text_ids is None:
            image_ids = text_ids = source.column(recorded)
            unit_name = unit_name or recorded
    elif texts is None:
        raise TypeError("give images and texts arrays, or a paired source (e.g. fastsas.io.NpyPairSource) as images")
    else:
        x, y = as_pair(images, texts)
        n, d = x.shape
    plan = AuditPlan(n, d, groups=groups, image_ids=image_ids, text_ids=text_ids, topq=topq, periods=periods,
                     jackknife_blocks=jackknife_blocks, mismatches=mismatches, mismatch_fdr=mismatch_fdr,
                     chance_repeats=chance_repeats, seed=seed, retrieval=retrieval, ks=ks,
                     max_cell_bytes=max_cell_bytes, unit_name=unit_name)

    neighbourhood_topk = None if neighbourhood is None else check_int(
        neighbourhood, "neighbourhood", low=1, high=n - 1, meaning="neighbours per row (topk) of the neighbourhood "
        "family, or None")

    state = plan.new_state()
    if source is not None:
        chunks = _counted(source.iter_chunks(chunk_rows), n)
    else:
        chunks = ((s, x[s:s + chunk_rows], y[s:s + chunk_rows]) for s in range(0, n, chunk_rows))
    chunk_count = -(-n // chunk_rows)
    for start, cx, cy in (progress(chunks, "moments (one pass)", chunk_count) if progress else chunks):
        state.accumulate(cx, cy, plan.codes(start, start + len(cx)), nthreads, offset=start)

    if source is not None:
        x, y = source.arrays()

    def retrieve(rows, image_ids, text_ids):
        if rows is None:
            if progress is not None and retrieval_backend == "cpu":
                return _whole_gallery_in_steps(x, y, plan, nthreads, progress)
            steps = progress([None], "retrieval, whole gallery", 1) if progress else [None]
            for _ in steps:
                out = _retrieval_with_ranks(x, y, image_ids, text_ids, plan.ks, nthreads, retrieval_backend)
            return out
        return _retrieval_with_ranks(np.asarray(x[rows]), np.asarray(y[rows]), image_ids, text_ids, plan.ks,
                                     nthreads, retrieval_backend)

    result = plan.finalize(state, retrieve, nthreads, progress,
                           backend={"moments": "cpu", "retrieval": retrieval_backend}, rows=ArchiveRows(x, y),
                           chunk_rows=chunk_rows)
    if neighbourhood_topk is not None:
        result = with_neighbourhood(result, x, y, plan, neighbourhood_topk, nthreads, progress)
    return result


def with_neighbourhood(result: AuditResult, x: Any, y: Any, plan: AuditPlan, topk: int, threads: int,
                       progress: Any = None) -> AuditResult:
    """`result` with the neighbourhood family of the whole archive (``neighbourhood``) and of
    each subgroup (its row's ``neighbourhood``; a subgroup of at most `topk` pairs gets a
    ``status`` saying so instead)."""
    whole: dict = {}
    jobs: list[tuple[Any, Any]] = [(None, None)]
    if plan.group_labels:
        rows_of = {label: np.flatnonzero(plan.group_codes == code) for code, label in enumerate(plan.group_labels)}
        jobs += [(g, rows_of[g["group"]]) for g in result.groups]
    steps = progress(jobs, f"neighbourhood (top {topk}, {len(jobs)} sets)", len(jobs)) if progress else jobs
    for group, rows in steps:
        if rows is None:
            whole = _neighbourhood_row(x, y, topk, threads)
        elif len(rows) <= topk:
            group["neighbourhood"] = {"topk": topk, "status": f"too_small: {len(rows)} pairs, the neighbourhood "
                                      f"family needs more than topk = {topk}"}
        else:
            group["neighbourhood"] = _neighbourhood_row(np.asarray(x[rows]), np.asarray(y[rows]), topk, threads)
    return dataclasses.replace(result, neighbourhood=whole)


def _neighbourhood_row(x: Any, y: Any, topk: int, threads: int) -> dict:
    r = neighbourhood_of(_engine_rows(x), _engine_rows(y), topk, threads=threads)
    return {"topk": topk, "status": "ok", **{key: float(getattr(r, key)) for key in NEIGHBOURHOOD_KEYS}}


def _counted(chunks: Iterable, n: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    start = 0
    for cx, cy in chunks:
        yield start, cx, cy
        start += len(cx)
    if start != n:
        raise ValueError(f"the source yielded {start} rows but declares n={n}")


def _engine_rows(a: Any) -> np.ndarray:
    a = np.asarray(a)
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float32)


def _whole_gallery_in_steps(x: Any, y: Any, plan: AuditPlan, threads: int, progress: Any) -> dict:
    """Whole-gallery retrieval on the CPU engine, the queries in slabs so that progress
    shows in rows: the thresholds of every query first, then each slab of images against
    every text (one pass over the tiles serves both directions; the texts' counts are summed
    over the slabs). Counts are pure functions of a pair of rows, so the ranks are those of
    :func:`fastsas.retrieval`."""
    n = plan.n
    if plan.id_codes is None:
        icodes = tcodes = np.arange(n, dtype=np.int32)
    else:
        icodes, tcodes = plan.id_codes, plan.text_codes
    xs, ys = _engine_rows(x), _engine_rows(y)
    if xs.dtype != ys.dtype:
        xs, ys = xs.astype(np.float64), ys.astype(np.float64)
    # exact=True: rows of integers compare by their exact cosines, as fs.retrieval ranks them
    thr_images, exact_images = _core.retrieval_thresholds(xs, ys, query_codes=icodes, candidate_codes=tcodes,
                                                          query_input="x", candidate_input="y", threads=threads,
                                                          exact=True)
    thr_texts, exact_texts = _core.retrieval_thresholds(ys, xs, query_codes=tcodes, candidate_codes=icodes,
                                                        query_input="y", candidate_input="x", threads=threads,
                                                        exact=True)
    image_counts = np.zeros(n, dtype=np.int64)
    text_counts = np.zeros(n, dtype=np.int64)
    slab = max(8192, -(-n // 64))
    slabs = [range(s, min(n, s + slab)) for s in range(0, n, slab)]
    for rows in progress(slabs, "retrieval, whole gallery (query rows)", n):
        r = _core.retrieval_counts(np.ascontiguousarray(xs[rows.start:rows.stop]), ys,
                                   image_codes=icodes[rows.start:rows.stop], text_codes=tcodes,
                                   image_thresholds=thr_images[rows.start:rows.stop], text_thresholds=thr_texts,
                                   image_exact=exact_images[rows.start:rows.stop], text_exact=exact_texts,
                                   threads=threads)
        image_counts[rows.start:rows.stop] = r["image_counts"]
        text_counts += r["text_counts"]
    image_ranks = np.where(np.isfinite(thr_images), image_counts + 1, 0).astype(np.int64)
    text_ranks = np.where(np.isfinite(thr_texts), text_counts + 1, 0).astype(np.int64)
    return rank_summary(image_ranks, text_ranks, plan.ks, True)


def _retrieval_with_ranks(x, y, image_ids, text_ids, ks, threads, backend: str = "cpu") -> dict:
    return retrieval_of(x, y, image_ids=image_ids, text_ids=text_ids, ks=ks, return_ranks=True, threads=threads,
               backend=backend)