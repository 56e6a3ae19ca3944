"""The Markdown summary of a report (``report.md``): the key numbers, the worst
subgroups and the number of suspected mismatches (no ids)."""
from __future__ import annotations

import html
import re
from typing import Any, Mapping

from fastsas.definitions import IMBALANCE_SIGN
from fastsas.report.text import (format_p, format_value, imbalance_verdict, interval_of, mismatch_rows,
                                 mismatches_assessed, worst_groups)

__all__ = ["markdown_report"]


def _md(text: Any) -> str:
    """Escape data text for Markdown (HTML entities, and Markdown's own punctuation)."""
    s = html.escape(str(text), quote=False).replace("\n", " ")
    return re.sub(r"([\\`*_\[\]|#!])", r"\\\1", s)


def markdown_report(d: Mapping, gap: Mapping | None, meta: Mapping, show_ids: bool) -> str:
    """The short Markdown summary of an audit dict (see :func:`fastsas.report.write_report`):
    the key numbers with their intervals, what the imbalance says, the worst subgroups and
    the number of suspected mismatches (never their ids)."""
    a = d["alignment"]
    unc = d.get("uncertainty") or {}
    test = unc.get("imbalance_test") or {}
    ret = d.get("retrieval") if isinstance(d.get("retrieval"), Mapping) else None
    lines = [f"# {_md(meta['title'])}", "",
             f"{format_value(d['n'])} pairs, dimension {d['dim']}, q = {float(d['topq']):g}. Created {meta['created']}; "
             f"fastsas {meta['fastsas_version']}, definitions {meta['definitions_version']}; "
             f"input {_md(meta['input_fingerprint'] or 'not fingerprinted')}.", "",
             "| metric | value | 95% interval |", "|---|---|---|"]
    for key, name in (("sas_i2t", "SAS(I→T)"), ("sas_t2i", "SAS(T→I)"), ("sas_imbalance", "imbalance"),
                      ("cka", "CKA")):
        lo, hi = interval_of(unc, key)
        ci = f"{format_value(lo)} to {format_value(hi)}" if lo is not None and hi is not None else ""
        lines.append(f"| {name} | {format_value(a.get(key))} | {ci} |")
    lines.append(f"| imbalance test p | {format_p(test.get('p_value'))} | |")
    if ret is not None:
        for key in ("i2t_r1", "t2i_r1", "rsum"):
            if key in ret:
                lines.append(f"| {key} | {format_value(ret[key])} | |")
    verdict, _ = imbalance_verdict(d)
    lines += ["", verdict, "", IMBALANCE_SIGN, ""]
    worst = worst_groups(d)
    if worst:
        lines.append("Subgroups with the lowest alignment (SAS sym):")
        lines += [f"- {_md(g.get('group'))}: SAS(I→T) {format_value(g['alignment'].get('sas_i2t'))}, "
                  f"SAS(T→I) {format_value(g['alignment'].get('sas_t2i'))}, n = {format_value(g.get('n'))}" for g in worst]
        lines.append("")
    if d.get("drift"):
        lines.append(f"Drift: {len(d['drift'])} periods (see report.html).")
    if gap is not None and gap.get("best_lam") is not None:
        lines.append(f"Gap sweep: best λ by probe accuracy = {float(gap['best_lam']):g}.")
    mismatches = mismatch_rows(d, show_ids)
    if not mismatches_assessed(d):
        lines.append("Suspected mismatches: not assessed (no retrieval).")
    else:
        lines.append(f"Suspected mismatches: {len(mismatches)} (listed by id in report.html and report.json).")
    return "\n".join(lines).rstrip() + "\n"
