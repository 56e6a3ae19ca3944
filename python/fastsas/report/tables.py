"""The outputs of ``fastsas compare`` (one row of metrics per archive: ``compare.json`` and
``compare.md``) and ``fastsas gap`` (``gap.json``, the sweep's ``to_dict()``), written with
the same strict JSON encoder and atomic writes as the audit report."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from fastsas.io.atomic import write_atomic
from fastsas.io.strict_json import dumps

__all__ = ["compare_markdown", "write_compare", "write_gap_sweep"]


def compare_markdown(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> str:
    """The Markdown table of a comparison: one row per archive (its file name), one column
    per key, four decimals."""
    lines = ["| archive | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += ["| " + Path(r["archive"]).name + " | " + " | ".join(f"{r[k]:.4f}" for k in keys) + " |" for r in rows]
    return "# fastsas compare\n\n" + "\n".join(lines) + "\n"


def write_compare(rows: Sequence[Mapping[str, Any]], keys: Sequence[str], out_dir: str | os.PathLike, *,
                  topq: float) -> dict[str, Path]:
    """Write a comparison of several archives into `out_dir` (created if missing).

    Parameters
    ----------
    rows : sequence of dict
        One dict per archive: ``archive`` (its path), ``n``, ``dim`` and every metric.
    keys : sequence of str
        The metrics shown in ``compare.md`` (``compare.json`` holds every key of every row).
    out_dir : str or os.PathLike
        The folder.
    topq : float
        SAS's top fraction of modes, recorded in the JSON.

    Returns
    -------
    dict
        ``{"json": path of compare.json, "md": path of compare.md}``.

    Examples
    --------
    >>> import json, tempfile
    >>> from fastsas.report import write_compare
    >>> paths = write_compare([{"archive": "a/x.npz", "n": 2, "sas_i2t": float("nan")}], ["sas_i2t"],
    ...                       tempfile.mkdtemp(), topq=0.1)
    >>> json.loads(paths["json"].read_text())["archives"][0]["sas_i2t"] is None
    True
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "compare.json", "md": out / "compare.md"}
    write_atomic(paths["json"], dumps({"topq": topq, "archives": list(rows)}, indent=2))
    write_atomic(paths["md"], compare_markdown(rows, keys))
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
