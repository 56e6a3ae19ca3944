"""A study end to end (:func:`study`): the catalog, every cell (from the cache, or computed
in parallel in process or on Dask), the four experiments and the model comparisons, as a
:class:`StudyResult`."""
from __future__ import annotations

import concurrent.futures
import datetime as _dt
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from fastsas._validate import check_int, resolve_threads
from fastsas._version import __version__
from fastsas.dask.cluster import client_for, compute, dask_modules
from fastsas.definitions import DEFINITIONS_VERSION, IMBALANCE_SIGN
from fastsas.moments import ESTIMATOR_KEYS
from fastsas.study.catalog import Catalog, load_catalog
from fastsas.study.cells import METRICS, CellSettings, evaluate_cell, resolve_metrics
from fastsas.study.experiments import (CellTable, alignment_profile, compare_models, default_comparisons,
                                       eigenspectrum_concentration, imbalance_signature, retrieval_predictivity)
from fastsas.study.report import write_study_report
from fastsas.study.stats import CORRECTIONS

__all__ = ["StudyResult", "study"]

CACHE_DIR_NAME = ".fastsas-study-cache"


@dataclass(frozen=True)
class StudyResult:
    """Everything a study found; :meth:`to_dict` is JSON-ready, :meth:`write` writes the
    study report (HTML, JSON, Markdown).

    Attributes
    ----------
    title : str
        The study's title.
    catalog : dict
        Models, references, datasets, domains, cells and missing cells (:meth:`Catalog.to_dict`).
    settings : dict
        What was computed (q, jackknife blocks, ks, metrics, seeds, resamples, correction).
    metrics : list of str
        The metrics of the experiments.
    cells : list of dict
        Every cell (:func:`fastsas.study.evaluate_cell`).
    experiments : dict
        ``alignment_profile``, ``imbalance_signature``, ``retrieval_predictivity``,
        ``eigenspectrum_concentration`` (:mod:`fastsas.study.experiments`).
    comparisons : list of dict
        Paired comparisons of models per dataset (:func:`fastsas.study.compare_models`).
    provenance : dict
        ``computed``, ``cached``, ``failed`` and ``missing`` cells, ``seconds`` (total, cells,
        experiments, engine), the cache directory, where the cells ran, versions, ``created``.

    Examples
    --------
    >>> import tempfile, fastsas as fs
    >>> from fastsas.study import write_synthetic_study
    >>> root = write_synthetic_study(tempfile.mkdtemp(), models=3, pairs=120, dim=16)
    >>> result = fs.study(root / "study.toml", bootstrap=100, permutations=100)
    >>> len(result.cells), result.provenance["computed"]
    (16, 16)
    """

    title: str
    catalog: dict
    settings: dict
    metrics: list
    cells: list
    experiments: dict
    comparisons: list = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    definitions_version: str = DEFINITIONS_VERSION
    fastsas_version: str = __version__
    sign_convention: str = IMBALANCE_SIGN

    def to_dict(self) -> dict:
        """Every field as plain data."""
        return asdict(self)

    def cell(self, model: str, dataset: str) -> dict:
        """The cell of (model, dataset); KeyError names the cells."""
        for c in self.cells:
            if c["model"] == model and c["dataset"] == dataset:
                return c
        raise KeyError(f"no cell ({model}, {dataset}); cells: {[(c['model'], c['dataset']) for c in self.cells]}")

    def write(self, out_dir: str | os.PathLike, formats: Sequence[str] | str = ("html", "json", "md")) -> dict:
        """Write the study report into `out_dir` (:func:`fastsas.study.write_study_report`)."""
        return write_study_report(self, out_dir, formats=formats)

    def __repr__(self) -> str:
        p = self.provenance
        return (f"StudyResult({self.title!r}: {len(self.catalog.get('models', []))} models x "
                f"{len(self.catalog.get('datasets', []))} datasets, {len(self.cells)} cells "
                f"({p.get('computed', 0)} computed, {p.get('cached', 0)} cached, {p.get('failed', 0)} failed), "
                f"{len(self.metrics)} metrics, {len(self.comparisons)} comparisons)")


def _option(value: Any, options: dict, key: str, default: Any) -> Any:
    if value is not None:
        return value
    return options.get(key, default)


def _cache_dir(cache: Any, catalog: Catalog) -> Path | None:
    if cache is False:
        return None
    if cache is None or cache is True:
        configured = catalog.options.get("cache")
        if configured is not None:
            path = Path(configured)
        elif catalog.source is not None:
            source = Path(catalog.source)
            path = (source if source.is_dir() else source.parent) / CACHE_DIR_NAME
        else:
            return None
        if not path.is_absolute() and catalog.source is not None:
            source = Path(catalog.source)
            path = (source if source.is_dir() else source.parent) / path
        return path.resolve()
    return Path(cache).resolve()


def _run_cells(specs: list, settings: CellSettings, cache_dir: Path | None, *, jobs: int, threads: int | None,
               backend: str, client: Any, scheduler: str | None, workers: int | None,
               progress: Callable | None) -> tuple[list[dict], str]:
    if client is not None or scheduler is not None or workers is not None:
        dask, _ = dask_modules()
        with client_for(client, scheduler, workers) as c:
            tasks = [dask.delayed(evaluate_cell, pure=False)(spec, settings, None if cache_dir is None else str(cache_dir),
                                                               threads=1, backend="cpu") for spec in specs]
            return list(compute(c, tasks, progress)), "dask"
    total_threads = resolve_threads(threads)
    per_cell = max(1, total_threads // jobs)
    if jobs == 1:
        items = progress(specs, "cells", len(specs)) if progress else specs
        return [evaluate_cell(s, settings, cache_dir, threads=per_cell, backend=backend) for s in items], "in process"
    out: list[dict | None] = [None] * len(specs)
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(evaluate_cell, s, settings, cache_dir, threads=per_cell, backend=backend): i
                   for i, s in enumerate(specs)}
        done = concurrent.futures.as_completed(futures)
        for future in (progress(done, "cells", len(specs)) if progress else done):
            out[futures[future]] = future.result()
    return [c for c in out if c is not None], f"in process, {jobs} cells at a time"


def _metric_names(wanted: Sequence[str], cells: list[dict]) -> list[str]:
    """The experiments' metrics: those wanted that the cells hold (MMD only when computed;
    a cached cell from before a metric was added to fs.alignment lacks it)."""
    present = set()
    for c in cells:
        if c.get("status") == "ok":
            present.update(k for k, v in (c.get("alignment") or {}).items() if isinstance(v, float))
            if c.get("mmd") is not None:
                present.add("mmd")
    return [n for n in wanted if n in present]


def study(
    catalog: Any,
    *,
    topq: float | None = None,
    jackknife_blocks: int | None = None,
    ks: Sequence[int] | None = None,
    metrics: Any = None,
    skip_slow: bool | None = None,
    mmd_sigma: float | None = None,
    direction: str | None = None,
    compare: Sequence[Sequence[str]] | None = None,
    domains: dict | None = None,
    references: Sequence[str] | None = None,
    seed: int | None = None,
    bootstrap: int | None = None,
    permutations: int | None = None,
    correction: str | None = None,
    cache: Any = None,
    jobs: int = 1,
    threads: int | None = None,
    backend: str = "auto",
    client: Any = None,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: Callable | None = None,
) -> StudyResult:
    """A study of many models on many datasets: every (model, dataset) cell's metrics with
    jackknife intervals, retrieval and the SAS sweep, then the SAS paper's four experiments
    with statistics that respect the dependence of the cells, and paired comparisons of
    models (docs/definitions.md, "Studies").

    Options left None take the catalog's ``[study]`` value, else the default shown.

    Parameters
    ----------
    catalog : str, Path, dict or Catalog
        A TOML catalog, a directory laid out as ``ROOT/<model>/<dataset>.*``, the TOML's tables
        or a :class:`Catalog` (:func:`fastsas.study.load_catalog`).
    topq : float, default 0.1
        SAS's top fraction of anchor modes.
    jackknife_blocks : int, default 20
        Blocks of each cell's delete-a-block jackknife.
    ks : sequence of int, default (1, 5, 10)
        Retrieval cutoffs (rSum sums R@k over them).
    metrics : str or sequence of str, default "all"
        "all", "paper" or names (:func:`fastsas.study.resolve_metrics`).
    skip_slow : bool, default False
        Leave out MMD and SVCCA (as the paper's --skip_slow); MMD is then not computed, nor
        the jackknife intervals of the unbiased CKA and the Procrustes distances (their values
        stay).
    mmd_sigma : float, default 10
        MMD's RBF bandwidth.
    direction : str or None
        The one-sided imbalance hypothesis between domains, "A>B" (default: "medical>natural"
        when the study has both).
    compare : sequence of (str, str) or None
        Model pairs compared per dataset (default: every pair of pooled models when there are
        at most 5).
    domains : dict or None
        dataset -> domain, added to the catalog's.
    references : sequence of str or None
        Reference models, added to the catalog's.
    seed : int, default 0
        Seed of the bootstrap and permutation tests.
    bootstrap : int, default 2000
        Bootstrap resamples of models.
    permutations : int, default 10000
        Monte Carlo permutations (exact tests enumerate when there are fewer).
    correction : {"holm", "bh"}, default "holm"
        Multiple-comparison correction across the metrics of each experiment.
    cache : str, Path, bool or None
        The cell cache directory; None: the catalog's ``cache``, else ``.fastsas-study-cache``
        beside the catalog (or in the root directory); False: no cache.
    jobs : int, default 1
        Cells computed at once in process (threads; the core's threads are shared out).
    threads : int or None
        Core worker threads in all (None: every core).
    backend : {"auto", "cpu", "cuda"}, default "auto"
        Where retrieval and MMD run in process.
    client, scheduler, workers
        Run the cells on Dask instead: a ``distributed.Client``, a scheduler address, or N
        local worker processes (the workers read the cells' files and the cache themselves).
    progress : callable or None
        ``progress(iterable, description, total)`` wrapping the cells (the CLI's bars).

    Returns
    -------
    StudyResult

    Raises
    ------
    FileNotFoundError, ValueError, TypeError
        For a bad catalog or option (before any cell is read). A cell that cannot be read or
        computed is reported in the result (status "failed: ..."), not raised.

    Examples
    --------
    >>> import tempfile, fastsas as fs
    >>> from fastsas.study import write_synthetic_study
    >>> root = write_synthetic_study(tempfile.mkdtemp(), models=3, pairs=120, dim=16)
    >>> r = fs.study(root / "study.toml", bootstrap=100, permutations=100, skip_slow=True)
    >>> r.experiments["imbalance_signature"]["per_dataset"][0]["sign"]
    'positive'
    """
    start = time.perf_counter()
    cat = load_catalog(catalog, domains=domains, references=references)
    opts = cat.options
    settings = CellSettings(
        topq=_option(topq, opts, "topq", 0.1), jackknife_blocks=_option(jackknife_blocks, opts, "jackknife_blocks", 20),
        ks=tuple(_option(ks, opts, "ks", (1, 5, 10))), mmd_sigma=_option(mmd_sigma, opts, "mmd_sigma", 10.0),
        mmd=False)
    skip = bool(_option(skip_slow, opts, "skip_slow", False))
    requested = _option(metrics, opts, "metrics", "all")
    wanted = resolve_metrics(requested, skip_slow=skip)
    # --skip-slow also drops the estimators' intervals (their values stay): they double the jackknife.
    settings = CellSettings(**{**asdict(settings), "mmd": "mmd" in wanted,
                               "estimator_intervals": not skip and any(k in ESTIMATOR_KEYS for k in wanted)})
    corr = str(_option(correction, opts, "correction", "holm")).lower()
    if corr not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {corr!r}")
    seed_value = check_int(_option(seed, opts, "seed", 0), "seed", low=0)
    resamples = check_int(_option(bootstrap, opts, "bootstrap", 2000), "bootstrap", low=10,
                          meaning="bootstrap resamples of models")
    perms = check_int(_option(permutations, opts, "permutations", 10000), "permutations", low=10,
                      meaning="Monte Carlo permutations")
    jobs = check_int(jobs, "jobs", meaning="cells computed at once")
    pairs = _option(compare, opts, "compare", None)
    if pairs is not None:
        pairs = [tuple(str(m) for m in p) for p in pairs]
        bad = [p for p in pairs if len(p) != 2 or any(m not in cat.models for m in p)]
        if bad:
            raise ValueError(f"compare must list pairs of the study's models ({list(cat.models)}), got {bad}")
    cache_dir = _cache_dir(cache, cat)
    specs = list(cat.cells.values())

    t_cells = time.perf_counter()
    cells, where = _run_cells(specs, settings, cache_dir, jobs=jobs, threads=threads, backend=backend, client=client,
                              scheduler=scheduler, workers=workers, progress=progress)
    cells_seconds = time.perf_counter() - t_cells

    t_exp = time.perf_counter()
    names = _metric_names(wanted, cells)
    pooled = cat.pooled_models()
    table = CellTable(cells, pooled, cat.datasets, cat.domains, cat.references)
    common = dict(correction=corr, seed=seed_value)
    experiments = {
        "alignment_profile": alignment_profile(table, names, permutations=perms, **common),
        "imbalance_signature": imbalance_signature(table, direction=_option(direction, opts, "direction", None),
                                                   permutations=perms, **common),
        "retrieval_predictivity": retrieval_predictivity(table, names, bootstrap=resamples, permutations=perms,
                                                         **common),
        "eigenspectrum_concentration": eigenspectrum_concentration(table),
    }
    full = CellTable(cells, list(cat.models), cat.datasets, cat.domains)
    jackknifed = [n for n in names if (METRICS[n].source == "alignment" if n in METRICS else True)]
    comparisons = compare_models(full, pairs if pairs is not None else default_comparisons(pooled), jackknifed,
                                 correction=corr)
    exp_seconds = time.perf_counter() - t_exp

    ok = [c for c in cells if c.get("status") == "ok"]
    provenance = {
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "computed": sum(1 for c in ok if not c.get("cached")),
        "cached": sum(1 for c in ok if c.get("cached")),
        "failed": sum(1 for c in cells if c.get("status") != "ok"),
        "failures": [{"model": c["model"], "dataset": c["dataset"], "status": c["status"]}
                     for c in cells if c.get("status") != "ok"],
        "missing": [list(m) for m in cat.missing()],
        "computed_cells": [[c["model"], c["dataset"]] for c in ok if not c.get("cached")],
        "cache": None if cache_dir is None else str(cache_dir),
        "cells_ran": where,
        "seconds": {"total": time.perf_counter() - start, "cells": cells_seconds, "experiments": exp_seconds,
                    "engine": sum((c.get("seconds") or {}).get("engine", 0.0) for c in ok if not c.get("cached"))},
    }
    study_settings = {**settings.to_dict(), "metrics": names, "requested_metrics": requested, "skip_slow": skip,
                      "seed": seed_value, "bootstrap": resamples, "permutations": perms, "correction": corr,
                      "direction": experiments["imbalance_signature"]["between_domains"].get("hypothesis"),
                      "compare": [list(p) for p in (pairs if pairs is not None else default_comparisons(pooled))]}
    return StudyResult(title=cat.title, catalog=cat.to_dict(), settings=study_settings, metrics=names, cells=cells,
                       experiments=experiments, comparisons=comparisons, provenance=provenance)
