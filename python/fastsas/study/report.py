"""The study report: ``study.html`` (self-contained, figures inlined: the grids as heat maps,
metric-vs-rSum scatter plots per dataset, SAS-vs-q curves per domain), ``study.json`` (every
number of the :class:`~fastsas.study.StudyResult`, strict JSON) and ``study.md`` (the
findings and the key tables), written atomically with the audit report's building blocks
(:mod:`fastsas.report`). It reads the result's plain data and computes nothing."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fastsas.definitions import IMBALANCE_SIGN
from fastsas.io.atomic import write_atomic
from fastsas.io.strict_json import dumps
from fastsas.report.figures import Figures, figure_label
from fastsas.report.markdown import _md
from fastsas.report.page import _CSP, _CSS, Html, _figure_html, _table, escape
from fastsas.report.text import as_finite, format_p, format_value
from fastsas.report.writer import parse_formats

__all__ = ["STUDY_FILES", "findings", "write_study_report"]

STUDY_FILES = {"html": "study.html", "json": "study.json", "md": "study.md"}
# Metrics drawn in the metric-vs-rSum scatter plots (those of the study that exist).
SCATTER_METRICS = ("sas_i2t", "sas_t2i", "sas_sym", "delta_cos")
ALPHA = 0.05

_UNIT_WORDS = ("Three kinds of test, by what they count as independent: pooled (the SAS paper's tests): every "
               "model × dataset cell as one observation, although the cells of one model, and of one dataset, are "
               "not independent, so their p-values are too small; models (the datasets fixed): one value per "
               "model, or a permutation stratified by model: the conclusion holds for these datasets; datasets: "
               "per-dataset means permuted over datasets: the conclusion generalises to other datasets of the "
               "domain, but with two datasets per domain no p-value below 1/3 (two-sided) or 1/6 (one-sided) is "
               "possible. p-values are corrected across the metrics of each experiment (per kind of test).")


def _as_dict(result: Any) -> dict:
    if hasattr(result, "to_dict"):
        return result.to_dict()
    if isinstance(result, Mapping) and "experiments" in result:
        return dict(result)
    raise TypeError(f"result must be the StudyResult of fs.study (or its to_dict()), got {type(result).__name__}")


def _label(metric: str, d: Mapping) -> str:
    for row in d["experiments"]["alignment_profile"].get("rows") or []:
        if row["metric"] == metric:
            return row["label"]
    return {"rsum": "rSum", "rsum_i2t": "rSum I→T", "rsum_t2i": "rSum T→I"}.get(metric, metric)


def _p(node: Mapping | None, adjusted: bool = True) -> str:
    if not isinstance(node, Mapping):
        return "–"
    key = "p_adjusted" if adjusted and "p_adjusted" in node else "p_value"
    return format_p(node.get(key))


def _significant(node: Mapping | None) -> bool:
    p = as_finite((node or {}).get("p_adjusted", (node or {}).get("p_value")))
    return p is not None and p < ALPHA


# -- findings: the sentences both the HTML and the Markdown open with ------------------------------
def findings(d: Mapping) -> list[str]:
    """Plain sentences of what the study found, experiment by experiment (adjusted p < 0.05
    counts as found; the kind of test is named).

    Parameters
    ----------
    d : dict
        ``StudyResult.to_dict()``.

    Returns
    -------
    list of str

    Examples
    --------
    >>> import tempfile, fastsas as fs
    >>> from fastsas.study.report import findings
    >>> root = fs.study.write_synthetic_study(tempfile.mkdtemp(), models=3, pairs=120, dim=16)
    >>> r = fs.study(root / "study.toml", bootstrap=100, permutations=100, skip_slow=True)
    >>> any("imbalance" in line for line in findings(r.to_dict()))
    True
    """
    out = []
    e1 = d["experiments"]["alignment_profile"]
    a, b = e1["domains"].get("a"), e1["domains"].get("b")
    if a is not None:
        for tier, words in (("models", "stratified by model"), ("pooled", "pooled over cells, the paper's test")):
            sig = [r["label"] for r in e1["rows"] if _significant(r.get("tests", {}).get(tier))]
            out.append(f"Alignment profile ({words}): {len(sig)} of {len(e1['rows'])} metrics differ between "
                       f"{a} and {b}" + (f": {', '.join(sig)}." if sig else "."))
        min_p = [as_finite(r["tests"]["datasets"].get("min_p")) for r in e1["rows"] if r.get("tests")]
        min_p = [p for p in min_p if p is not None]
        if min_p:
            out.append(f"Over datasets (the test that generalises to new datasets) the smallest attainable p-value "
                       f"is {format_p(min(min_p))}" + (": no domain difference can be significant at 0.05 with "
                                                         "these datasets." if min(min_p) >= ALPHA else "."))
    e2 = d["experiments"]["imbalance_signature"]
    for row in e2["per_domain"]:
        t = row.get("models") or {}
        sign = "negative" if (as_finite(row.get("mean")) or 0) < 0 else "positive"
        verdict = "significantly " + sign if _significant(t) else "not significantly different from 0"
        out.append(f"Imbalance on {row['domain']} data: mean {format_value(row.get('mean'))} over "
                   f"{row.get('n')} cells, {verdict} (t test over models, adjusted p = {_p(t)}).")
    between = e2.get("between_domains") or {}
    if "hypothesis" in between:
        tiers = ", ".join(f"{k} p = {_p(between[k], adjusted=False)}" for k in ("models", "pooled", "datasets"))
        found = "supported" if (between.get("models") or {}).get("p_value", 1) < ALPHA else "not supported"
        out.append(f"One-sided hypothesis {between['hypothesis']}: {found} ({tiers}).")
    e3 = d["experiments"]["retrieval_predictivity"]
    tracking = [r for r in e3["correlations"] if r["target"] == "rsum" and _significant(r.get("stratified"))]
    tracking.sort(key=lambda r: -abs(as_finite(r["stratified"].get("rho")) or 0))
    if tracking:
        out.append("Metrics that track rSum across models within datasets (stratified permutation test): "
                   + ", ".join(f"{_label(r['metric'], d)} (ρ = {format_value(r['stratified']['rho'])})"
                               for r in tracking) + ".")
    else:
        out.append("No metric tracks rSum across models within datasets (stratified permutation test).")
    for row in e3["directional"]:
        s = row["stratified"]
        holds = "holds" if (as_finite(s.get("p_value")) or 1) < ALPHA else "is not supported"
        out.append(f"Directional claim {row['hypothesis']} {holds}: difference of |ρ| "
                   f"{format_value(s.get('delta'))} (95% interval {format_value(s.get('ci_low'))} to "
                   f"{format_value(s.get('ci_high'))}, paired bootstrap over models, p = {format_p(s.get('p_value'))}).")
    e4 = d["experiments"]["eigenspectrum_concentration"]
    for direction, name in (("i2t", "SAS(I→T)"), ("t2i", "SAS(T→I)")):
        cv = (e4.get(direction) or {}).get("cv_models")
        if cv:
            out.append(f"{name}: the q that separates the domains, chosen leaving one model out, is "
                       f"{', '.join(f'{q} ({n}×)' for q, n in cv['chosen_q'].items())}; held-out separation "
                       f"{format_value(cv.get('held_out_separation'))} (95% interval {format_value(cv.get('ci_low'))} "
                       f"to {format_value(cv.get('ci_high'))}), held-out AUC {format_value(cv.get('held_out_auc'))}; "
                       f"in sample the paper's rule picks q = {e4[direction]['in_sample']['q']:g}.")
    return out


# -- figures ------------------------------------------------------------------------------------------
def _grid_rows(grid: Mapping) -> tuple[list[str], np.ndarray, int]:
    """Rows of a grid dict with the reference models' rows appended (after a blank row)."""
    values = np.asarray(grid["values"], dtype=np.float64).reshape(len(grid["models"]), len(grid["datasets"]))
    ref = grid.get("references") or {}
    labels = list(grid["models"])
    if ref.get("models"):
        rv = np.asarray(ref["values"], dtype=np.float64).reshape(len(ref["models"]), len(grid["datasets"]))
        values = np.vstack([values, np.full((1, values.shape[1]), np.nan), rv])
        labels += [""] + [f"{m} (reference)" for m in ref["models"]]
    return labels, values, len(grid["models"])


def heatmap_figure(F: Figures, panels: Sequence[tuple[str, Mapping, bool]]) -> Any | None:
    """Heat maps of model x dataset grids, one panel each: (title, grid dict, diverging
    around 0); the reference models' rows below the others, after a gap; values printed."""
    panels = [p for p in panels if p[1].get("models") and p[1].get("datasets")]
    if not panels:
        return None
    labels, first, _ = _grid_rows(panels[0][1])
    fig, axes = F.new(max(260, 26 * len(labels) + 140), 1, len(panels))
    for ax, (title, grid, diverging) in zip(axes[0], panels):
        labels, values, _ = _grid_rows(grid)
        finite = values[np.isfinite(values)]
        if diverging:
            bound = float(np.max(np.abs(finite))) if finite.size else 1.0
            image = ax.imshow(np.ma.masked_invalid(values), cmap="RdBu_r", vmin=-bound or -1, vmax=bound or 1,
                              aspect="auto")
        else:
            image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto",
                              vmin=float(finite.min()) if finite.size else 0, vmax=float(finite.max()) if finite.size else 1)
        fig.colorbar(image, ax=ax, shrink=0.8)
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                if math.isfinite(values[i, j]):
                    ax.text(j, i, f"{values[i, j]:.3g}", ha="center", va="center", fontsize=7,
                            color="white" if not diverging else "black")
        ax.set_xticks(range(len(grid["datasets"])))
        ax.set_xticklabels([figure_label(x, 14) for x in grid["datasets"]], rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels([figure_label(x, 22) for x in labels], fontsize=8)
        ax.grid(False)
        ax.set_title(title)
    return fig


def scatter_figure(F: Figures, metric_label: str, x: Mapping, y: Mapping, rhos: Mapping) -> Any | None:
    """Metric (x) against rSum (y) across models, one panel per dataset; reference models as
    open markers; each panel's title gives Spearman's rho over the pooled models."""
    datasets = list(x.get("datasets") or [])
    if not datasets:
        return None
    fig, axes = F.new(300, 1, len(datasets))
    xv = np.asarray(x["values"], dtype=np.float64).reshape(len(x["models"]), len(datasets))
    yv = np.asarray(y["values"], dtype=np.float64).reshape(len(y["models"]), len(datasets))
    xr = np.asarray((x.get("references") or {}).get("values") or np.zeros((0, len(datasets))), dtype=np.float64)
    yr = np.asarray((y.get("references") or {}).get("values") or np.zeros((0, len(datasets))), dtype=np.float64)
    for j, (ax, d) in enumerate(zip(axes[0], datasets)):
        ax.plot(xv[:, j], yv[:, j], "o", color=F.colors[0], ms=5, label="models")
        if xr.size:
            ax.plot(xr.reshape(-1, len(datasets))[:, j], yr.reshape(-1, len(datasets))[:, j], "s",
                    mfc="none", color=F.colors[3], ms=6, label="reference")
        rho = as_finite((rhos.get(d) or {}).get("rho"))
        ax.set_title(f"{figure_label(d, 16)}: ρ = {format_value(rho)}", fontsize=9)
        ax.set_xlabel(metric_label, fontsize=8)
        if j == 0:
            ax.set_ylabel("rSum")
            ax.legend(fontsize=7, loc="best")
        ax.tick_params(labelsize=7)
    return fig


def curves_figure(F: Figures, e4: Mapping) -> Any | None:
    """SAS against q per domain (mean ± sd over cells), both directions; dashed: the q chosen
    leaving one model out (most often), dotted: the paper's in-sample choice."""
    qs = e4.get("qs") or []
    if not qs:
        return None
    fig, axes = F.new(380, 1, 3)
    for ax, (direction, name) in zip(axes[0], (("i2t", "SAS(I→T)"), ("t2i", "SAS(T→I)"), ("imbalance", "imbalance"))):
        block = e4.get(direction) or {}
        for i, (label, curve) in enumerate((block.get("curves") or {}).items()):
            mean = np.array([np.nan if v is None else v for v in curve["mean"]], dtype=np.float64)
            sd = np.array([np.nan if v is None else v for v in curve["sd"]], dtype=np.float64)
            ax.plot(qs, mean, marker="o", ms=3, color=F.colors[i], label=str(label))
            ax.fill_between(qs, mean - sd, mean + sd, color=F.colors[i], alpha=0.18, lw=0)
        cv = block.get("cv_models") or {}
        if cv.get("chosen_q"):
            q_cv = float(max(cv["chosen_q"].items(), key=lambda kv: kv[1])[0])
            ax.axvline(q_cv, color="#333", ls="--", lw=1, label=f"q by CV ({q_cv:g})")
        if block.get("in_sample"):
            ax.axvline(block["in_sample"]["q"], color="#777", ls=":", lw=1.2,
                       label=f"q in sample ({block['in_sample']['q']:g})")
        ax.set_xlabel("q (fraction of the anchor's modes)")
        ax.set_title(f"{name} versus q")
        ax.legend(fontsize=7.5)
    return fig


# -- HTML ------------------------------------------------------------------------------------------------
def _mean_sd(s: Mapping | None) -> str:
    if not isinstance(s, Mapping):
        return "–"
    return f"{format_value(s.get('mean'))} ± {format_value(s.get('sd'))} (n={s.get('n')})"


def _ci(node: Mapping, value_key: str = "rho") -> str:
    return (f"{format_value(node.get(value_key))} [{format_value(node.get('ci_low'))}, "
            f"{format_value(node.get('ci_high'))}]")


def _profile_table(e1: Mapping) -> str:
    a, b = e1["domains"].get("a"), e1["domains"].get("b")
    labels = e1["domains"]["labels"]
    headers = ["metric"] + [f"{lab} mean ± sd" for lab in labels]
    if a is not None:
        headers += [f"{a} − {b}", "pooled MWU p (adj.)", "stratified by model p (adj.)", "over datasets p (min p)"]
    rows = []
    for r in e1["rows"]:
        row = [r["label"]] + [_mean_sd(r["per_domain"].get(lab)) for lab in labels]
        if a is not None:
            t = r["tests"]
            row += [r.get("difference"), f"{_p(t['pooled'], False)} ({_p(t['pooled'])})",
                    f"{_p(t['models'], False)} ({_p(t['models'])})",
                    f"{_p(t['datasets'], False)} ({format_p(t['datasets'].get('min_p'))})"]
        rows.append(row)
    return _table(headers, rows)


def _imbalance_tables(e2: Mapping) -> list[str]:
    out = [_table(["domain", "cells", "mean ± sd", "t over cells (paper)", "p (adj.)", "t over models", "p (adj.)"],
                  [[r["domain"], r["n"], _mean_sd(r), r["pooled"].get("t"), _p(r["pooled"]), r["models"].get("t"),
                    _p(r["models"])] for r in e2["per_domain"]])]
    between = e2.get("between_domains") or {}
    if "hypothesis" in between:
        out.append(f"<p>One-sided between domains, H1: {escape(between['hypothesis'])}.</p>")
        out.append(_table(["test", "unit", "statistic", "p"], [
            ["Mann-Whitney U (paper)", "cell", between["pooled"].get("u"), _p(between["pooled"], False)],
            ["permutation stratified by model", "model", between["models"].get("statistic"),
             _p(between["models"], False)],
            ["exact permutation over datasets", "dataset", between["datasets"].get("statistic"),
             f"{_p(between['datasets'], False)} (min p {format_p(between['datasets'].get('min_p'))})"]]))
    out.append(_table(["dataset", "domain", "mean ± sd", "sign", "+ / −", "sign test p (adj.)",
                       "t over models p (adj.)", "cells whose interval excludes 0"],
                      [[r["dataset"], r.get("domain"), _mean_sd(r), r["sign"], f"{r['positive']} / {r['negative']}",
                        format_p(r.get("sign_test_p_adjusted")), _p(r.get("t_test")),
                        r.get("cells_interval_excludes_zero")] for r in e2["per_dataset"]]))
    return out


def _correlation_table(e3: Mapping, target: str, d: Mapping) -> str:
    rows = [r for r in e3["correlations"] if r["target"] == target]
    if not rows:
        return ""
    datasets = list(rows[0]["per_dataset"])
    headers = (["metric"] + [f"{ds} ρ [95%] p(adj.)" for ds in datasets]
               + ["pooled ρ [95%] p(adj.)", "within datasets ρ [95%] p(adj.)"])
    body = []
    for r in rows:
        body.append([_label(r["metric"], d)]
                    + [f"{_ci(r['per_dataset'][ds])} {_p(r['per_dataset'][ds])}" for ds in datasets]
                    + [f"{_ci(r['pooled'])} {_p(r['pooled'])}", f"{_ci(r['stratified'])} {_p(r['stratified'])}"])
    return _table(headers, body)


def _directional_table(e3: Mapping) -> str:
    body = []
    for r in e3["directional"]:
        for scope, node in [(ds, n) for ds, n in r["per_dataset"].items()] + [("within datasets", r["stratified"]),
                                                                            ("pooled", r["pooled"])]:
            body.append([r["hypothesis"], scope, node.get("rho_matched", "–"), node.get("rho_opposite", "–"),
                         _ci(node, "delta"), format_p(node.get("p_value"))])
    return _table(["hypothesis", "scope", "ρ matched", "ρ opposite", "Δ|ρ| [95%]", "p (one-sided)"], body)


def _cv_table(e4: Mapping) -> str:
    body = []
    for direction, name in (("i2t", "SAS(I→T)"), ("t2i", "SAS(T→I)")):
        block = e4.get(direction) or {}
        for kind, words in (("cv_models", "leave one model out"), ("cv_datasets", "leave one dataset per domain out")):
            cv = block.get(kind)
            if not cv:
                continue
            body.append([name, words, ", ".join(f"{q} ({n}×)" for q, n in (cv.get("chosen_q") or {}).items()) or "–",
                         _ci(cv, "held_out_separation"), format_p(cv.get("p_value")), cv.get("held_out_auc"),
                         (block.get("in_sample") or {}).get("q")])
    return _table(["direction", "cross-validation", "chosen q (folds)", "held-out separation [95%]",
                   "p (one-sided, over folds)", "held-out AUC", "q in sample (paper)"], body)


def _comparison_table(comparisons: Sequence[Mapping], metrics: Sequence[str], d: Mapping) -> str:
    keys = [m for m in ("sas_i2t", "sas_t2i", "sas_sym", "cka", "delta_cos") if m in metrics][:4]
    body = []
    for c in comparisons:
        if c.get("status") != "ok":
            body.append([f"{c['model_a']} − {c['model_b']}", c["dataset"], c.get("status")] + [""] * len(keys))
            continue
        body.append([f"{c['model_a']} − {c['model_b']}", c["dataset"], f"ok ({c['blocks']} blocks)"]
                    + [f"{_ci(c['metrics'][k], 'value')} p={_p(c['metrics'][k])}" if k in c["metrics"] else "–"
                       for k in keys])
    return _table(["models", "dataset", "status"] + [f"{_label(k, d)} difference [95%]" for k in keys], body)


def _cells_table(d: Mapping) -> str:
    body = []
    for c in d["cells"]:
        if c.get("status") != "ok":
            body.append([c["model"], c["dataset"], c.get("kind"), c.get("status")] + [""] * 6)
            continue
        jm = (c.get("jackknife") or {}).get("metrics") or {}
        body.append([c["model"], c["dataset"], c.get("kind"), "cached" if c.get("cached") else "computed",
                     c.get("n_pairs"), c.get("n_texts")]
                    + [_ci({**(jm.get(k) or {}), "value": c["alignment"].get(k)}, "value")
                       for k in ("sas_i2t", "sas_t2i", "sas_imbalance")]
                    + [(c.get("retrieval") or {}).get("rsum")])
    return _table(["model", "dataset", "input", "status", "pairs", "texts", "SAS(I→T) [95%]", "SAS(T→I) [95%]",
                   "imbalance [95%]", "rSum"], body)


def _html(d: Mapping) -> str:
    F = Figures()
    e = d["experiments"]
    e1, e2, e3, e4 = (e["alignment_profile"], e["imbalance_signature"], e["retrieval_predictivity"],
                      e["eigenspectrum_concentration"])
    cat, prov = d["catalog"], d["provenance"]
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f'<meta http-equiv="Content-Security-Policy" content="{escape(_CSP)}">',
             f'<meta name="generator" content="fastsas {escape(d["fastsas_version"])}">',
             f"<title>{escape(d['title'])}</title><style>{_CSS}</style></head><body><main>",
             f"<h1>{escape(d['title'])}</h1>",
             f'<p class="meta">{len(cat["models"])} models ({len(cat["references"])} reference) × '
             f'{len(cat["datasets"])} datasets; {prov["computed"]} cells computed, {prov["cached"]} from the cache, '
             f'{prov["failed"]} failed, {len(prov["missing"])} missing · created {escape(prov["created"])} · fastsas '
             f'{escape(d["fastsas_version"])} · definitions {escape(d["definitions_version"])}</p>']
    with F.style():
        parts.append('<section id="summary"><h2>Findings</h2><ul>'
                     + "".join(f"<li>{escape(s)}</li>" for s in findings(d)) + "</ul>")
        domains = ", ".join(f"{ds}: {cat['domains'].get(ds) or 'no domain'}" for ds in cat["datasets"])
        parts.append(f"<p>Datasets and domains: {escape(domains)}. Reference models, shown apart and left out of "
                     f"every pooled statistic: {escape(', '.join(cat['references']) or 'none')}.</p>")
        parts.append(f"<p>Sign conventions. SAS(A→B) is high when B mirrors the principal variance of A. "
                     f"{escape(IMBALANCE_SIGN)} Domain differences are the first domain minus the second "
                     f"({escape(str(e1['domains'].get('a')))} − {escape(str(e1['domains'].get('b')))}); model "
                     f"comparisons are model a minus model b. {escape(_UNIT_WORDS)}</p></section>")

        parts.append('<section id="profile"><h2>1. Alignment profile</h2>')
        fig = heatmap_figure(F, [("SAS(sym) per model × dataset", e1["grid"], False)])
        if fig is not None:
            parts.append(_figure_html(F, fig, "profile_grid", "SAS(sym) grid",
                                      "SAS(sym) of every cell; reference models below the gap."))
        parts.append(_profile_table(e1))
        means = e1["dataset_means"]
        parts.append(_table(["metric"] + means["datasets"],
                            [[_label(r["metric"], d)] + r["means"] for r in means["rows"]],
                            caption="Per-dataset means over the pooled models"))
        parts.append("</section>")

        parts.append('<section id="imbalance"><h2>2. Imbalance signature</h2>')
        g = e2["grids"]
        fig = heatmap_figure(F, [("SAS(I→T)", g["sas_i2t"], False), ("SAS(T→I)", g["sas_t2i"], False),
                                 ("imbalance SAS(I→T) − SAS(T→I)", g["sas_imbalance"], True)])
        if fig is not None:
            parts.append(_figure_html(F, fig, "imbalance_grids", "SAS both ways and the imbalance",
                                      "Blue: negative imbalance, red: positive. " + IMBALANCE_SIGN))
        parts += _imbalance_tables(e2)
        parts.append("</section>")

        parts.append('<section id="retrieval"><h2>3. Retrieval predictivity</h2>')
        g = e3["grids"]
        fig = heatmap_figure(F, [("rSum", g["rsum"], False), ("rSum I→T", g["rsum_i2t"], False),
                                 ("rSum T→I", g["rsum_t2i"], False)])
        if fig is not None:
            parts.append(_figure_html(F, fig, "rsum_grids", "rSum grids",
                                      "rSum = 100 × the sum of R@k over the cutoffs, per direction and in total."))
        grids_by_metric = {e1["grid"]["metric"]: e1["grid"], **e2["grids"]}
        for r in e3["correlations"]:
            if r["target"] == "rsum" and r["metric"] in SCATTER_METRICS:
                x = grids_by_metric.get(r["metric"]) or _grid_of(d, r["metric"])
                fig = scatter_figure(F, _label(r["metric"], d), x, g["rsum"], r["per_dataset"])
                if fig is not None:
                    parts.append(_figure_html(F, fig, f"scatter_{r['metric']}", f"{r['metric']} against rSum",
                                              f"{_label(r['metric'], d)} against rSum across models, per dataset."))
        for target in e3["targets"]:
            parts.append(f"<h3>Spearman ρ with {escape(_label(target, d))}</h3>")
            parts.append(_correlation_table(e3, target, d))
        parts.append("<h3>Directional claim</h3>")
        parts.append(_directional_table(e3))
        parts.append("</section>")

        parts.append('<section id="spectrum"><h2>4. Eigenspectrum concentration</h2>')
        fig = curves_figure(F, e4)
        if fig is not None:
            parts.append(_figure_html(F, fig, "sas_vs_q", "SAS versus q per domain",
                                      "Mean ± sd over the cells of each domain."))
        parts.append(_cv_table(e4))
        parts.append("</section>")

        if d.get("comparisons"):
            parts.append('<section id="comparisons"><h2>Model comparisons</h2>'
                         "<p>Paired delete-a-block jackknife of the difference over the same blocks of items; "
                         "p-values corrected across the metrics of each pair and dataset.</p>"
                         + _comparison_table(d["comparisons"], d["metrics"], d) + "</section>")
        parts.append('<section id="cells"><h2>Cells</h2>' + _cells_table(d) + "</section>")
        settings = [[k, v if isinstance(v, (str, int, float)) else dumps(v, indent=None)]
                    for k, v in d["settings"].items()]
        settings += [["cache", prov.get("cache") or "none"], ["cells ran", prov.get("cells_ran")],
                     ["seconds", dumps({k: round(v, 2) for k, v in prov["seconds"].items()}, indent=None)],
                     ["missing cells", dumps(prov["missing"], indent=None)],
                     ["failed cells", dumps(prov["failures"], indent=None)]]
        parts.append('<section id="provenance"><h2>Provenance</h2>' + _table(["item", "value"], settings)
                     + "</section>")
    parts.append("<footer><p>Written by fastsas. Self-contained: it loads nothing from the network, and holds "
                 "aggregate numbers only.</p></footer></main></body></html>")
    return "\n".join(parts) + "\n"


def _grid_of(d: Mapping, metric: str) -> dict:
    """A metric's grid rebuilt from the cells (for metrics without a grid of their own)."""
    cat = d["catalog"]
    pooled = [m for m in cat["models"] if m not in cat["references"]]
    cells = {(c["model"], c["dataset"]): c for c in d["cells"] if c.get("status") == "ok"}

    def value(m: str, ds: str) -> float:
        v = ((cells.get((m, ds)) or {}).get("alignment") or {}).get(metric)
        return math.nan if v is None else float(v)

    return {"metric": metric, "models": pooled, "datasets": cat["datasets"],
            "values": [[value(m, ds) for ds in cat["datasets"]] for m in pooled],
            "references": {"models": cat["references"],
                           "values": [[value(m, ds) for ds in cat["datasets"]] for m in cat["references"]]}}


# -- Markdown ----------------------------------------------------------------------------------------------
def _markdown(d: Mapping) -> str:
    e = d["experiments"]
    e1, e2, e3 = e["alignment_profile"], e["imbalance_signature"], e["retrieval_predictivity"]
    cat, prov = d["catalog"], d["provenance"]
    lines = [f"# {_md(d['title'])}", "",
             f"{len(cat['models'])} models ({len(cat['references'])} reference) × {len(cat['datasets'])} datasets; "
             f"{prov['computed']} cells computed, {prov['cached']} cached, {prov['failed']} failed, "
             f"{len(prov['missing'])} missing. Created {prov['created']}; fastsas {d['fastsas_version']}, "
             f"definitions {d['definitions_version']}.", "", "## Findings", ""]
    lines += [f"- {_md(s)}" for s in findings(d)]
    lines += ["", IMBALANCE_SIGN, "", _UNIT_WORDS, "", "## Alignment profile", ""]
    labels = e1["domains"]["labels"]
    a = e1["domains"].get("a")
    lines.append("| metric | " + " | ".join(f"{_md(lab)}" for lab in labels)
                 + (" | pooled p (adj.) | by model p (adj.) | datasets p |" if a else " |"))
    lines.append("|---" * (1 + len(labels) + (3 if a else 0)) + "|")
    for r in e1["rows"]:
        cells = [_mean_sd(r["per_domain"].get(lab)) for lab in labels]
        if a:
            t = r["tests"]
            cells += [_p(t["pooled"]), _p(t["models"]), _p(t["datasets"], False)]
        lines.append(f"| {_md(r['label'])} | " + " | ".join(cells) + " |")
    lines += ["", "## Imbalance signature", "", "| dataset | domain | mean | sign | sign test p (adj.) |",
              "|---|---|---|---|---|"]
    lines += [f"| {_md(r['dataset'])} | {_md(r.get('domain'))} | {format_value(r.get('mean'))} | {r['sign']} | "
              f"{format_p(r.get('sign_test_p_adjusted'))} |" for r in e2["per_dataset"]]
    lines += ["", "## Retrieval predictivity (ρ with rSum)", "",
              "| metric | within datasets ρ [95%] | p (adj.) | pooled ρ | p (adj.) |", "|---|---|---|---|---|"]
    for r in e3["correlations"]:
        if r["target"] == "rsum":
            lines.append(f"| {_md(_label(r['metric'], d))} | {_ci(r['stratified'])} | {_p(r['stratified'])} | "
                         f"{format_value(r['pooled'].get('rho'))} | {_p(r['pooled'])} |")
    if d.get("comparisons"):
        lines += ["", f"Model comparisons: {len(d['comparisons'])} (pair, dataset) rows in study.html and study.json."]
    return "\n".join(lines).rstrip() + "\n"


def write_study_report(result: Any, out_dir: str | os.PathLike, *,
                       formats: Sequence[str] | str = ("html", "json", "md")) -> dict[str, Path]:
    """Write the report of a study into `out_dir` (created if missing), each file atomically.

    Parameters
    ----------
    result : StudyResult or dict
        :func:`fastsas.study` 's result (or its ``to_dict()``).
    out_dir : str or os.PathLike
        The folder.
    formats : sequence of str or str, default ("html", "json", "md")
        ``html`` (``study.html``), ``json`` (``study.json``, every number, strict JSON),
        ``md`` (``study.md``).

    Returns
    -------
    dict
        ``{format: path}``.

    Raises
    ------
    TypeError
        When `result` is not a study result.
    ValueError
        For an unknown format, or `out_dir` an existing file.

    Examples
    --------
    >>> import tempfile, fastsas as fs
    >>> root = fs.study.write_synthetic_study(tempfile.mkdtemp(), models=3, pairs=120, dim=16)
    >>> r = fs.study(root / "study.toml", bootstrap=100, permutations=100, skip_slow=True)
    >>> sorted(fs.study.write_study_report(r, root / "report", formats="json,md"))
    ['json', 'md']
    """
    d = _as_dict(result)
    kinds = parse_formats(formats)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {str(out)!r} exists and is not a directory; give a directory for the report")
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind in kinds:
        path = out / STUDY_FILES[kind]
        text = dumps(d, indent=1) if kind == "json" else _markdown(d) if kind == "md" else _html(d)
        write_atomic(path, text)
        paths[kind] = path
    return paths
