"""Writing a report: ``report.html`` (:mod:`fastsas.report.page`), ``report.json`` (every
number of ``audit.to_dict()`` at the top level, plus ``findings`` (:mod:`fastsas.report.findings`),
``gap_sweep``, ``fastsas_version``,
``definitions_version``, ``input_fingerprint``, ``created`` (UTC, ISO 8601), ``title``,
``id_column`` and ``context``; strict JSON: NaN and infinities are written as ``null``) and
``report.md`` (:mod:`fastsas.report.markdown`), each written atomically."""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from fastsas._version import __version__
from fastsas.definitions import DEFINITIONS_VERSION
from fastsas.io.atomic import printable, write_atomic
from fastsas.io.strict_json import dumps
from fastsas.report.findings import findings
from fastsas.report.markdown import markdown_report
from fastsas.report.page import html_report
from fastsas.report.text import mismatch_rows

__all__ = ["FILE_NAMES", "FORMATS", "parse_formats", "write_report"]

FORMATS = ("html", "json", "md")
FILE_NAMES = {"html": "report.html", "json": "report.json", "md": "report.md"}


def _audit_dict(audit: Any) -> dict:
    if hasattr(audit, "to_dict"):
        d = audit.to_dict()
    elif isinstance(audit, Mapping):
        d = dict(audit)
    else:
        raise TypeError(f"audit must be the AuditResult of fs.audit (or its to_dict()), got {type(audit).__name__}")
    missing = [k for k in ("n", "dim", "topq", "alignment") if k not in d]
    if missing:
        raise ValueError(f"audit is missing {missing}; give the AuditResult of fs.audit")
    return d


def _gap_dict(gap_sweep: Any) -> dict | None:
    if gap_sweep is None:
        return None
    if hasattr(gap_sweep, "to_dict"):
        return gap_sweep.to_dict()
    if isinstance(gap_sweep, Mapping) and "points" in gap_sweep:
        return dict(gap_sweep)
    raise TypeError(f"gap_sweep must be the GapSweep of fs.gap.sweep (or its to_dict()), got {type(gap_sweep).__name__}")


def parse_formats(formats: Any) -> tuple[str, ...]:
    """The report formats asked for, checked: a sequence or a comma-separated string of
    "html", "json", "md" (case and blanks ignored, duplicates dropped).

    Parameters
    ----------
    formats : str or sequence of str
        E.g. "html,json" or ("json", "md").

    Returns
    -------
    tuple of str
        The formats, in the order given.

    Raises
    ------
    TypeError
        When `formats` is not a string or a sequence.
    ValueError
        When a format is unknown, or none is given.

    Examples
    --------
    >>> from fastsas.report import parse_formats
    >>> parse_formats("json, MD,json")
    ('json', 'md')
    """
    if isinstance(formats, str):
        formats = [f for f in formats.split(",")]
    try:
        items = [str(f).strip().lower() for f in formats]
    except TypeError:
        raise TypeError(f"formats must be a sequence such as ('html', 'json', 'md'), got {formats!r}") from None
    items = [f for f in items if f]
    bad = [f for f in items if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown report format: formats {','.join(bad)} is not one of {', '.join(FORMATS)}")
    if not items:
        raise ValueError(f"formats is empty; choose one or more of {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(items))


def write_report(
    audit: Any,
    out_dir: str | os.PathLike,
    *,
    formats: Sequence[str] | str = FORMATS,
    gap_sweep: Any = None,
    title: str = "fastsas audit",
    input_fingerprint: str | None = None,
    id_column_name: str = "id",
    show_ids: bool = True,
    extra_context: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write the report of an audit into `out_dir` (created if missing), each file atomically.

    Parameters
    ----------
    audit : AuditResult or dict
        The result of :func:`fastsas.audit` (or its ``to_dict()``).
    out_dir : str or os.PathLike
        The folder of the report files.
    formats : sequence of str or str, default ("html", "json", "md")
        Any of ``"html"`` (``report.html``, self-contained), ``"json"`` (``report.json``,
        every number) and ``"md"`` (``report.md``, a summary); or a comma-separated string.
    gap_sweep : GapSweep, dict or None
        The result of :func:`fastsas.gap.sweep`: adds its figure, table and numbers.
    title : str, default "fastsas audit"
        The page title.
    input_fingerprint : str or None
        E.g. :func:`fastsas.io.fingerprint_arrays` of the input.
    id_column_name : str, default "id"
        Header of the id column in the mismatch table.
    show_ids : bool, default True
        False drops the ids of suspected mismatches from every file (rows stay).
    extra_context : dict or None
        Small key/value pairs (command line, model name) shown under Provenance and stored
        under ``context`` in the JSON.

    Returns
    -------
    dict
        ``{format: path}`` for each file written.

    Raises
    ------
    TypeError
        When `audit` is not an audit result, or `title`, `input_fingerprint`,
        `extra_context` have the wrong type.
    ValueError
        When a format is unknown, or `out_dir` is an existing file.

    Examples
    --------
    >>> import tempfile, fastsas as fs
    >>> from fastsas.report import write_report
    >>> x, y = fs.synthetic.paired_embeddings(500, 16, image_only_factors=2)
    >>> paths = write_report(fs.audit(x, y), tempfile.mkdtemp(), formats=("json", "md"))
    >>> sorted(paths)
    ['json', 'md']
    """
    d = _audit_dict(audit)
    d["findings"] = findings(d)  # one list for the three files
    gap = _gap_dict(gap_sweep)
    kinds = parse_formats(formats)
    if not isinstance(title, str):
        raise TypeError(f"title must be a string, got {type(title).__name__}")
    # Labels, ids and titles with lone surrogates (from file names that are not UTF-8) are
    # shown as backslash escapes in every file and figure instead of failing the report.
    d, gap, title, id_column_name, extra_context = printable((d, gap, title, id_column_name, extra_context))
    if input_fingerprint is not None and not isinstance(input_fingerprint, str):
        raise TypeError(f"input_fingerprint must be a string or None, got {type(input_fingerprint).__name__}")
    if extra_context is not None and not isinstance(extra_context, Mapping):
        raise TypeError(f"extra_context must be a dict or None, got {type(extra_context).__name__}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {str(out)!r} exists and is not a directory; give a directory for the report")
    out.mkdir(parents=True, exist_ok=True)

    meta = {
        "title": title,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "fastsas_version": __version__,
        "definitions_version": d.get("definitions_version") or DEFINITIONS_VERSION,
        "input_fingerprint": input_fingerprint,
    }
    paths: dict[str, Path] = {}
    for kind in kinds:
        path = out / FILE_NAMES[kind]
        if kind == "json":
            audit_part = dict(d)
            audit_part["mismatches"] = mismatch_rows(d, show_ids)
            payload = {**audit_part, **meta, "id_column": id_column_name if show_ids else None,
                       "gap_sweep": gap, "context": dict(extra_context) if extra_context else None}
            text = dumps(payload, indent=1)
        elif kind == "md":
            text = markdown_report(d, gap, meta, show_ids)
        else:
            text = html_report(d, gap, meta, show_ids, id_column_name, extra_context)
        write_atomic(path, text)
        paths[kind] = path
    return paths
