"""The `fastsas` command: audits, comparisons and gap sweeps of embedding archives, with
progress bars on every long step. Exit codes: 0 success, 2 bad usage or input (one line
on stderr saying what to fix)."""
from __future__ import annotations

import contextlib
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, List, Optional

import numpy as np
import typer
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Column, Table

import fastsas as fs
from fastsas._dispatch import resolve_backend
from fastsas.audit.compare import compare as compare_archives
from fastsas.audit.compare import same_ids
from fastsas.audit.plan import fill_missing
from fastsas.gap.results import LAM0_ROWS
from fastsas.io import NpyPairSource, fingerprint_arrays
from fastsas.io.strict_json import dumps
from fastsas.report import parse_formats, write_compare, write_gap_sweep, write_report
from fastsas.report.compare import LABELS, compare_findings
from fastsas.report.findings import findings
from fastsas.report.separability import write_separability
from fastsas.store import open_source
from fastsas.synthetic import demo_archive

EXIT_USAGE = 2
# Bad input reported as one line: OSError covers a directory where a file is expected, a
# file that cannot be read or written, a full disk.
USER_ERRORS = (ValueError, TypeError, OSError, KeyError, ImportError)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Spectral Alignment Score audits of image-text embedding archives.")
# What fastsas prints holds paths, titles and labels of the user's: never read as rich markup
# ("[/x]" in an --out path raised after the report was written) or emoji codes.
out_console = Console(markup=False, emoji=False, highlight=False)
err_console = Console(stderr=True)


class UserError(Exception):
    """Bad usage or input: reported as one line, exit code 2."""


# -- progress ----------------------------------------------------------------------------------
class Steps:
    """Rich progress bars (on stderr) for fastsas' `progress(iterable, description, total)`
    hooks: counts done of the total, time elapsed and an estimate of the time left (an item
    that is a ``range`` counts as that many rows); and a bar for single long steps. Silent
    with --quiet."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def _progress(self) -> Progress:
        # The description gives way first (cut with an ellipsis), so the counts and the ETA stay
        # whole in an 80-column terminal: they need about 50 columns with a short bar.
        description = Column(no_wrap=True, overflow="ellipsis", max_width=max(20, err_console.width - 50))
        return Progress(SpinnerColumn(), TextColumn("[bold]{task.description}", table_column=description),
                        BarColumn(bar_width=10), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                        TimeRemainingColumn(), console=err_console, disable=not self.enabled, transient=False)

    def __call__(self, iterable: Iterable, description: str, total: int | None = None) -> Iterator:
        with self._progress() as bar:
            task = bar.add_task(description, total=total)
            for item in iterable:
                yield item
                bar.advance(task, len(item) if isinstance(item, range) else 1)

    @contextlib.contextmanager
    def step(self, description: str):
        with self._progress() as bar:
            task = bar.add_task(description, total=1)
            yield
            bar.advance(task)


# -- inputs ------------------------------------------------------------------------------------
def _ks_option(value: str) -> list[int]:
    """The integers of a comma-separated --ks option, or a UserError naming it."""
    try:
        return [int(v) for v in _split_list(value, "--ks")]
    except ValueError:
        raise UserError(f"--ks must be comma-separated integers, got {value!r}") from None


def _split_list(value: str, name: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise UserError(f"{name} is empty: give a comma-separated list")
    return items


def _formats(value: str) -> tuple[str, ...]:
    """--format, checked before any work by the report's own rule."""
    _split_list(value, "--format")
    try:
        return parse_formats(value)
    except ValueError as exc:
        raise UserError(str(exc).replace("formats ", "--format ", 1)) from None


def _check_backend(backend: str) -> None:
    """--backend, checked before any work: an unknown name, or cuda without a GPU, is bad usage."""
    try:
        resolve_backend(backend)
    except (ValueError, RuntimeError) as exc:
        raise UserError(f"--backend: {exc}") from None


def _column(meta: dict, name: str | None, option: str, missing_group: bool = False) -> np.ndarray | None:
    """A metadata column; with `missing_group`, rows without a value are labelled "(missing)"."""
    if name is None:
        return None
    if name not in meta:
        available = ", ".join(sorted(meta)) or "none"
        raise UserError(f"{option} {name}: no such metadata column (available: {available})")
    return fill_missing(meta[name]) if missing_group else np.asarray(meta[name])


def _open(paths: list[Path]):
    if len(paths) == 2:
        return open_source(paths[0], paths[1])
    if len(paths) == 1:
        return open_source(paths[0])
    raise UserError("give one archive (an embedding store, .npz or .parquet) or two .npy files (images, texts)")


def _demo(n: int, dim: int):
    archive = demo_archive(n, dim)
    return open_source(archive["images"], archive["texts"], metadata=archive["metadata"])


def _fingerprint(source) -> str:
    x, y = source.arrays()
    return fingerprint_arrays(x, y)


# -- commands ----------------------------------------------------------------------------------
@app.command()
def audit(
    archive: List[Path] = typer.Argument(None, help="embedding store, .npz, .parquet, or two .npy files"),
    demo: bool = typer.Option(False, "--demo", help="audit the built-in synthetic hospital-like archive"),
    group_by: Optional[str] = typer.Option(None, help="metadata column of subgroup labels (modality, site, ...)"),
    period_by: Optional[str] = typer.Option(None, help="time-like metadata column for the drift view (year, month)"),
    id_column: Optional[str] = typer.Option(None, help="study/pair id column: the unit of uncertainty, retrieval ground "
                                                       "truth and mismatch units (default: the store's recorded one)"),
    by_row: bool = typer.Option(False, "--by-row", help="every pair its own unit, ignoring the store's recorded id "
                                                        "column"),
    topq: float = typer.Option(0.1, help="top fraction of anchor modes in SAS, in (0, 1]"),
    out: Path = typer.Option(Path("fastsas-report"), help="directory for the report files"),
    format: str = typer.Option("html,json,md", "--format", help="comma-separated: html, json, md"),
    retrieval: str = typer.Option("both", help="both | whole | within | none"),
    jackknife_blocks: int = typer.Option(20, help="blocks of the delete-a-block jackknife"),
    mismatches: int = typer.Option(20, help="suspected mismatches to list (the count found is never capped)"),
    mismatch_fdr: float = typer.Option(0.05, help="false discovery rate of the suspected-mismatch test, in (0, 1)"),
    chance_repeats: int = typer.Option(3, help="random re-pairings for the chance level (0: none)"),
    seed: int = typer.Option(0, help="seed of the chance level and of the mismatch test's sampled swaps"),
    chunk_rows: int = typer.Option(32768, help="rows per streamed chunk"),
    threads: Optional[int] = typer.Option(None, help="worker threads (default: all cores)"),
    demo_n: int = typer.Option(20000, help="studies in the --demo archive"),
    include_column: List[str] = typer.Option(
        [], "--include-column",
        help="metadata column to show beside each suspected mismatch (e.g. report text); off by default "
             "because such columns are patient data. Repeatable."),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    backend: str = typer.Option("auto", help="auto | cpu | cuda: where retrieval runs (auto: the GPU when CuPy sees one)"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", metavar="ADDRESS",
                                            help="run on a Dask scheduler (tcp://host:8786); needs fastsas[dist]"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1,
                                          help="run on N local Dask worker processes; needs fastsas[dist]"),
    neighbourhood: Optional[int] = typer.Option(
        None, "--neighbourhood", metavar="TOPK",
        help="also the neighbourhood family (mutual/cycle/LCS/edit-distance k-NN, CKNNA) with TOPK neighbours, "
             "whole archive and per subgroup (in process; costs about twice whole-gallery retrieval)"),
) -> None:
    """Audit an archive: SAS both ways with intervals, every metric, retrieval, subgroups,
    drift, suspected mismatches; writes report.html / report.json / report.md."""
    formats = _formats(format)
    _check_backend(backend)
    steps = Steps(not quiet)
    if demo:
        if archive:
            raise UserError("--demo takes no archive argument")
        source = _demo(demo_n, 128)
        group_by, period_by, id_column = group_by or "modality", period_by or "year", id_column or "study_id"
        title = "fastsas audit: built-in demo archive"
    else:
        if not archive:
            raise UserError("give an archive to audit, or --demo")
        source = _open(list(archive))
        title = f"fastsas audit: {', '.join(p.name for p in archive)}"
    meta = source.metadata()
    groups = _column(meta, group_by, "--group-by", missing_group=True)
    periods = _column(meta, period_by, "--period-by", missing_group=True)
    if by_row and id_column is not None:
        raise UserError("give --id-column NAME or --by-row, not both")
    recorded = getattr(source, "id_column", None)
    if id_column is None and not by_row and recorded:
        id_column = recorded  # the store's own id column: the unit fastsas embed wrote
    ids = _column(meta, id_column, "--id-column")
    shown = {name: _column(meta, name, "--include-column") for name in include_column}
    start = time.perf_counter()
    options = dict(groups=groups, periods=periods, image_ids=ids, text_ids=ids, topq=topq, retrieval=retrieval,
                   jackknife_blocks=jackknife_blocks, mismatches=mismatches, mismatch_fdr=mismatch_fdr,
                   chance_repeats=chance_repeats, seed=seed, unit_name=id_column, recorded_ids=False,
                   chunk_rows=chunk_rows, threads=threads, progress=steps)
    if scheduler is not None or workers is not None:
        if scheduler is not None and workers is not None:
            raise UserError("give --scheduler ADDRESS or --workers N, not both")
        if backend == "cuda":
            raise UserError("--backend cuda runs in this process: leave out --scheduler/--workers, or use --backend cpu")
        if neighbourhood is not None:
            raise UserError("--neighbourhood runs in this process: leave out --scheduler/--workers, or leave out "
                            "--neighbourhood")
        from fastsas.dask import audit_source

        result = audit_source(source, scheduler=scheduler, workers=workers, **options)
    else:
        result = fs.audit(source, backend=backend, neighbourhood=neighbourhood, **options)
    if shown:
        from dataclasses import replace

        result = replace(result, mismatches=[
            {**m, "columns": {name: np.asarray(values[m["row"]]).item() for name, values in shown.items()}}
            for m in result.mismatches])
    with steps.step("fingerprint of the input"):
        fingerprint = _fingerprint(source)
    with steps.step("report"):
        paths = write_report(result, out, formats=formats, title=title, input_fingerprint=fingerprint,
                             id_column_name=id_column or "row")
    _print_summary(result, time.perf_counter() - start)
    for kind, path in paths.items():
        out_console.print(f"  {kind}: {path}")


def _print_summary(result, seconds: float) -> None:
    u = result.uncertainty
    a = result.alignment
    table = Table(title=f"fastsas audit of {result.n:,} pairs (d={result.dim}) in {seconds:.1f} s")
    for col in ("metric", "value", "95% interval", "by chance"):
        table.add_column(col)
    chance = ((result.chance.get("alignment") or {}).get("metrics") or {}) if result.chance else {}
    for key in ("sas_i2t", "sas_t2i", "sas_imbalance", "cka"):
        c = (chance.get(key) or {}).get("mean") if key != "sas_imbalance" else None
        table.add_row(key, f"{a[key]:.4f}", f"[{u[key]['ci_low']:.4f}, {u[key]['ci_high']:.4f}]",
                      "" if c is None else f"{c:.4f}")
    for key in ("svcca", "coral", "delta_cos", "rmg", "centroid_cosine"):
        table.add_row(key, f"{a[key]:.4f}", "", "")
    if result.retrieval:
        ru = u.get("retrieval") or {}
        rc = result.chance.get("retrieval") or {}
        for key in ("i2t_r1", "t2i_r1"):
            ci = ru.get(key)
            table.add_row(f"{key} (%)", f"{100 * result.retrieval[key]:.1f}",
                          f"[{100 * ci['ci_low']:.1f}, {100 * ci['ci_high']:.1f}]" if ci else "",
                          f"{100 * rc.get(key, float('nan')):.3f}")
        table.add_row("rsum (0-600)", f"{result.retrieval['rsum']:.1f}", "", f"{rc.get('rsum', float('nan')):.2f}")
    out_console.print(table)
    out_console.print("Findings:", highlight=False)
    for i, item in enumerate(findings(result.to_dict()), 1):
        out_console.print(f" {i}. {item['text']}", highlight=False, markup=False)


@app.command()
def compare(
    archives: List[Path] = typer.Argument(..., help="two or more archives (stores, .npz, .parquet)"),
    topq: float = typer.Option(0.1, help="top fraction of anchor modes in SAS, in (0, 1]"),
    retrieval: bool = typer.Option(True, "--retrieval/--no-retrieval", help="also exact retrieval R@k"),
    paired: str = typer.Option("auto", help="auto (the same pairs when every archive records the same ids), yes "
                                             "or no: whether differences are paired over the same blocks"),
    jackknife_blocks: int = typer.Option(20, help="blocks of the delete-a-block jackknife"),
    out: Path = typer.Option(Path("fastsas-compare"), help="directory for compare.html, compare.json, compare.md"),
    format: str = typer.Option("html,json,md", "--format", help="comma-separated: html, json, md"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Several models or datasets side by side: every metric with its interval and, for
    archives of the same pairs (one dataset embedded by several models), paired intervals of
    the differences from the first archive; writes compare.html / compare.json / compare.md."""
    formats = _formats(format)
    if paired not in ("auto", "yes", "no"):
        raise UserError(f"--paired must be auto, yes or no, got {paired!r}")
    if len(archives) < 2:
        raise UserError("give two or more archives to compare")
    steps = Steps(not quiet)
    results, ids, names = [], [], []
    for path in archives:
        source = _open([path])
        recorded = getattr(source, "id_column", None)
        ids.append(source.column(recorded) if recorded else None)
        names.append(_short_name(path, names))
        results.append(fs.audit(source, topq=topq, retrieval="whole" if retrieval else "none",
                                jackknife_blocks=jackknife_blocks, mismatch_fdr=None, chance_repeats=0,
                                progress=steps))
    if paired == "auto":
        same = all(same_ids(ids[0], other) for other in ids[1:])
    else:
        same = paired == "yes"
        if same and len({r.n for r in results}) != 1:
            raise UserError("--paired yes needs archives of the same pairs, but their row counts differ: "
                            + ", ".join(f"{n}: {r.n:,}" for n, r in zip(names, results)))
    comparison = compare_archives(results, names, same_pairs=same)
    _print_compare(comparison)
    paths = write_compare(comparison, out, topq=topq, formats=formats)
    for kind, path in paths.items():
        out_console.print(f"  {kind}: {path}", highlight=False)


def _short_name(path: Path, taken: list[str]) -> str:
    """An archive's name in tables: its file name (with its folder when that repeats)."""
    name = path.name or str(path)
    if name in taken:
        name = f"{path.parent.name}/{name}"
    while name in taken:
        name += "'"
    return name


def _print_compare(c: dict) -> None:
    """The comparison on the console, readable in 80 columns: one column per archive (letters,
    with a legend), metrics as rows, each value with its 95% interval half-width."""
    archives = c["archives"]
    letters = [chr(ord("A") + i) if i < 26 else f"#{i + 1}" for i in range(len(archives))]
    for letter, a in zip(letters, archives):
        out_console.print(f"{letter}: {a['name']} ({a['n']:,} pairs, d={a['dim']})", highlight=False, markup=False)
    table = Table(title="fastsas compare (value ±95% half-width; recall in %)")
    table.add_column("metric")
    for letter in letters:
        table.add_column(letter, justify="right")
    for key, label in LABELS.items():
        cells, seen = [], False
        for a in archives:
            m = (a.get("metrics") or {}).get(key)
            v = (a.get("values") or {}).get(key)
            scale = 100.0 if key in ("i2t_r1", "t2i_r1") else 1.0
            if m and m.get("value") is not None:
                half = (m["ci_high"] - m["ci_low"]) / 2 if m.get("ci_high") is not None else None
                digits = 1 if scale == 100.0 else 4
                cells.append(f"{scale * m['value']:.{digits}f}" + (f" ±{scale * half:.{digits}f}" if half is not None
                                                                     else ""))
                seen = True
            elif v is not None:
                cells.append(f"{v:.1f}" if key == "rsum" else f"{v:.4f}")
                seen = True
            else:
                cells.append("-")
        if seen:
            table.add_row(label, *cells)
    out_console.print(table)
    for line in compare_findings(c):
        out_console.print(line, highlight=False, markup=False)


@app.command()
def gap(
    archive: List[Path] = typer.Argument(None, help="embedding store, .npz, .parquet, or two .npy files"),
    lams: str = typer.Option("0,0.25,0.5,0.75,1", help="comma-separated lambdas in [0, 1]"),
    labels: Optional[str] = typer.Option(None, help="metadata column of class labels for the linear probe"),
    topq: float = typer.Option(0.1, help="top fraction of anchor modes in SAS, in (0, 1]"),
    out: Path = typer.Option(Path("fastsas-gap"), help="directory for gap.json"),
    demo: bool = typer.Option(False, "--demo", help="use the built-in demo archive (labels: modality)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Post-hoc modality-gap control: every metric, retrieval and (with --labels) a linear
    probe at each lambda, and the best lambda."""
    try:
        lam_values = [float(v) for v in _split_list(lams, "--lams")]
    except ValueError:
        raise UserError(f"--lams must be comma-separated numbers in [0, 1], got {lams!r}") from None
    if demo:
        source = _demo(5000, 64)
        labels = labels or "modality"
    else:
        if not archive:
            raise UserError("give an archive, or --demo")
        source = _open(list(archive))
    label_values = _column(source.metadata(), labels, "--labels")
    x, y = source.arrays()
    sweep = fs.gap.sweep(np.asarray(x), np.asarray(y), lams=lam_values, labels=label_values, topq=topq,
                         progress=Steps(not quiet))
    table = Table(title="fastsas gap sweep (recall in percent, rSum 0-600)")
    keys = ["sas_i2t", "sas_t2i", "rmg", "gap_norm"]
    for col in ["lambda", *keys, "rsum", "probe acc", "probe auroc"]:
        table.add_column(col, justify="right")
    base = sweep.baseline
    table.add_row("input*", *[f"{base[k]:.4f}" for k in keys[:-1]], f"{base['centroid_euclidean']:.4f}", "-", "-", "-")
    for lam in lam_values:
        point = sweep.point(lam)
        row = [f"{lam:g}" + ("**" if lam == 0 else "")] + [f"{point.alignment[k]:.4f}" for k in keys[:-1]]
        row.append(f"{point.gap_norm:.4f}")
        row.append(f"{point.retrieval['rsum']:.1f}" if point.retrieval else "-")
        probe = point.probe or {}
        row += [f"{probe['accuracy']:.4f} ±{probe['accuracy_std']:.4f}" if probe else "-",
                f"{probe['auroc']:.4f}" if probe else "-"]
        table.add_row(*row)
    out_console.print(table)
    out_console.print("* the rows as given, as the audit computes them (gap_norm column: centroid distance)",
                      highlight=False)
    out_console.print(f"** {LAM0_ROWS}", highlight=False)
    verdict = sweep.verdict()
    if verdict:
        out_console.print(verdict, highlight=False)
    out_console.print(f"  json: {write_gap_sweep(sweep, out)}")


@app.command()
def align(
    images: Path = typer.Argument(..., help="(n, d) float .npy of image embeddings"),
    texts: Path = typer.Argument(..., help="(n, d) float .npy of text embeddings, row i paired with images row i"),
    topq: float = typer.Option(0.1, help="top fraction of anchor modes in SAS, in (0, 1]"),
    chunk_rows: int = typer.Option(32768, help="rows per streamed chunk"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Every alignment metric of two .npy files, streamed (memory stays at one chunk)."""
    source = NpyPairSource(images, texts)
    start = time.perf_counter()
    chunks = Steps(not quiet and not as_json)(source.iter_chunks(chunk_rows), "moments (one pass)",
                                             -(-source.n // chunk_rows))
    result = fs.Moments.from_chunks(chunks, dim=source.dim).alignment(topq)
    _print_alignment(result, time.perf_counter() - start, as_json)


@app.command()
def demo(
    n: int = typer.Option(100_000, help="pairs"),
    dim: int = typer.Option(256, help="embedding dimension"),
    image_only: int = typer.Option(6, help="factors only the images carry"),
    seed: int = typer.Option(0),
    topq: float = typer.Option(0.1, help="top fraction of anchor modes in SAS, in (0, 1]"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Every alignment metric of built-in synthetic paired embeddings, printed."""
    out_console.print(f"synthetic paired embeddings: n={n:,}, dim={dim}, {image_only} factors only the images carry")
    start = time.perf_counter()
    images, texts = fs.synthetic.paired_embeddings(n, dim, image_only_factors=image_only, seed=seed)
    _print_alignment(fs.Moments(dim).update(images, texts).alignment(topq), time.perf_counter() - start, as_json)


@app.command()
def study(
    catalog: Path = typer.Argument(..., help="a TOML catalog, or a directory ROOT/<model>/<dataset>.* (the SAS "
                                             "paper's data/ folder of <dataset>_test_features.pt files is one)"),
    out: Path = typer.Option(Path("fastsas-study"), help="directory for study.html, study.json, study.md"),
    format: str = typer.Option("html,json,md", "--format", help="comma-separated: html, json, md"),
    metrics: Optional[str] = typer.Option(None, help="all (default), paper, or comma-separated metric names"),
    skip_slow: Optional[bool] = typer.Option(None, "--skip-slow/--no-skip-slow",
                                             help="leave out MMD and SVCCA, as the paper's --skip_slow"),
    topq: Optional[float] = typer.Option(None, help="top fraction of anchor modes in SAS (default 0.1)"),
    jackknife_blocks: Optional[int] = typer.Option(None, help="blocks of each cell's jackknife (default 20)"),
    domain: List[str] = typer.Option([], "--domain", metavar="DATASET=LABEL",
                                     help="a dataset's domain (repeatable; the paper's dataset names have theirs)"),
    reference: List[str] = typer.Option([], "--reference", metavar="MODEL",
                                        help="a reference model, kept out of pooled statistics (repeatable)"),
    direction: Optional[str] = typer.Option(None, help="one-sided imbalance hypothesis, e.g. 'medical>natural'"),
    compare: List[str] = typer.Option([], "--compare", metavar="A,B",
                                      help="compare two models per dataset with a paired jackknife (repeatable)"),
    seed: Optional[int] = typer.Option(None, help="seed of the bootstrap and permutations (default 0)"),
    bootstrap: Optional[int] = typer.Option(None, help="bootstrap resamples of models (default 2000)"),
    permutations: Optional[int] = typer.Option(None, help="Monte Carlo permutations (default 10000)"),
    correction: Optional[str] = typer.Option(None, help="holm (default) or bh, across the metrics"),
    cache: Optional[Path] = typer.Option(None, help="cell cache directory (default: .fastsas-study-cache beside "
                                                   "the catalog)"),
    no_cache: bool = typer.Option(False, "--no-cache", help="compute every cell, cache nothing"),
    jobs: int = typer.Option(1, min=1, help="cells computed at once in this process"),
    threads: Optional[int] = typer.Option(None, help="worker threads in all (default: all cores)"),
    backend: str = typer.Option("auto", help="auto | cpu | cuda: where retrieval and MMD run"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", metavar="ADDRESS",
                                            help="compute the cells on a Dask scheduler; needs fastsas[dist]"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1,
                                          help="compute the cells on N local Dask worker processes"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Many models x many datasets: every cell's metrics with intervals and retrieval, the
    SAS paper's four experiments with tests that respect the dependence of the cells, and
    paired model comparisons; writes study.html / study.json / study.md."""
    formats = _formats(format)
    _check_backend(backend)
    if scheduler is not None and workers is not None:
        raise UserError("give --scheduler ADDRESS or --workers N, not both")
    domains = {}
    for item in domain:
        name, sep, label = item.partition("=")
        if not sep or not name.strip() or not label.strip():
            raise UserError(f"--domain {item!r}: write DATASET=LABEL, e.g. --domain ROCO=medical")
        domains[name.strip()] = label.strip()
    pairs = None
    if compare:
        pairs = []
        for item in compare:
            names = _split_list(item, "--compare")
            if len(names) != 2:
                raise UserError(f"--compare {item!r}: name two models, e.g. --compare biomedclip,clip-large")
            pairs.append(tuple(names))
    start = time.perf_counter()
    result = fs.study(catalog, topq=topq, jackknife_blocks=jackknife_blocks, metrics=metrics, skip_slow=skip_slow,
                      direction=direction, compare=pairs, domains=domains or None, references=reference or None,
                      seed=seed, bootstrap=bootstrap, permutations=permutations, correction=correction,
                      cache=False if no_cache else cache, jobs=jobs, threads=threads, backend=backend,
                      scheduler=scheduler, workers=workers, progress=None if quiet else Steps())
    with Steps(not quiet).step("report"):
        paths = result.write(out, formats=formats)
    p = result.provenance
    out_console.print(f"fastsas study: {len(result.cells)} cells ({p['computed']} computed, {p['cached']} cached, "
                      f"{p['failed']} failed, {len(p['missing'])} missing) in {time.perf_counter() - start:.1f} s",
                      highlight=False)
    for failure in p["failures"]:
        out_console.print(f"  failed: {failure['model']} / {failure['dataset']}: {failure['status']}", highlight=False,
                          markup=False)
    for line in fs.study.report.findings(result.to_dict()):
        out_console.print(f"  - {line}", highlight=False, markup=False)
    for kind, path in paths.items():
        out_console.print(f"  {kind}: {path}")


def _print_alignment(result: dict, seconds: float, as_json: bool) -> None:
    if as_json:
        print(dumps(result, indent=2))
        return
    print(f"fastsas alignment of {result['n']:,} pairs (topq={result['topq']}) in {seconds:.2f} s")
    width = max(len(k) for k in result)
    for key, value in result.items():
        if key not in ("n", "topq"):
            print(f"  {key:<{width}}  {value: .6f}")


@app.command()
def separability(
    archive: List[Path] = typer.Argument(None, help="embedding store, .npz, .parquet, or two .npy files"),
    labels: str = typer.Option(..., help="metadata column of class labels (finding, lesion type, modality, ...)"),
    modality: str = typer.Option("images", help="images, texts or both"),
    group_by: Optional[str] = typer.Option(None, help="metadata column of subgroups (Modality, site, "
                                                      "BurnedInAnnotation, ...): every measure per group"),
    ks: str = typer.Option("1,5,10", help="comma-separated k of the leave-one-out k-NN classifiers"),
    shrinkage: Optional[float] = typer.Option(None, help="alpha of the regularised within-class covariance, in "
                                                         "[0, 1] (default: the library's DEFAULT_SHRINKAGE)"),
    probe: bool = typer.Option(True, "--probe/--no-probe", help="the logistic-regression probe"),
    cv: int = typer.Option(5, help="stratified folds of the probe"),
    view: str = typer.Option("none", help="2-D view of a stratified sample: none, auto (UMAP if installed, else "
                                          "t-SNE), umap or tsne (PCA of all rows is always computed)"),
    seed: int = typer.Option(0, help="seed of the probe folds, samples and views"),
    precision: str = typer.Option("auto", help="tile precision of the k-NN neighbours: auto (the cheapest on this "
                                               "data that the CPU has), float32, int8 or bfloat16 (the screens need "
                                               "AVX-512; the lists are the same)"),
    out: Path = typer.Option(Path("fastsas-separability"), help="directory for separability.json/.md/.html"),
    formats: str = typer.Option("json", "--format", help="comma-separated report formats: html, json, md"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Class separability of one modality's embeddings: Fisher ratio, pairwise class
    separations, held-out LDA, cosine and Euclidean silhouettes, leave-one-out k-NN and a
    linear probe (docs/definitions.md, "Class separability")."""
    if modality not in ("images", "texts", "both"):
        raise UserError(f"--modality must be images, texts or both, got {modality!r}")
    if view not in ("none", "auto", "umap", "tsne"):
        raise UserError(f"--view must be none, auto, umap or tsne, got {view!r}")
    k_values = _ks_option(ks)
    fmts = _formats(formats)
    if not archive:
        raise UserError("give an archive (an embedding store, .npz or .parquet, or two .npy files)")
    source = _open(list(archive))
    meta = source.metadata()
    label_values = _column(meta, labels, "--labels")
    group_values = _column(meta, group_by, "--group-by")
    x, y = source.arrays()
    sets = {"images": x, "texts": y}
    wanted = ["images", "texts"] if modality == "both" else [modality]
    results = {}
    for name in wanted:
        with Steps(not quiet and not as_json).step(f"separability of the {name}"):
            try:
                options = {} if shrinkage is None else {"shrinkage": shrinkage}
                results[name] = fs.separability(np.asarray(sets[name]), label_values, ks=k_values, probe=probe, cv=cv,
                                                view=None if view == "none" else view, groups=group_values,
                                                seed=seed, precision=precision,
                                                **options).to_dict(points="html" in fmts)
            except ValueError as exc:
                message = str(exc)
                raise UserError(message.replace("precision", "--precision", 1) if message.startswith("precision")
                                else message.replace("labels", "--labels", 1)) from None
    document = {"labels": labels, "group_by": group_by, "modalities": results}
    paths = write_separability(document, out, fmts if "json" in fmts else ("json",) + fmts)
    if as_json:
        print(dumps(document, indent=2))
        return
    for name, r in results.items():
        line = (f"{name}: {r['rows']:,} rows, {len(r['classes'])} classes; Fisher ratio {r['fisher_ratio']:.4g}, "
                f"LDA accuracy {r['lda']['accuracy']:.4f}, silhouette (cosine) {r['silhouette']['cosine']:.4f}")
        knn = ", ".join(f"k={k}: {v['accuracy']:.4f}" for k, v in r["knn"].items())
        out_console.print(line + f"; k-NN {knn}", highlight=False)
        if "probe" in r:
            p = r["probe"]["scores"]
            out_console.print(f"  probe: accuracy {p['accuracy']:.4f}, balanced {p['balanced_accuracy']:.4f}, "
                              f"AUROC {p['auroc']:.4f}", highlight=False)
    for fmt, path in paths.items():
        out_console.print(f"  {fmt}: {path}")


@app.command("overlay-bias")
def overlay_bias_command(
    clean: Path = typer.Argument(..., help="embedding store of the images as they are"),
    overlaid: Path = typer.Argument(..., help="embedding store of the same images with text overlaid "
                                              "(fastsas embed --overlay)"),
    labels: str = typer.Option(..., help="metadata column of class labels of the clean store"),
    ks: str = typer.Option("1,5,10", help="comma-separated k of the leave-one-out k-NN classifiers"),
    probe: bool = typer.Option(True, "--probe/--no-probe", help="the logistic-regression probe and its flips"),
    cv: int = typer.Option(5, help="stratified folds of the probe"),
    seed: int = typer.Option(0, help="seed of the probe folds"),
    out: Path = typer.Option(Path("fastsas-overlay"), help="directory for separability.json/.md/.html"),
    formats: str = typer.Option("json", "--format", help="comma-separated report formats: html, json, md"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Overlaid-text bias: how far text burned into the images moves their embeddings, how
    many k-NN and probe predictions flip, how separability changes, and whether images are
    pulled toward the overlay string's own embedding (docs/definitions.md, "Class separability")."""
    k_values = _ks_option(ks)
    fmts = _formats(formats)
    with Steps(not quiet and not as_json).step("overlaid-text bias"):
        try:
            bias = fs.overlay_bias(str(clean), str(overlaid), labels, ks=k_values, probe=probe, cv=cv, seed=seed)
        except ValueError as exc:
            raise UserError(str(exc).replace("labels", "--labels", 1)) from None
    document = {"labels": labels, "modalities": {}, "overlay": bias}
    paths = write_separability(document, out, fmts if "json" in fmts else ("json",) + fmts)
    if as_json:
        print(dumps(document, indent=2))
        return
    sh = bias["shift"]
    flips = ", ".join(f"k={k}: {v:.4f}" for k, v in bias["knn_flips"].items())
    out_console.print(f"{bias['rows']:,} images: cosine shift mean {sh['mean']:.4g} "
                      f"({sh['share_of_between_class']:.3g} of the between-class distance); k-NN flips {flips}"
                      + (f"; probe flips {bias['probe_flips']:.4f}" if "probe_flips" in bias else ""), highlight=False)
    if "pull" in bias:
        p = bias["pull"]
        out_console.print(f"  similarity to the overlay text: {p['clean_similarity']:.4f} -> "
                          f"{p['overlaid_similarity']:.4f}", highlight=False)
    for fmt, path in paths.items():
        out_console.print(f"  {fmt}: {path}")


_EMBED_EPILOG = ("Model families (recognised from the directory's files): clip, siglip, siglip2, align, "
                 "chinese_clip, any transformers dual encoder, open_clip checkpoints (BiomedCLIP; the openclip "
                 "extra). Nothing is downloaded and no code from the model directory is run.")


@app.command(epilog=_EMBED_EPILOG)
def embed(
    model: Path = typer.Option(..., help="local model directory (transformers save_pretrained, or open_clip "
                                         "open_clip_config.json + weights)"),
    images: Path = typer.Option(..., help="folder of PNG/JPEG/TIFF/DICOM files (recursive), one file, or a "
                                          "CSV/Parquet listing with a path column"),
    texts: Path = typer.Option(..., help="CSV/Parquet with an id and a text column, or a folder of <id>.txt"),
    out: Path = typer.Option(..., help="embedding store directory (an existing one is resumed)"),
    id_column: Optional[str] = typer.Option(None, help="id column of the texts (default: id or study_id)"),
    text_column: Optional[str] = typer.Option(None, help="text column (default: text, report or caption)"),
    image_id: str = typer.Option("stem", help="an image's id: stem (file name), parent (its folder: one folder "
                                              "per study) or dicom:<Keyword> (e.g. dicom:AccessionNumber)"),
    frames: str = typer.Option("first", help="multi-frame DICOM/TIFF: first or all frames (one row each)"),
    dicom_tags: str = typer.Option("Modality,BodyPartExamined,StudyDate,Manufacturer",
                                   help="DICOM keywords kept as metadata columns (for --group-by)"),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu, cuda, cuda:N"),
    precision: str = typer.Option("auto", help="auto (bf16/fp16 on GPU, float32 on CPU), float32, bf16, fp16; "
                                               "embeddings are float32 either way"),
    batch_size: int = typer.Option(32, help="images (and texts) per forward pass"),
    workers: Optional[int] = typer.Option(None, help="decoding worker processes (default min(4, cores - 1))"),
    chunk_rows: int = typer.Option(4096, help="rows per store chunk (the unit of commit and resumption)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="start an existing store again instead of resuming"),
    overlay: Optional[List[str]] = typer.Option(None, help="text rendered onto every image before the model sees "
                                                           "it (TEXT, or TEXT@x,y,size as fractions of the image); "
                                                           "repeatable"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Embed an archive of images and texts with a local model into an embedding store
    (then: fastsas audit OUT). Unreadable files are skipped and listed in OUT/skipped.csv;
    re-running an interrupted job embeds only what is missing."""
    from fastsas.embedding import embed as run_embed

    tags = tuple(_split_list(dicom_tags, "--dicom-tags")) if dicom_tags.strip() else ()
    try:
        result = run_embed(model, images, texts, out, id_column=id_column, text_column=text_column,
                           image_id=image_id, frames=frames, dicom_tags=tags, device=device, precision=precision,
                           batch_size=batch_size, workers=workers, chunk_rows=chunk_rows, overwrite=overwrite,
                           progress=Steps(not quiet), overlay=list(overlay) if overlay else None)
    except USER_ERRORS as exc:
        raise UserError(embed_flags(error_text(exc))) from None
    except KeyboardInterrupt:
        err_console.print(f"fastsas: interrupted; the rows embedded so far are kept in {out}: run the same command "
                          "again to resume", highlight=False, markup=False)
        raise typer.Exit(130) from None
    _print_embed_summary(result)


# The parameters of fastsas.embed (and load_model's model_dir) as flags of `fastsas embed`:
# the library's messages name its parameters, the command's name its flags.
EMBED_FLAGS = {"model_dir": "--model", "model": "--model", "images": "--images", "texts": "--texts", "out": "--out",
               "id_column": "--id-column", "text_column": "--text-column", "image_id": "--image-id",
               "frames": "--frames", "dicom_tags": "--dicom-tags", "device": "--device", "precision": "--precision",
               "batch_size": "--batch-size", "workers": "--workers", "chunk_rows": "--chunk-rows",
               "overwrite": "--overwrite", "overlay": "--overlay"}
_NAMES = "|".join(sorted(EMBED_FLAGS, key=len, reverse=True))


def embed_flags(message: str) -> str:
    """An embedding error message with its parameter names as the command's flags:
    ``name=value`` becomes ``--flag value`` (``overwrite=True``: ``--overwrite``), a
    parameter with an underscore is replaced wherever it stands, one that is a plain word
    (images, out, frames, ...) where it opens the message or is followed by "directory"."""
    def value_form(m: re.Match) -> str:
        value = m.group(2).strip("'\"")
        return EMBED_FLAGS[m.group(1)] if value == "True" else f"{EMBED_FLAGS[m.group(1)]} {value}"

    message = re.sub(rf"(?<![\w-])({_NAMES})=('[^']*'|\"[^\"]*\"|[\w:.-]+)", value_form, message)
    message = re.sub(rf"(?<![\w-])({'|'.join(n for n in EMBED_FLAGS if '_' in n)})\b",
                     lambda m: EMBED_FLAGS[m.group(1)], message)
    message = re.sub(rf"^({_NAMES})\b", lambda m: EMBED_FLAGS[m.group(1)], message)
    return re.sub(rf"\b({_NAMES}) directory\b", lambda m: f"{EMBED_FLAGS[m.group(1)]} directory", message)


def _print_embed_summary(result) -> None:
    out_console.print(f"{result.store}: {result.rows:,} rows of dim {result.dim} ({result.family}, "
                      f"{result.device}); {result.rows_embedded:,} rows embedded this run, "
                      f"{result.texts_embedded:,} texts, {result.seconds:.1f} s", highlight=False)
    n = len(result.skipped)
    files = "file" if n == 1 else "files"
    where = f" (reasons in {result.skip_log})" if n else ""
    others = result.files_not_images
    ignored = f"; {others:,} {'file was' if others == 1 else 'files were'} not images (ignored)" if others else ""
    out_console.print(f"{n or 'no'} {files} skipped{where}; {result.texts_without_images:,} texts have no "
                      f"image{ignored}")


def _is_usage_error(exc: BaseException) -> bool:
    # Click's UsageError, whether from click itself or the copy newer typer versions carry:
    # recognised by its public shape rather than by a private import path.
    return getattr(exc, "exit_code", None) == EXIT_USAGE and hasattr(exc, "format_message")


def error_text(exc: BaseException) -> str:
    """The one-line message of a user error: a KeyError's message without its quotes, an
    OSError as "file: reason"."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, ImportError):
        where = ": ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        return f"{where}: {exc.strerror}" if where else exc.strerror
    return str(exc)


def _printable_streams() -> None:
    """Lone surrogates (file names that are not UTF-8, labels built from them) are printed
    as backslash escapes instead of failing the print."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # pragma: no cover - a stream that cannot be reconfigured
                pass


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 success, 2 bad usage or input)."""
    _printable_streams()
    if argv is None:
        argv = sys.argv[1:]
    if not argv:
        argv = ["--help"]
    try:
        app(args=argv, prog_name="fastsas", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        return 1
    except UserError as exc:
        err_console.print(f"fastsas: error: {exc}", highlight=False, soft_wrap=True, markup=False)
        return EXIT_USAGE
    except USER_ERRORS as exc:
        err_console.print(f"fastsas: error: {' '.join(error_text(exc).split())}", highlight=False, soft_wrap=True,
                          markup=False)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - only usage errors are ours to report; others re-raise
        if not _is_usage_error(exc):
            raise
        message = " ".join(exc.format_message().split())
        err_console.print(f"fastsas: error: {message} (see: fastsas --help)", highlight=False, soft_wrap=True,
                          markup=False)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
