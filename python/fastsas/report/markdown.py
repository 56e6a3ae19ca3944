"""The Markdown form of a report (``report.md``): the same content as the HTML page in
text: the findings, the key numbers with their intervals and chance levels, subgroups,
drift, the suspected mismatches (ids unless ``show_ids=False``) and the unit of
uncertainty."""
from __future__ import annotations

import html
import re
from typing import Any, Mapping, Sequence

from fastsas.definitions import IMBALANCE_SIGN
from fastsas.report.findings import chance_of, findings
from fastsas.report.text import (format_p, format_percent, format_value, imbalance_verdict, interval_of, mismatch_rows,
                                 mismatch_summary, neighbourhood_caption, neighbourhood_rows)

__all__ = ["markdown_report"]


def _md(text: Any) -> str:
    """Escape data text for Markdown (HTML entities, and Markdown's own punctuation)."""
    s = html.escape(str(text), quote=False).replace("\n", " ")
    return re.sub(r"([\\`*_\[\]|#!])", r"\\\1", s)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return (["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
            + ["| " + " | ".join(r) + " |" for r in rows] + [""])


def _ci(unc: Mapping, key: str, percent: bool = False) -> str:
    lo, hi = interval_of(unc or {}, key)
    f = format_percent if percent else format_value
    return f"{f(lo)} to {f(hi)}" if lo is not None and hi is not None else ""


def _parts_table(rows: Sequence[Mapping], kind: str) -> list[str]:
    with_ret = any("retrieval_whole" in g or "retrieval_within" in g for g in rows)
    headers = [kind, "pairs", "status", "SAS(I→T)", "95% interval", "SAS(T→I)", "95% interval", "CKA"]
    if with_ret:
        headers += ["I→T R@1 vs all", "T→I R@1 vs all", "I→T R@1 within", "T→I R@1 within"]
    body = []
    for g in rows:
        a, u = g.get("alignment") or {}, g.get("uncertainty") or {}
        row = [_md(g.get("group")), format_value(g.get("n")), _md(g.get("status")), format_value(a.get("sas_i2t")),
               _ci(u, "sas_i2t"), format_value(a.get("sas_t2i")), _ci(u, "sas_t2i"), format_value(a.get("cka"))]
        if with_ret:
            v, w = g.get("retrieval_whole") or {}, g.get("retrieval_within") or {}
            row += [format_percent(v.get("i2t_r1")), format_percent(v.get("t2i_r1")), format_percent(w.get("i2t_r1")),
                    format_percent(w.get("t2i_r1"))]
        body.append(row)
    return _table(headers, body)


def markdown_report(d: Mapping, gap: Mapping | None, meta: Mapping, show_ids: bool) -> str:
    """The Markdown report of an audit dict (see :func:`fastsas.report.write_report`): the
    same findings, numbers, subgroups, drift and suspected mismatches as the HTML page."""
    a = d["alignment"]
    unc = d.get("uncertainty") or {}
    test = unc.get("imbalance_test") or {}
    ret = d.get("retrieval") if isinstance(d.get("retrieval"), Mapping) else None
    lines = [f"# {_md(meta['title'])}", "",
             f"{format_value(d['n'])} pairs, dimension {d['dim']}, q = {float(d['topq']):g}. Created {meta['created']}; "
             f"fastsas {meta['fastsas_version']}, definitions {meta['definitions_version']}; "
             f"input {_md(meta['input_fingerprint'] or 'not fingerprinted')}.", "", "## Findings", ""]
    lines += [f"{i}. {_md(f['text'])}" for i, f in enumerate(d.get("findings") or findings(d), 1)]
    lines += ["", "## Key numbers", ""]
    rows = []
    for key, name in (("sas_i2t", "SAS(I→T)"), ("sas_t2i", "SAS(T→I)"), ("sas_imbalance", "imbalance"),
                      ("cka", "CKA"), ("sas_companion_i2t", "companion score I→T"),
                      ("sas_companion_t2i", "companion score T→I")):
        value = a.get(key) if key in a else (unc.get(key) or {}).get("value")
        if value is None:
            continue
        chance = chance_of(d, key)
        rows.append([name, format_value(value), _ci(unc, key), "" if chance is None else format_value(chance)])
    rows.append(["imbalance test p", format_p(test.get("p_value")), "", ""])
    if ret is not None:
        for key, name in (("i2t_r1", "image→text R@1"), ("t2i_r1", "text→image R@1")):
            if key in ret:
                rows.append([name, format_percent(ret[key]), _ci(unc.get("retrieval") or {}, key, True),
                             format_percent(chance_of(d, key), 3)])
        if "rsum" in ret:
            rows.append(["rSum (0 to 600, recall in percent)", f"{ret['rsum']:.1f}", "",
                         f"{chance_of(d, 'rsum') or 0:.2f}"])
    lines += _table(["metric", "value", "95% interval", "by chance"], rows)
    verdict, _ = imbalance_verdict(d)
    lines += [verdict, "", IMBALANCE_SIGN, ""]
    groups = [g for g in d.get("groups") or [] if isinstance(g, Mapping)]
    if groups:
        lines += ["## Subgroups", ""] + _parts_table(groups, "subgroup")
    table = neighbourhood_rows(d)
    if table is not None:
        headers, rows = table
        lines += ["## Neighbourhoods", "", _md(neighbourhood_caption(d)), ""]
        lines += _table(headers, [[_md(c) if isinstance(c, str) else format_value(c) for c in row] for row in rows])
        lines += [""]
    drift = [g for g in d.get("drift") or [] if isinstance(g, Mapping)]
    if drift:
        lines += ["## Drift", ""] + _parts_table(drift, "period")
        lines += [_md(f["text"]) for f in d.get("findings") or [] if f.get("kind") == "drift"] + [""]
    if gap is not None and (gap.get("verdict") or gap.get("best_lam") is not None):
        verdict = gap.get("verdict") or f"best λ by probe accuracy = {float(gap['best_lam']):g}"
        lines += [f"Gap sweep: {_md(verdict)}. {_md(gap.get('lam0_rows') or '')}", ""]
    lines += ["## Suspected mismatches", "", _md(mismatch_summary(d)), ""]
    mismatches = mismatch_rows(d, show_ids)
    if mismatches:
        with_ids = any("id" in m for m in mismatches)
        with_ranks = any("i2t_rank" in m for m in mismatches)
        headers = (["#", "row"] + (["id"] if with_ids else []) + ["statistic", "lfdr", "p-value"]
                   + (["I→T rank", "T→I rank"] if with_ranks else []))
        body = [[str(i), str(m.get("row"))] + ([_md(m.get("id"))] if with_ids else [])
                + [format_value(m.get("statistic")), format_value(m.get("lfdr")), format_p(m.get("p_value"))]
                + ([format_value(m.get("i2t_rank")), format_value(m.get("t2i_rank"))] if with_ranks else [])
                for i, m in enumerate(mismatches, 1)]
        lines += _table(headers, body)
    unit = d.get("unit") or {}
    if unit:
        lines += [f"Unit of uncertainty: {_md(unit.get('name'))} ({format_value(unit.get('count'))} units, "
                  f"{format_value(unit.get('blocks'))} jackknife blocks)."]
    return "\n".join(lines).rstrip() + "\n"
