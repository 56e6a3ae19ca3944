"""The HTML report: one self-contained page, built section by section (findings, summary,
spectral profile, subgroups, retrieval, drift, gap sweep, suspected mismatches, all metrics,
provenance).

The page opens with no network: figures are PNGs inlined as ``data:`` URIs, CSS is inline,
there is no script at all, and a Content-Security-Policy meta tag forbids loading anything
but inline images and styles. Every piece of text that comes from the data or the caller
(group labels, ids, titles, context keys and values) goes through :func:`escape`.
"""
from __future__ import annotations

import base64
import html
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from fastsas.definitions import IMBALANCE_SIGN
from fastsas.io.strict_json import dumps
from fastsas.report.figures import (FIGURE_FRAME, Figures, drift_figure, gap_figure, groups_figure, recall_figure,
                                    sas_q_figure, spectrum_figure)
from fastsas.report.findings import PAIRING_METRICS, chance_of, findings
from fastsas.report.text import (MEANINGS, as_finite, format_p, format_percent, format_value, imbalance_verdict,
                                 interval_of, meaning_of, mismatch_rows, mismatch_summary, mismatches_assessed,
                                 neighbourhood_caption, neighbourhood_rows, worst_groups)

__all__ = ["Html", "escape", "html_report"]

_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
        "form-action 'none'")


_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif;
       color: #1d2329; background: #f6f7f9; margin: 0; line-height: 1.45; }
main { max-width: 1060px; margin: 0 auto; padding: 24px 28px 48px; background: #ffffff; }
h1 { font-size: 1.6rem; margin: 0 0 4px; }
h2 { font-size: 1.25rem; margin: 32px 0 8px; border-bottom: 2px solid #e3e6ea; padding-bottom: 4px; }
h3 { font-size: 1.05rem; margin: 20px 0 6px; }
p.meta { color: #5b6570; margin: 0 0 12px; font-size: 0.92rem; }
p.note { color: #5b6570; font-size: 0.9rem; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 12px 0; }
.card { border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 12px; min-width: 170px; }
.card .k { font-size: 0.82rem; color: #5b6570; }
.card .v { font-size: 1.3rem; font-weight: 600; }
.card .i { font-size: 0.82rem; color: #5b6570; }
.verdict { border-left: 4px solid #b26b00; background: #fff7e8; padding: 8px 12px; margin: 12px 0; }
.verdict.neutral { border-left-color: #3a7d44; background: #eef7ef; }
ol.findings { padding-left: 1.4em; }
ol.findings li { margin: 4px 0; }
ol.findings li.warning { font-weight: 600; }
figure { margin: 16px 0; }
figure img { display: block; border: 1px solid """ + FIGURE_FRAME + """; padding: 0; margin: 0;
             max-width: none; }
figcaption { font-size: 0.9rem; color: #39424b; margin-top: 6px; max-width: 1000px; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 0.9rem; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f0f2f4; }
code { font-size: 0.88rem; word-break: break-all; }
footer { color: #5b6570; font-size: 0.85rem; margin-top: 36px; }
"""


def escape(value: Any) -> str:
    """Escaped text for HTML (text and attribute values alike)."""
    return html.escape(str(value), quote=True)


class Html(str):
    """A string of HTML built here from escaped parts: inserted as is."""


def _cell(value: Any) -> str:
    if isinstance(value, Html):
        return f"<td>{value}</td>"
    numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    return f'<td class="num">{escape(format_value(value))}</td>' if numeric else f"<td>{escape(format_value(value))}</td>"


def _table(headers: Sequence[Any], rows: Iterable[Sequence[Any]], caption: str | None = None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "\n".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>"


def _figure_html(F: Figures, fig: Any, name: str, alt: str, caption: str) -> str:
    data, width, height = F.png(fig)
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (f'<figure id="fig-{escape(name)}"><img src="{src}" data-figure="{escape(name)}" width="{width}" '
            f'height="{height}" alt="{escape(alt)}"><figcaption>{escape(caption)}</figcaption></figure>')


def _card(key: str, value: str, note: str = "") -> str:
    extra = f'<div class="i">{escape(note)}</div>' if note else ""
    return f'<div class="card"><div class="k">{escape(key)}</div><div class="v">{escape(value)}</div>{extra}</div>'


def _ci_text(lo: float | None, hi: float | None) -> str:
    return f"95% interval {format_value(lo)} to {format_value(hi)}" if lo is not None and hi is not None else ""


def _pct(value: Any) -> Any:
    """A recall shown in percent, or None."""
    return None if as_finite(value) is None else Html(escape(format_percent(value)))


def _with_ci(value: Any, unc: Mapping | None, key: str, percent: bool = False) -> Any:
    if as_finite(value) is None:
        return None
    lo, hi = interval_of(unc or {}, key)
    f = format_percent if percent else format_value
    ci = f" [{f(lo)}, {f(hi)}]" if lo is not None and hi is not None else ""
    return Html(escape(f(value) + ci))


def _group_table(rows: Sequence[Mapping], kind: str, contrasts: Sequence[Mapping] = ()) -> str:
    headers = [kind, "pairs", "status", "SAS(I→T) [95%]", "SAS(T→I) [95%]", "imbalance", "CKA [95%]"]
    with_ret = any("retrieval_within" in g or "retrieval_whole" in g for g in rows)
    tests = {str(c.get("group")): c.get("tests") or {} for c in contrasts}
    if with_ret:
        headers += ["I→T R@1 vs all", "T→I R@1 vs all", "I→T R@1 within", "T→I R@1 within"]
    if tests:
        headers += ["differs from the rest (Holm p < 0.05)"]
    body = []
    for g in rows:
        a = g.get("alignment") or {}
        u = g.get("uncertainty") or {}
        row = [str(g.get("group")), g.get("n"), g.get("status"), _with_ci(a.get("sas_i2t"), u, "sas_i2t"),
               _with_ci(a.get("sas_t2i"), u, "sas_t2i"), a.get("sas_imbalance"), _with_ci(a.get("cka"), u, "cka")]
        if with_ret:
            w = g.get("retrieval_within") or {}
            v = g.get("retrieval_whole") or {}
            vu = g.get("retrieval_whole_uncertainty") or {}
            row += [_with_ci(v.get("i2t_r1"), vu, "i2t_r1", True), _with_ci(v.get("t2i_r1"), vu, "t2i_r1", True),
                    _pct(w.get("i2t_r1")), _pct(w.get("t2i_r1"))]
        if tests:
            t = tests.get(str(g.get("group"))) or {}
            row.append(", ".join(f"{k} (p {format_p(v.get('p_holm'))})" for k, v in t.items() if v.get("significant"))
                       or "–")
        body.append(row)
    return _table(headers, body)


def _metrics_table(d: Mapping) -> str:
    a = d["alignment"]
    unc = d.get("uncertainty") or {}
    rows = []
    for key, value in a.items():
        if key in ("n", "topq"):
            continue
        lo, hi = interval_of(unc, key)
        se = as_finite((unc.get(key) or {}).get("se")) if isinstance(unc.get(key), Mapping) else None
        chance = chance_of(d, key) if key in PAIRING_METRICS else None
        rows.append([key, value, se, Html(escape(f"{format_value(lo)} to {format_value(hi)}")) if lo is not None else None,
                     chance, MEANINGS.get(key, "")])
    for key in ("sas_companion_i2t", "sas_companion_t2i"):
        u = unc.get(key)
        if isinstance(u, Mapping):
            rows.append([key, u.get("value"), u.get("se"),
                         Html(escape(f"{format_value(u.get('ci_low'))} to {format_value(u.get('ci_high'))}")), None,
                         "rotation-invariant companion of SAS (equals SAS when every kept eigenvalue is well "
                         "separated)"])
    ret = d.get("retrieval")
    runc = unc.get("retrieval") or {}
    if isinstance(ret, Mapping):
        for key, value in ret.items():
            if isinstance(value, (list, dict)):
                continue
            recall = str(key)[:5] in ("i2t_r", "t2i_r") and str(key)[5:].isdigit()
            lo, hi = interval_of(runc, str(key))
            shown = Html(escape(format_percent(value))) if recall else value
            ci = Html(escape(f"{format_percent(lo)} to {format_percent(hi)}")) if lo is not None else None
            chance = chance_of(d, str(key))
            chance_shown = (Html(escape(format_percent(chance, 3))) if recall and chance is not None else chance)
            rows.append([f"retrieval.{key}", shown, None, ci, chance_shown, meaning_of(str(key))])
    test = unc.get("imbalance_test") if isinstance(unc, Mapping) else None
    if isinstance(test, Mapping):
        rows.append(["imbalance_test.t", test.get("t"), None, None, None, "jackknife t statistic of the imbalance"])
        rows.append(["imbalance_test.df", test.get("df"), None, None, None, "degrees of freedom (blocks − 1)"])
        rows.append(["imbalance_test.p_value", Html(escape(format_p(test.get("p_value")))), None, None, None,
                     f"two-sided p-value, null hypothesis {test.get('null', 'SAS(I→T) == SAS(T→I)')}"])
    return _table(["metric", "value", "std. error", "95% interval", "by chance", "meaning"], rows,
                  caption="Recall in percent; rSum is the sum of the recalls in percent (0 to 600 with k = 1, 5, 10). "
                          "By chance: the metric with the pairing destroyed (a random re-pairing of the archive, or for "
                          "retrieval a random ranking).")


class _Report:
    """The parts of an audit dict that several sections read."""

    def __init__(self, d: Mapping, gap: Mapping | None, meta: Mapping, show_ids: bool, id_column_name: str,
                 extra_context: Mapping | None):
        self.d, self.gap, self.meta = d, gap, meta
        self.id_column_name, self.extra_context = id_column_name, extra_context
        self.a = d["alignment"]
        self.unc = d.get("uncertainty") or {}
        self.test = self.unc.get("imbalance_test") or {} if isinstance(self.unc, Mapping) else {}
        self.ret = d.get("retrieval") if isinstance(d.get("retrieval"), Mapping) else None
        self.groups = [g for g in d.get("groups") or [] if isinstance(g, Mapping)]
        self.drift = [g for g in d.get("drift") or [] if isinstance(g, Mapping)]
        self.mismatches = mismatch_rows(d, show_ids)
        self.q = float(d["topq"])
        self.findings = list(d.get("findings") or findings(d))


def _head(F: Figures, r: _Report) -> list[str]:
    meta, d, q = r.meta, r.d, r.q
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="Content-Security-Policy" content="{escape(_CSP)}">',
        f'<meta name="generator" content="fastsas {escape(meta["fastsas_version"])}">',
        f"<title>{escape(meta['title'])}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{escape(meta['title'])}</h1>",
        f'<p class="meta">{escape(format_value(d["n"]))} image–text pairs, embedding dimension {escape(d["dim"])}, '
        f"SAS with the top {escape(f'{q:g}')} of modes · created {escape(meta['created'])} · fastsas "
        f"{escape(meta['fastsas_version'])} · definitions {escape(meta['definitions_version'])}</p>",
    ]


def _findings(F: Figures, r: _Report) -> list[str]:
    out = ['<section id="findings"><h2>Findings</h2>',
           '<p class="note">What matters in this audit, most actionable first; every number is in the sections '
           'below and in report.json.</p><ol class="findings" id="findings-list">']
    for item in r.findings:
        out.append(f'<li class="{escape(item.get("severity", "info"))}" data-kind="{escape(item.get("kind", ""))}">'
                   f'{escape(item.get("text", ""))}</li>')
    out.append("</ol></section>")
    return out


def _summary(F: Figures, r: _Report) -> list[str]:
    a, unc, ret = r.a, r.unc, r.ret
    out = ['<section id="summary"><h2>Summary</h2><div class="cards">']
    for key, name in (("sas_i2t", "SAS(I→T)"), ("sas_t2i", "SAS(T→I)"), ("sas_imbalance", "imbalance")):
        chance = chance_of(r.d, key) if key != "sas_imbalance" else None
        note = _ci_text(*interval_of(unc, key))
        if chance is not None:
            note += f"; by chance {format_value(chance)}; 1 if perfectly mirrored"
        out.append(_card(name, format_value(a.get(key)), note))
    out.append(_card("imbalance test", f"p = {format_p(r.test.get('p_value'))}", "H0: SAS(I→T) = SAS(T→I)"))
    if ret is not None:
        runc = unc.get("retrieval") or {}
        for side, name in (("i2t", "image → text R@1"), ("t2i", "text → image R@1")):
            if f"{side}_r1" in ret:
                lo, hi = interval_of(runc, f"{side}_r1")
                note = f"95% interval {format_percent(lo)} to {format_percent(hi)}" if lo is not None else ""
                chance = chance_of(r.d, f"{side}_r1")
                if chance is not None:
                    note += f"; by chance {format_percent(chance, 3)}"
                out.append(_card(name, format_percent(ret[f"{side}_r1"]), note))
    test = r.d.get("mismatch_test") or {}
    if mismatches_assessed(r.d):
        value = format_value(test.get("flagged")) if test.get("has_power") else "no power"
        note = (f"at a {format_percent(test.get('fdr'), 0)} false discovery rate" if test.get("has_power")
                else f"a swap would be flagged with probability {format_percent(test.get('power'))}")
    else:
        value, note = "not assessed", ""
    out.append(_card("suspected mismatches", value, note))
    unit = r.d.get("unit") or {}
    if unit:
        out.append(_card("unit of uncertainty", str(unit.get("name")),
                         f"{format_value(unit.get('count'))} units, {format_value(unit.get('blocks'))} jackknife blocks"))
    out.append("</div>")
    verdict, significant = imbalance_verdict(r.d)
    out.append(f'<div class="verdict{"" if significant else " neutral"}"><p>{escape(verdict)}</p></div>')
    out.append("<p>How to read SAS: SAS(A→B) is between 0 and 1 and is high when B mirrors the main "
               "patterns of variation (principal variance) of A. SAS(I→T) asks how much of the images' "
               "structure the texts reflect; SAS(T→I) asks the reverse. "
               f"{escape(IMBALANCE_SIGN)} Intervals are 95% delete-a-block jackknife intervals over "
               f"{escape(unc.get('blocks', '?'))} blocks of {escape(unit.get('name', 'pair'))} units.</p>")
    worst = worst_groups(r.d)
    if worst:
        names = "; ".join(f"{g.get('group')} (SAS(I→T) {format_value(g['alignment'].get('sas_i2t'))}, "
                          f"SAS(T→I) {format_value(g['alignment'].get('sas_t2i'))}, n={format_value(g.get('n'))})"
                          for g in worst)
        out.append(f"<p>Subgroups with the lowest alignment: {escape(names)}.</p>")
    out.append("</section>")
    return out


def _spectrum(F: Figures, r: _Report) -> list[str]:
    out = ['<section id="spectrum"><h2>Spectral profile</h2>']
    for item in r.findings:
        if item.get("kind") == "conditioning":
            out.append(f'<div class="verdict" data-warning="conditioning"><p>{escape(item["text"])}</p></div>')
    fig = spectrum_figure(F, r.d)
    if fig is not None:
        out.append(_figure_html(F, fig, "spectrum", "Eigenspectra and per-mode correlations for both directions",
                                "Top: variance of each principal mode of the anchor modality (log scale); the "
                                f"shaded modes (top {r.q:g}) enter SAS. Bottom: |ρ|, how strongly the other modality "
                                "follows each mode (1 = fully mirrored); SAS is the variance-weighted mean of |ρ| "
                                "over the shaded modes."))
    fig = sas_q_figure(F, r.d)
    if fig is not None:
        out.append(_figure_html(F, fig, "sas_vs_q", "SAS versus q for both directions",
                                "SAS computed with a growing share q of the anchor's modes. Curves that fall as q "
                                "grows mean the minor modes are mirrored less well than the dominant ones."))
    out.append("</section>")
    return out


def _subgroups(F: Figures, r: _Report) -> list[str]:
    if not r.groups:
        return []
    out = ['<section id="subgroups"><h2>Subgroups</h2>']
    fig = groups_figure(F, r.d)
    if fig is not None:
        has_ci = any(g.get("uncertainty") for g in r.groups)
        out.append(_figure_html(F, fig, "subgroups", "SAS per subgroup",
                                "SAS in both directions within each subgroup; dashed lines: the whole archive. "
                                + ("Bars: 95% jackknife intervals." if has_ci else
                                   "Subgroup values are point estimates (no interval computed).")))
    out.append(_group_table(r.groups, "subgroup", r.d.get("contrasts") or []))
    out.append("<p class=\"note\">Recall in percent, with 95% block-jackknife intervals. A subgroup differs from "
               "the rest when a paired delete-a-block jackknife of the difference (same blocks on both sides) "
               "rejects no difference at 5% after Holm's correction over the subgroups.</p>")
    out.append("</section>")
    return out


def _retrieval(F: Figures, r: _Report) -> list[str]:
    fig = recall_figure(F, r.d)
    if fig is None and r.ret is None:
        return []
    out = ['<section id="retrieval"><h2>Retrieval</h2>']
    if fig is not None:
        out.append(_figure_html(F, fig, "recall", "Retrieval recall curves, both directions",
                                "R@k: the share of queries whose own match is among the k most similar candidates. "
                                "Black: the whole archive. Coloured solid: a subgroup's queries against the whole "
                                "gallery; dotted: within the subgroup only."))
    out.append("</section>")
    return out


def _neighbourhood(F: Figures, r: _Report) -> list[str]:
    table = neighbourhood_rows(r.d)
    if table is None:
        return []
    return ['<section id="neighbourhood"><h2>Neighbourhoods</h2>', f"<p>{escape(neighbourhood_caption(r.d))}</p>",
            _table(*table), "</section>"]


def _drift(F: Figures, r: _Report) -> list[str]:
    if not r.drift:
        return []
    out = ['<section id="drift"><h2>Drift over time</h2>']
    fig = drift_figure(F, r.d)
    if fig is not None:
        out.append(_figure_html(F, fig, "drift", "Alignment per period",
                                "SAS and CKA computed separately for each period."))
    out.append(_group_table(r.drift, "period"))
    for item in r.findings:
        if item.get("kind") == "drift":
            out.append(f"<p>{escape(item['text'])}</p>")
    out.append("</section>")
    return out


def _gap_sweep(F: Figures, r: _Report) -> list[str]:
    gap = r.gap
    if gap is None:
        return []
    out = ['<section id="gap"><h2>Modality-gap sweep</h2>']
    fig = gap_figure(F, gap)
    if fig is not None:
        out.append(_figure_html(F, fig, "gap_sweep", "Metrics versus the gap shift λ",
                                "Each metric after moving the image and text embeddings towards each other by a "
                                "fraction λ of the modality gap (λ = 0: unchanged, 1: centroids coincide)."))
    base = gap.get("baseline") or {}
    rows = [["input (rows as given)", base.get("centroid_euclidean"), base.get("sas_i2t"), base.get("sas_t2i"),
             base.get("cka"), None, None, None]] if base else []
    for p in gap.get("points") or []:
        al, ret, pr = p.get("alignment") or {}, p.get("retrieval") or {}, p.get("probe") or {}
        lam = as_finite(p.get("lam"))
        rows.append([f"{lam:g}" if lam is not None else None, p.get("gap_norm"), al.get("sas_i2t"), al.get("sas_t2i"),
                     al.get("cka"), ret.get("rsum"), pr.get("accuracy"), pr.get("auroc")])
    out.append(_table(["λ", "gap norm", "SAS(I→T)", "SAS(T→I)", "CKA", "rSum (0 to 600)", "probe accuracy",
                       "probe AUROC"], rows))
    if gap.get("lam0_rows"):
        out.append(f'<p class="note">{escape(gap["lam0_rows"])}; the first row is that baseline (its gap norm is the '
                   "centroid distance of the rows as given).</p>")
    if gap.get("verdict"):
        out.append(f"<p>{escape(gap['verdict'])}.</p>")
    elif gap.get("best_lam") is not None:
        out.append(f"<p>Best λ by probe accuracy: {escape(format(float(gap['best_lam']), 'g'))}.</p>")
    out.append("</section>")
    return out


def _mismatches(F: Figures, r: _Report) -> list[str]:
    mismatches = r.mismatches
    out = ['<section id="mismatches"><h2>Suspected mismatches</h2>', f"<p>{escape(mismatch_summary(r.d))}</p>"]
    if mismatches:
        with_ids = any("id" in m for m in mismatches)
        # Columns the user explicitly asked to include (e.g. report text), never by default.
        included = list(dict.fromkeys(k for m in mismatches for k in (m.get("columns") or {})))
        privacy = ("Ids are the archive's own key column; no report text or other columns are included."
                   if not included else
                   "Included on request: " + ", ".join(included) + ". Treat this file as patient data.")
        out.append("<p>Units whose own report stands no further above their non-matches than a swapped report "
                   "would: statistic (in standard deviations of the query's non-matches, both directions; genuine "
                   "units here sit near "
                   f"{escape(format_value((r.d.get('mismatch_test') or {}).get('genuine_median')))}), the "
                   "posterior probability that the unit is genuine (lfdr), its p-value under the genuine law, and "
                   "the ranks of its own match (I→T: the image's own report among all reports; T→I the reverse). "
                   + escape(privacy if with_ids or included else "Rows are positions in the input.") + "</p>")
        with_ranks = any("i2t_rank" in m for m in mismatches)
        headers = (["#", "row"] + ([r.id_column_name] if with_ids else []) + ["statistic", "lfdr", "p-value"]
                   + (["I→T rank", "T→I rank"] if with_ranks else []) + included)
        body = []
        for i, m in enumerate(mismatches, 1):
            extra = m.get("columns") or {}
            body.append([i, str(m.get("row"))] + ([str(m.get("id"))] if with_ids else [])
                        + [m.get("statistic"), m.get("lfdr"), Html(escape(format_p(m.get("p_value"))))]
                        + ([m.get("i2t_rank"), m.get("t2i_rank")] if with_ranks else [])
                        + [str(extra.get(c, "")) for c in included])
        out.append(_table(headers, body))
    out.append("</section>")
    return out


def _all_metrics(F: Figures, r: _Report) -> list[str]:
    return ['<section id="metrics"><h2>All metrics (whole archive)</h2>', _metrics_table(r.d), "</section>"]


def _provenance(F: Figures, r: _Report) -> list[str]:
    d, meta = r.d, r.meta
    prov = [["created (UTC)", meta["created"]], ["fastsas version", meta["fastsas_version"]],
            ["definitions version", meta["definitions_version"]],
            ["input fingerprint", Html(f"<code>{escape(meta['input_fingerprint'] or 'not given')}</code>")],
            ["pairs", d["n"]], ["dimension", d["dim"]], ["q (top fraction of modes)", d["topq"]]]
    unit = d.get("unit") or {}
    if unit:
        prov.append(["unit of uncertainty", f"{unit.get('name')} ({unit.get('by')}): {format_value(unit.get('count'))} "
                                            f"units, {format_value(unit.get('blocks'))} jackknife blocks"])
    for note in d.get("notes") or []:
        prov.append(["adapted to the archive", note])
    if isinstance(d.get("backend"), Mapping):  # which engine computed what (cpu, cuda, dask)
        prov.append(["computed on", ", ".join(f"{k}: {v}" for k, v in d["backend"].items())])
    for key, value in (r.extra_context or {}).items():
        prov.append([str(key), value if isinstance(value, str) else dumps(value, indent=None)])
    return ['<section id="provenance"><h2>Provenance</h2>', _table(["item", "value"], prov), "</section>"]


def _foot(F: Figures, r: _Report) -> list[str]:
    return ["<footer><p>Written by fastsas. This file is self-contained: it loads nothing from the network. "
            "It holds aggregate numbers and the ids of flagged pairs only.</p></footer>",
            "</main></body></html>"]


# The page, in order.
_SECTIONS = (_head, _findings, _summary, _spectrum, _subgroups, _retrieval, _neighbourhood, _drift, _gap_sweep, _mismatches, _all_metrics,
             _provenance, _foot)


def html_report(d: Mapping, gap: Mapping | None, meta: Mapping, show_ids: bool, id_column_name: str,
                extra_context: Mapping | None) -> str:
    """The page of an audit dict (``AuditResult.to_dict()``), with the gap sweep's dict
    (``GapSweep.to_dict()``) or None; `meta` holds title, created, fastsas_version,
    definitions_version and input_fingerprint. See :func:`fastsas.report.write_report`."""
    F = Figures()
    r = _Report(d, gap, meta, show_ids, id_column_name, extra_context)
    with F.style():
        parts = [line for section in _SECTIONS for line in section(F, r)]
    return "\n".join(parts) + "\n"
