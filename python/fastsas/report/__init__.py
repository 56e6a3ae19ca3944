"""The report a person reads: one self-contained HTML page, ``report.json`` and a short
Markdown summary, written from an :class:`~fastsas.audit.AuditResult` (and optionally a
:class:`~fastsas.gap.GapSweep`); and the outputs of ``fastsas compare`` and ``fastsas gap``.

- :mod:`fastsas.report.writer`: :func:`write_report`;
- :mod:`fastsas.report.page`: the HTML page, section by section;
- :mod:`fastsas.report.markdown`: ``report.md``;
- :mod:`fastsas.report.figures`: the figures (matplotlib, imported when the first is drawn);
- :mod:`fastsas.report.text`: number formats and the words shared by HTML and Markdown;
- :mod:`fastsas.report.findings`: the findings, in words, at the top of every form;
- :mod:`fastsas.report.tables`: ``compare.json`` / ``compare.md`` and ``gap.json``.

Every JSON file is written by :func:`fastsas.io.strict_json.dumps` (NaN and infinities as
``null``) and every file atomically (:func:`fastsas.io.write_atomic`).

Privacy: a report holds aggregates plus the keys of flagged rows (the archive's own id
column, chosen by the user to be pseudonymous). The writer never sees report text or other
metadata columns unless they are asked for; ``show_ids=False`` drops the ids from every file.

>>> import tempfile, fastsas as fs
>>> x, y = fs.synthetic.paired_embeddings(500, 16, image_only_factors=2)
>>> paths = fs.report.write_report(fs.audit(x, y), tempfile.mkdtemp(), formats=("json", "md"))
>>> sorted(paths)
['json', 'md']
"""
from fastsas.io.fingerprint import fingerprint_arrays
from fastsas.report.figures import (FIG_DPI, FIG_WIDTH_IN, FIG_WIDTH_PX, FIGURE_FRAME, FIGURE_FRAME_RGB,
                                    MAX_GROUP_CURVES, MAX_GROUPS_PLOTTED)
from fastsas.report.tables import write_compare, write_gap_sweep
from fastsas.report.findings import findings
from fastsas.report.text import format_percent, format_value, mismatch_summary
from fastsas.report.writer import FILE_NAMES, FORMATS, parse_formats, write_report

__all__ = ["FIGURE_FRAME", "FIGURE_FRAME_RGB", "FIG_DPI", "FIG_WIDTH_IN", "FIG_WIDTH_PX", "FILE_NAMES", "FORMATS",
           "MAX_GROUPS_PLOTTED", "MAX_GROUP_CURVES", "findings", "fingerprint_arrays", "format_percent", "format_value",
           "mismatch_summary", "parse_formats",
           "write_compare", "write_gap_sweep", "write_report"]
