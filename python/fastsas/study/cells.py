"""One (model, dataset) cell of a study: every alignment metric with its jackknife interval
and leave-one-out values, retrieval with every caption, the SAS sweep over q, optionally
MMD (:func:`compute_cell`); cached as one JSON file per cell, keyed by the input's
fingerprint and the settings (:class:`CellCache`, :func:`evaluate_cell`).

The metrics a study reports are a declared list (:data:`METRICS`, :func:`resolve_metrics`):
every key of :func:`fastsas.alignment`'s dict (whatever it holds: a key added there is
picked up), plus the metrics computed apart (MMD)."""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fastsas._validate import check_int, check_ks, check_topq, resolve_threads
from fastsas._version import __version__
from fastsas.audit.intervals import RANGES, interval, leave_one_out
from fastsas.audit.plan import AuditPlan
from fastsas.definitions import DEFINITIONS_VERSION
from fastsas.io.atomic import write_atomic
from fastsas.io.strict_json import dumps
from fastsas.mmd import mmd as mmd_of
from fastsas.moments import ALIGNMENT_KEYS, DEFAULT_QS, ESTIMATOR_KEYS, Moments
from fastsas.retrieval import retrieval as retrieval_of
from fastsas.study.catalog import CellSpec
from fastsas.study.inputs import CellData, read_cell

__all__ = ["CELL_FORMAT", "CellCache", "CellSettings", "METRICS", "MetricSpec", "PAPER_METRICS", "RETRIEVAL_TARGETS",
           "SLOW_METRICS", "alignment_keys", "cell_key", "compute_cell", "evaluate_cell", "resolve_metrics"]

CELL_FORMAT = "fastsas-study-cell/1"


@dataclass(frozen=True)
class MetricSpec:
    """A metric of the study.

    Attributes
    ----------
    name : str
        The key in the cell (``alignment[name]``, or the cell's own key).
    label : str
        How tables and figures name it.
    source : str
        "alignment" (a key of :func:`fastsas.alignment`'s dict: from the moments, with a
        jackknife interval) or "pairs" (computed apart on the cell's pairs, no interval).
    slow : bool
        Left out by ``skip_slow`` (as the paper's ``--skip_slow`` leaves out MMD and SVCCA).

    Examples
    --------
    >>> from fastsas.study import METRICS
    >>> METRICS["sas_i2t"].label, METRICS["mmd"].source
    ('SAS(I→T)', 'pairs')
    """

    name: str
    label: str
    source: str = "alignment"
    slow: bool = False


_LABELS = {"sas_i2t": "SAS(I→T)", "sas_t2i": "SAS(T→I)", "sas_sym": "SAS(sym)", "sas_imbalance": "SAS imbalance",
           "cka": "CKA", "coral": "CORAL", "svcca": "SVCCA", "delta_cos": "Δcos", "rmg": "RMG",
           "rmg_paper": "RMG (paper)", "centroid_euclidean": "centroid distance", "centroid_cosine": "centroid cosine",
           "cone_images": "cone (images)", "cone_texts": "cone (texts)", "matched_cosine": "matched cosine",
           "cka_unbiased": "CKA (unbiased)", "procrustes": "Procrustes", "procrustes_angular": "Procrustes (angular)",
           "procrustes_angular_whitened": "Procrustes (angular, whitened)", "mmd": "MMD"}

# The declared metrics: every alignment key fastsas defines, then MMD. A key fs.alignment
# returns that is not here yet (a metric added to it) is used under its own name.
METRICS: dict[str, MetricSpec] = {
    **{k: MetricSpec(k, _LABELS.get(k, k), "alignment", k == "svcca") for k in ALIGNMENT_KEYS},
    "mmd": MetricSpec("mmd", "MMD", "pairs", True),
}
# The SAS paper's metric suite (its RMG is fastsas's rmg_paper), and what --skip-slow drops.
PAPER_METRICS = ("cka", "coral", "rmg_paper", "delta_cos", "sas_sym", "sas_i2t", "sas_t2i", "sas_imbalance", "mmd",
                 "svcca")
SLOW_METRICS = tuple(k for k, s in METRICS.items() if s.slow)
# rSum targets of the retrieval experiment: total, image -> text, text -> image.
RETRIEVAL_TARGETS = ("rsum", "rsum_i2t", "rsum_t2i")


def alignment_keys() -> tuple[str, ...]:
    """The metric keys :func:`fastsas.alignment`'s dict holds now (read from a tiny input, so a
    metric added to it is known without being declared here).

    Returns
    -------
    tuple of str
        In the dict's order, without ``n`` and ``topq``.

    Examples
    --------
    >>> from fastsas.study.cells import alignment_keys
    >>> alignment_keys()[:4]
    ('sas_i2t', 'sas_t2i', 'sas_sym', 'sas_imbalance')
    """
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 4))
    values = Moments(4, threads=1).update(x, x + rng.standard_normal((16, 4))).alignment()
    return tuple(k for k, v in values.items() if k not in ("n", "topq") and isinstance(v, float))


def resolve_metrics(metrics: Any = "all", *, skip_slow: bool = False) -> tuple[str, ...]:
    """The study's metrics: "all" (every declared metric, and any other key
    :func:`fastsas.alignment` returns), "paper" (the SAS paper's suite), or a list /
    comma-separated string of names; `skip_slow` drops MMD and SVCCA.

    Parameters
    ----------
    metrics : str or sequence of str, default "all"
        What to report.
    skip_slow : bool, default False
        Drop SLOW_METRICS.

    Returns
    -------
    tuple of str
        The names, in the order given (declared order for "all" and "paper").

    Raises
    ------
    ValueError
        For an unknown name or an empty list.

    Examples
    --------
    >>> from fastsas.study import resolve_metrics
    >>> resolve_metrics("paper", skip_slow=True)
    ('cka', 'coral', 'rmg_paper', 'delta_cos', 'sas_sym', 'sas_i2t', 'sas_t2i', 'sas_imbalance')
    >>> resolve_metrics("sas_i2t, cka")
    ('sas_i2t', 'cka')
    """
    extra = [k for k in alignment_keys() if k not in METRICS]
    if isinstance(metrics, str):
        key = metrics.strip().lower()
        if key == "all":
            names = list(METRICS) + extra
        elif key == "paper":
            names = list(PAPER_METRICS)
        else:
            names = [m.strip() for m in metrics.split(",") if m.strip()]
    else:
        try:
            names = [str(m).strip() for m in metrics]
        except TypeError:
            raise TypeError(f"metrics must be 'all', 'paper' or a list of metric names, got {metrics!r}") from None
    bad = [m for m in names if m not in METRICS and m not in extra]
    if bad:
        raise ValueError(f"unknown metric(s) {bad}: metrics are 'all', 'paper' or names among "
                         f"{', '.join(list(METRICS) + extra)}")
    names = [m for m in dict.fromkeys(names) if not (skip_slow and m in SLOW_METRICS)]
    if not names:
        raise ValueError("metrics is empty (after skip_slow); name at least one metric")
    return tuple(names)


@dataclass(frozen=True)
class CellSettings:
    """What a cell computes; everything here (with the fastsas and definitions versions) is
    part of the cache key.

    Attributes
    ----------
    topq : float
        SAS's top fraction of anchor modes.
    jackknife_blocks : int
        Blocks of the delete-a-block jackknife (fewer when the cell has fewer ids).
    ks : tuple of int
        Retrieval cutoffs.
    qs : tuple of float
        The q of the SAS sweep.
    mmd : bool
        Compute MMD (O(n^2 d)).
    mmd_sigma : float
        Its RBF bandwidth.
    estimator_intervals : bool
        Jackknife intervals of the unbiased CKA and the Procrustes distances too (their
        leave-one-out analyses about double the jackknife's time at d = 768); without, their
        values are still reported, with no interval.

    Examples
    --------
    >>> from fastsas.study import CellSettings
    >>> CellSettings().jackknife_blocks
    20
    """

    topq: float = 0.1
    jackknife_blocks: int = 20
    ks: tuple = (1, 5, 10)
    qs: tuple = DEFAULT_QS
    mmd: bool = True
    mmd_sigma: float = 10.0
    estimator_intervals: bool = True

    def __post_init__(self):
        object.__setattr__(self, "topq", check_topq(self.topq))
        object.__setattr__(self, "jackknife_blocks", check_int(self.jackknife_blocks, "jackknife_blocks", low=2,
                                                                meaning="delete-a-block jackknife blocks"))
        object.__setattr__(self, "ks", check_ks(self.ks, 10 ** 12, 10 ** 12))
        object.__setattr__(self, "qs", tuple(check_topq(q, "qs") for q in self.qs))
        sigma = float(self.mmd_sigma)
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"mmd_sigma must be a finite number > 0, got {self.mmd_sigma!r}")
        object.__setattr__(self, "mmd_sigma", sigma)
        object.__setattr__(self, "mmd", bool(self.mmd))
        object.__setattr__(self, "estimator_intervals", bool(self.estimator_intervals))

    def to_dict(self) -> dict:
        """The settings as plain data."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def cell_key(fingerprint: str, settings: CellSettings) -> str:
    """The cache key of a cell: SHA-256 (hex) of its fingerprint, the settings, the cell
    format, the fastsas version and the definitions version.

    Parameters
    ----------
    fingerprint : str
        :meth:`CellData.fingerprint` of the input.
    settings : CellSettings
        What is computed.

    Returns
    -------
    str
        64 hex digits.

    Examples
    --------
    >>> from fastsas.study import CellSettings, cell_key
    >>> a = cell_key("sha256:00", CellSettings())
    >>> a == cell_key("sha256:00", CellSettings()), a == cell_key("sha256:00", CellSettings(topq=0.2))
    (True, False)
    """
    material = {"format": CELL_FORMAT, "fastsas": __version__, "definitions": DEFINITIONS_VERSION,
                "fingerprint": fingerprint, "settings": settings.to_dict()}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _replicate(core: Any, q: float, keys: Sequence[str], estimators: bool) -> dict[str, float]:
    try:
        values = Moments._from_core(core).alignment(q, estimators=estimators)
    except ValueError:  # a metric the leave-one-out rows leave undefined: no interval for this block
        return {k: math.nan for k in keys}
    return {k: float(values.get(k, math.nan)) for k in keys}  # a key left undefined without this block: NaN


def compute_cell(data: CellData, settings: CellSettings, *, threads: int | None = None, backend: str = "auto") -> dict:
    """Every number of one cell.

    Parameters
    ----------
    data : CellData
        The cell's embeddings.
    settings : CellSettings
        What to compute.
    threads : int or None
        Core worker threads (None: the fastsas default).
    backend : {"auto", "cpu", "cuda"}, default "auto"
        Where retrieval and MMD run (the moments run on the CPU core).

    Returns
    -------
    dict
        ``n_pairs``, ``n_images``, ``n_texts``, ``dim``, ``dtype``; ``alignment``
        (:func:`fastsas.alignment` of the pairs, exactly); ``jackknife``: ``blocks``,
        ``method``, ``confidence``, ``metrics`` (per alignment key: value, se, ci_low,
        ci_high, t, df, p_value), ``replicates`` (per key: the B leave-one-out values, for
        paired comparisons), ``imbalance_test``; ``retrieval`` (:func:`fastsas.retrieval`
        with every text and the ids, without rank arrays), ``rsum_i2t``, ``rsum_t2i``;
        ``sas_sweep`` (q, sas_i2t, sas_t2i); ``mmd`` when computed; ``seconds`` per stage and
        ``engine`` (the seconds inside fastsas's engine calls).

    Raises
    ------
    ValueError
        When the embeddings are refused (bad rows, too few pairs: the message names them) or
        a metric is undefined for them.

    Examples
    --------
    >>> import fastsas as fs
    >>> from fastsas.study import CellData, CellSettings, compute_cell
    >>> x, y = fs.synthetic.paired_embeddings(400, 16, image_only_factors=2)
    >>> cell = compute_cell(CellData(x, y), CellSettings(jackknife_blocks=5, mmd=False))
    >>> cell["alignment"] == fs.alignment(x, y), cell["jackknife"]["blocks"]
    (True, 5)
    """
    threads = resolve_threads(threads)
    x, y = data.pairs()
    n, d = int(x.shape[0]), int(x.shape[1])
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    moments = Moments(d, threads=threads).update(x, y)
    alignment = moments.alignment(settings.topq)  # the one pass of fs.alignment, same numbers
    sweep = {k: np.asarray(v).tolist() for k, v in moments.sas_sweep(settings.qs).items()}
    seconds["moments"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    block_ids = data.block_ids
    distinct = n if block_ids is None else len(np.unique(np.asarray(block_ids).astype(str)
                                                         if np.asarray(block_ids).dtype.hasobject else block_ids))
    blocks_wanted = min(settings.jackknife_blocks, distinct, n)
    keys = [k for k, v in alignment.items() if k not in ("n", "topq") and isinstance(v, float)
            and (settings.estimator_intervals or k not in ESTIMATOR_KEYS)]
    jack: dict[str, Any] = {"blocks": blocks_wanted, "method": "delete-a-block jackknife", "confidence": 0.95}
    if blocks_wanted >= 2:
        plan = AuditPlan(n, d, image_ids=block_ids, text_ids=block_ids, topq=settings.topq,
                         jackknife_blocks=blocks_wanted, mismatches=0, mismatch_fdr=None, chance_repeats=0,
                         retrieval="none", ks=(1,))
        state = plan.new_state()
        state.accumulate(x, y, plan.codes(0, n), threads)
        replicates = [_replicate(core, settings.topq, keys, settings.estimator_intervals)
                      for core in leave_one_out(state.states("blocks"))]
        jack["replicates"] = {k: [r[k] for r in replicates] for k in keys}
        jack["metrics"] = {k: interval(alignment[k], jack["replicates"][k], RANGES.get(k)) for k in keys}
        imb = jack["metrics"]["sas_imbalance"]
        jack["imbalance_test"] = {"t": imb["t"], "df": imb["df"], "p_value": imb["p_value"],
                                  "null": "SAS(I->T) == SAS(T->I)"}
    else:
        jack["note"] = f"too few distinct ids ({distinct}) for a jackknife"
    seconds["jackknife"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ks = check_ks(settings.ks, len(data.images), len(data.texts))
    ret = retrieval_of(data.images, data.texts, image_ids=data.image_ids, text_ids=data.text_ids, ks=ks,
                       threads=threads, backend=backend)
    summary = {k: v for k, v in ret.items() if not isinstance(v, np.ndarray)}
    seconds["retrieval"] = time.perf_counter() - t0
    out: dict[str, Any] = {
        "format": CELL_FORMAT, "n_pairs": n, "n_images": int(len(data.images)), "n_texts": int(len(data.texts)),
        "dim": d, "dtype": str(np.asarray(x[:1]).dtype), "alignment": alignment, "jackknife": jack,
        "retrieval": summary, "rsum_i2t": 100.0 * sum(summary[f"i2t_r{k}"] for k in ks),
        "rsum_t2i": 100.0 * sum(summary[f"t2i_r{k}"] for k in ks), "sas_sweep": sweep,
    }
    if settings.mmd:
        t0 = time.perf_counter()
        out["mmd"] = float(mmd_of(x, y, sigma=settings.mmd_sigma, threads=threads, backend=backend))
        seconds["mmd"] = time.perf_counter() - t0
    seconds["engine"] = sum(seconds.values())
    out["seconds"] = seconds
    return out


class CellCache:
    """One JSON file per cell, named by its key (:func:`cell_key`): ``<directory>/<key>.json``,
    written atomically. A file that is unreadable or of another format is ignored (and
    recomputed over); ``ignored`` lists them.

    Parameters
    ----------
    directory : str or Path
        The cache folder (created on the first write).

    Examples
    --------
    >>> import tempfile
    >>> from fastsas.study import CellCache
    >>> cache = CellCache(tempfile.mkdtemp())
    >>> cache.put("ab" * 32, {"format": "fastsas-study-cell/1", "key": "ab" * 32, "n_pairs": 3})
    >>> cache.get("ab" * 32)["n_pairs"], cache.get("cd" * 32)
    (3, None)
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.ignored: list[str] = []

    def path(self, key: str) -> Path:
        """The file of `key`."""
        return self.directory / f"{key}.json"

    def get(self, key: str) -> dict | None:
        """The cached cell of `key`, or None."""
        path = self.path(key)
        try:
            cell = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self.ignored.append(f"{path.name}: {exc}")
            return None
        if not isinstance(cell, dict) or cell.get("format") != CELL_FORMAT or cell.get("key") != key:
            self.ignored.append(f"{path.name}: not a cell of format {CELL_FORMAT} with this key")
            return None
        return cell

    def put(self, key: str, cell: Mapping) -> None:
        """Write `cell` as the file of `key` (atomically)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path(key), dumps(dict(cell), indent=None))


def evaluate_cell(spec: CellSpec, settings: CellSettings, cache_dir: str | os.PathLike | None = None, *,
                  threads: int | None = None, backend: str = "auto") -> dict:
    """One cell of a study: read it, fingerprint it, and return the cached result of that
    fingerprint and these settings, or compute (:func:`compute_cell`) and cache it.

    Runs anywhere the cell's files and the cache directory can be read (a Dask worker too).

    Parameters
    ----------
    spec : CellSpec
        The cell.
    settings : CellSettings
        What to compute.
    cache_dir : str, Path or None
        The cache folder (None: no cache).
    threads : int or None
        Core worker threads.
    backend : {"auto", "cpu", "cuda"}, default "auto"
        Where retrieval and MMD run.

    Returns
    -------
    dict
        The cell (:func:`compute_cell`) with ``model``, ``dataset``, ``kind``, ``paths``,
        ``fingerprint``, ``key``, ``settings``, ``cached`` (whether it came from the
        cache), ``fastsas_version``, ``definitions_version``, ``seconds`` (``read``,
        ``fingerprint`` and, when computed, every stage); or, when the cell cannot be read
        or computed, ``status`` = "failed: <reason>".

    Examples
    --------
    >>> import tempfile, numpy as np, fastsas as fs
    >>> from fastsas.study import CellSettings, CellSpec, evaluate_cell
    >>> folder = tempfile.mkdtemp()
    >>> x, y = fs.synthetic.paired_embeddings(300, 16)
    >>> np.savez(folder + "/ROCO.npz", images=x, texts=y)
    >>> spec, settings = CellSpec("clip", "ROCO", "npz", (folder + "/ROCO.npz",)), CellSettings(mmd=False)
    >>> [evaluate_cell(spec, settings, folder + "/cache")["cached"] for _ in range(2)]
    [False, True]
    """
    base = {"model": spec.model, "dataset": spec.dataset, "kind": spec.kind, "paths": list(spec.paths)}
    t0 = time.perf_counter()
    try:
        data = read_cell(spec)
        read_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        fingerprint = data.fingerprint()
    except (OSError, ValueError, TypeError, ImportError) as exc:
        return {**base, "status": f"failed: {' '.join(str(exc).split())}"}
    timing = {"read": read_seconds, "fingerprint": time.perf_counter() - t0}
    key = cell_key(fingerprint, settings)
    cache = CellCache(Path(cache_dir)) if cache_dir is not None else None
    cell = cache.get(key) if cache is not None else None
    if cell is not None:
        return {**cell, **base, "cached": True, "seconds": timing, "status": "ok"}
    try:
        cell = compute_cell(data, settings, threads=threads, backend=backend)
    except ValueError as exc:
        return {**base, "fingerprint": fingerprint, "status": f"failed: {' '.join(str(exc).split())}"}
    cell.update(fingerprint=fingerprint, key=key, items=data.items(), settings=settings.to_dict(),
                fastsas_version=__version__,
                definitions_version=DEFINITIONS_VERSION)
    if cache is not None:
        cache.put(key, {**cell, **base, "computed_seconds": cell["seconds"]})
    return {**cell, **base, "cached": False, "seconds": {**timing, **cell["seconds"]}, "status": "ok"}
