"""The outputs of ``fastsas compare`` (``compare.html``, ``compare.json``, ``compare.md``;
built by :mod:`fastsas.report.compare`) and ``fastsas gap`` (``gap.json``, the sweep's
``to_dict()``), written with the same strict JSON encoder and atomic writes as the audit
report."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from fastsas.io.atomic import write_atomic
from fastsas.io.strict_json import dumps
from fastsas.report.compare import compare_findings, compare_html, compare_markdown

__all__ = ["write_compare", "write_gap_sweep"]


def write_compare(comparison: Mapping[str, Any], out_dir: str | os.PathLike, *, topq: float,
                  formats: Sequence[str] = ("html", "json", "md")) -> dict[str, Path]:
    """Write the report of a comparison of archives into `out_dir` (created if missing).

    Parameters
    ----------
    comparison : dict
        :func:`fastsas.audit.compare.compare`'s result.
    out_dir : str or os.PathLike
        The folder.
    topq : float
        SAS's top fraction of modes, recorded in the JSON.
    formats : sequence of str
        Any of "html" (``compare.html``), "json" (``compare.json``: every number, plus
        ``findings``), "md" (``compare.md``).

    Returns
    -------
    dict
        ``{format: path}``.

    Examples
    --------
    >>> import json, tempfile
    >>> from fastsas.report import write_compare
    >>> c = {"archives": [{"name": "a", "n": 2, "metrics": {"sas_i2t": {"value": float("nan")}}}],
    ...      "paired": {"done": False, "why": "one archive"}, "differences": []}
    >>> paths = write_compare(c, tempfile.mkdtemp(), topq=0.1)
    >>> json.loads(paths["json"].read_text())["archives"][0]["metrics"]["sas_i2t"]["value"] is None
    True
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind in formats:
        path = out / f"compare.{kind}"
        if kind == "json":
            text = dumps({"topq": topq, **comparison, "findings": compare_findings(comparison)}, indent=2)
        elif kind == "md":
            text = compare_markdown(comparison)
        elif kind == "html":
            text = compare_html(comparison)
        else:
            raise ValueError(f"unknown compare format {kind!r}: html, json or md")
        write_atomic(path, text)
        paths[kind] = path
    return paths


def write_gap_sweep(sweep: Any, out_dir: str | os.PathLike) -> Path:
    """Write a gap sweep (:func:`fastsas.gap.sweep`) as ``gap.json`` into `out_dir`.

    Parameters
    ----------
    sweep : GapSweep or dict
        The sweep, or its ``to_dict()``.
    out_dir : str or os.PathLike
        The folder (created if missing).

    Returns
    -------
    Path
        The path of gap.json.

    Examples
    --------
    >>> import tempfile, fastsas as fs
    >>> from fastsas.report import write_gap_sweep
    >>> x, y = fs.synthetic.paired_embeddings(300, 16)
    >>> write_gap_sweep(fs.gap.sweep(x, y, lams=(0, 1), retrieval=False), tempfile.mkdtemp()).name
    'gap.json'
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "gap.json"
    write_atomic(path, dumps(sweep.to_dict() if hasattr(sweep, "to_dict") else sweep, indent=2))
    return path
