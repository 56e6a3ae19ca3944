"""The separability section: ``separability.json`` (strict JSON), ``separability.md`` and a
self-contained ``separability.html`` with the 2-D views (PCA of all rows, UMAP/t-SNE of a
sample), written from the dicts of ``fs.separability(...).to_dict(points=True)`` per
modality and, optionally, the models x datasets table of ``separability_table``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from fastsas.io.atomic import write_atomic
from fastsas.io.strict_json import dumps
from fastsas.report.figures import Figures, figure_label
from fastsas.report.page import _CSP, _CSS, _figure_html, _table, escape
from fastsas.report.text import format_value
from fastsas.report.writer import parse_formats

__all__ = ["separability_figure", "separability_markdown", "separability_html", "write_separability"]

# Classes drawn in their own colour in a scatter (the rest in grey).
MAX_CLASSES_COLOURED = 10


def _references(r: Mapping) -> dict[str, float]:
    """What each measure reaches by ignoring the embedding: accuracy, the share of the
    commonest class (always answering it; a k-NN vote on labels unrelated to the rows does
    worse, e.g. sum of squared class shares for 1-NN); balanced accuracy 1 / C; AUROC 0.5;
    silhouettes 0."""
    counts = [int(c) for c in r["class_counts"]]
    present = [c for c in counts if c > 0]
    return {"accuracy": max(present) / sum(present), "balanced_accuracy": 1.0 / len(present), "auroc": 0.5,
            "silhouette": 0.0}


def _headline(r: Mapping) -> list[tuple[str, Any, Any, Any]]:
    """(measure, value, 95% interval or None, reference or None) rows of one result."""
    ref = _references(r)
    rows = [("Fisher ratio trace(S_w^-1 S_b)", r["fisher_ratio"], None, None),
            (f"LDA accuracy ({r['lda']['blocks']} held-out blocks)", r["lda"]["accuracy"], r["lda"]["interval"],
             ref["accuracy"]),
            ("LDA balanced accuracy", r["lda"]["balanced_accuracy"], r["lda"].get("balanced_interval"),
             ref["balanced_accuracy"]),
            ("silhouette (cosine)", r["silhouette"]["cosine"], r["silhouette"]["cosine_interval"], ref["silhouette"])]
    if "euclidean" in r["silhouette"]:
        rows.append((f"silhouette (Euclidean, {r['silhouette']['euclidean_rows']} rows)", r["silhouette"]["euclidean"],
                     r["silhouette"]["euclidean_interval"], ref["silhouette"]))
    for k, v in r["knn"].items():
        rows.append((f"{k}-NN accuracy (leave-one-out)", v["accuracy"], v["interval"], ref["accuracy"]))
    if "probe" in r:
        p = r["probe"]
        for key in ("accuracy", "balanced_accuracy", "auroc"):
            rows.append((f"probe {key.replace('_', ' ')} ({p['cv']}-fold)", p["scores"][key], p["intervals"][key],
                         ref[key]))
    return rows


def _reading(r: Mapping) -> str:
    """One paragraph on what the headline says against the no-signal references."""
    above, level, below = [], [], []
    for measure, _, iv, ref in _headline(r):
        if ref is None or not iv or any(v is None or v != v for v in iv):  # no reference; NaN (null) interval
            continue
        (above if iv[0] > ref else below if iv[1] < ref else level).append(measure)
    share = format_value(_references(r)["accuracy"])
    head = (f"Reference, what ignoring the embedding reaches: accuracy {share} by always answering the commonest "
            f"class; balanced accuracy 1/{len([c for c in r['class_counts'] if c > 0])}; AUROC 0.5; silhouette 0. ")
    if not above:
        return head + ("No measure's 95% interval lies above its reference: no evidence that the embedding separates "
                       "these classes better than ignoring it. Check that the labels belong to these rows, or try "
                       "another model.")
    text = head + f"Above their reference: {', '.join(above)}."
    if level or below:
        text += f" Not distinguishable from it or below: {', '.join(level + below)}."
    return text


def _interval(iv: Any) -> str:
    return "" if not iv else f"{format_value(iv[0])} to {format_value(iv[1])}"


def separability_figure(F: Figures, r: Mapping, title: str) -> Any | None:
    """PCA (and the sample's UMAP/t-SNE) scatter of one result's points, coloured by class."""
    points = r.get("points")
    if not points:
        return None
    panels = [("pca", f"PCA of all rows ({points['pca']['drawn']} drawn)")]
    if "view" in points:
        panels.append(("view", f"{points['view']['method'].upper()} of {len(points['view']['x'])} sampled rows"))
    fig, axes = F.new(420, 1, len(panels))
    classes = r["classes"]
    for ax, (key, label) in zip(axes[0], panels):
        p = points[key]
        codes = p["class"]
        for c, name in enumerate(classes):
            xs = [x for x, k in zip(p["x"], codes) if k == c]
            ys = [y for y, k in zip(p["y"], codes) if k == c]
            colour = F.colors[c % len(F.colors)] if c < MAX_CLASSES_COLOURED else "#b0b0b0"
            ax.scatter(xs, ys, s=6, alpha=0.6, color=colour,
                       label=figure_label(name) if c < MAX_CLASSES_COLOURED else None)
        ax.set_title(f"{figure_label(title)}: {label}")
        ax.legend(markerscale=2, loc="best")
    return fig


def _overlay_rows(o: Mapping) -> list[tuple[str, str, str]]:
    """(measure, value, what it says) rows of an ``fs.overlay_bias`` result."""
    sh = o["shift"]
    rows = [("cosine shift 1 - cos(clean, overlaid), mean", format_value(sh["mean"]),
             "how far the overlay moves an image's embedding (0: not at all)"),
            ("cosine shift, median / max", f"{format_value(sh['median'])} / {format_value(sh['max'])}", ""),
            ("mean cosine distance between class means", format_value(sh["between_class_cosine_distance"]),
             "the scale the shift is compared with"),
            ("shift as a share of the between-class distance", format_value(sh["share_of_between_class"]),
             "near 1 or above: the overlay moves images as far as a change of class")]
    rows += [(f"k-NN predictions flipped (k={k})", format_value(v), "share of rows whose leave-one-out class changes")
             for k, v in o.get("knn_flips", {}).items()]
    if "probe_flips" in o:
        rows.append(("probe predictions flipped", format_value(o["probe_flips"]),
                     "share of held-out rows the clean-trained probe classifies differently once overlaid"))
    rows += [(f"change of {m} (overlaid - clean)", format_value(v), "") for m, v in o["separability"]["change"].items()]
    if "pull" in o:
        p = o["pull"]
        rows += [("similarity to the overlay text, clean -> overlaid",
                  f"{format_value(p['clean_similarity'])} -> {format_value(p['overlaid_similarity'])}",
                  "a rise: the image embedding is pulled toward the embedded string"),
                 ("share of rows closer to the overlay text", format_value(p["share_rows_closer"]), "")]
    return rows


def separability_markdown(doc: Mapping) -> str:
    lines = [f"# fastsas separability ({doc.get('labels', 'labels')})", ""]
    for name, r in doc["modalities"].items():
        lines += [f"## {name}: {r['rows']:,} rows, {len(r['classes'])} classes", "",
                  "| measure | value | 95% interval | reference |", "|---|---|---|---|"]
        lines += [f"| {m} | {format_value(v)} | {_interval(iv)} | {format_value(ref) if ref is not None else ''} |"
                  for m, v, iv, ref in _headline(r)]
        lines += ["", _reading(r), ""]
        for g, gr in r.get("groups", {}).items():
            lines.append(f"- group {g}: Fisher {format_value(gr['fisher_ratio'])}, LDA {format_value(gr['lda']['accuracy'])}, "
                         f"silhouette (cosine) {format_value(gr['silhouette']['cosine'])}")
        lines.append("")
    if doc.get("overlay"):
        lines += [f"## Overlaid-text bias ({doc['overlay']['rows']:,} images)", "", "| measure | value | meaning |",
                  "|---|---|---|"]
        lines += [f"| {m} | {v} | {w} |" for m, v, w in _overlay_rows(doc["overlay"])]
        lines.append("")
    if doc.get("table"):
        lines += ["## Models x datasets", "", "| model | dataset | Fisher | LDA | k-NN | silhouette (cosine) |",
                  "|---|---|---|---|---|---|"]
        for t in doc["table"]:
            lines.append(f"| {t['model']} | {t['dataset']} | {format_value(t['fisher_ratio'])} | "
                         f"{format_value(t['lda_accuracy'])} ({_interval(t['lda_interval'])}) | "
                         f"{format_value(t.get('knn_accuracy'))} ({_interval(t.get('knn_interval'))}) | "
                         f"{format_value(t['silhouette_cosine'])} ({_interval(t['silhouette_cosine_interval'])}) |")
    return "\n".join(lines) + "\n"


def separability_html(doc: Mapping) -> str:
    F = Figures()
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
             f"<title>fastsas separability</title><style>{_CSS}</style></head><body><main>",
             f"<h1>Class separability of {escape(doc.get('labels', 'labels'))}</h1>",
             '<p class="meta">Definitions: docs/definitions.md, "Class separability". Intervals: 95%; over rows '
             "(normal approximation) for LDA, k-NN and silhouettes, a bootstrap over rows for the probe.</p>"]
    with F.style():
        for name, r in doc["modalities"].items():
            parts.append(f"<h2>{escape(name)}: {r['rows']:,} rows, {len(r['classes'])} classes</h2>")
            parts.append(_table(["measure", "value", "95% interval", "reference"],
                                [(m, format_value(v), _interval(iv), format_value(ref) if ref is not None else "")
                                 for m, v, iv, ref in _headline(r)]))
            parts.append(f"<p>{escape(_reading(r))}</p>")
            pw = r["pairwise"]
            parts.append(_table(["class", "rows", "spread", "nearest class", "Mahalanobis^2 to it"],
                                [(c, r["class_counts"][i], format_value(pw["spread"][i]),
                                  r["classes"][pw["nearest_class"][i]] if pw["nearest_class"][i] >= 0 else "",
                                  format_value(pw["nearest_mahalanobis_squared"][i]))
                                 for i, c in enumerate(r["classes"])], caption="Per class"))
            if r.get("groups"):
                parts.append(_table(["group", "rows", "Fisher", "LDA", "silhouette (cosine)"],
                                    [(g, gr["rows"], format_value(gr["fisher_ratio"]),
                                      format_value(gr["lda"]["accuracy"]), format_value(gr["silhouette"]["cosine"]))
                                     for g, gr in r["groups"].items()], caption="Per subgroup"))
            fig = separability_figure(F, r, name)
            if fig is not None:
                parts.append(_figure_html(F, fig, f"separability-{name}", f"2-D views of the {name}",
                                          "PCA from the moments (a stratified sample of the rows drawn) and, when "
                                          "asked, UMAP or t-SNE of a seeded stratified sample; colour = class."))
    if doc.get("overlay"):
        parts.append(f"<h2>Overlaid-text bias ({doc['overlay']['rows']:,} images)</h2>")
        parts.append(_table(["measure", "value", "meaning"], _overlay_rows(doc["overlay"]),
                            caption="The same images embedded without and with the overlaid text"))
    if doc.get("table"):
        parts.append("<h2>Models x datasets</h2>")
        parts.append(_table(["model", "dataset", "Fisher", "LDA (95%)", "k-NN (95%)", "silhouette cosine (95%)"],
                            [(t["model"], t["dataset"], format_value(t["fisher_ratio"]),
                              f"{format_value(t['lda_accuracy'])} ({_interval(t['lda_interval'])})",
                              f"{format_value(t.get('knn_accuracy'))} ({_interval(t.get('knn_interval'))})",
                              f"{format_value(t['silhouette_cosine'])} ({_interval(t['silhouette_cosine_interval'])})")
                             for t in doc["table"]]))
    parts.append("<footer><p>Written by fastsas. Self-contained: it loads nothing from the network.</p></footer>")
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def write_separability(doc: Mapping, out_dir: str | os.PathLike, formats: Any = ("html", "json", "md")) -> dict[str, Path]:
    """Write the separability section into `out_dir`.

    Parameters
    ----------
    doc : dict
        ``{"labels": column name, "modalities": {name: SeparabilityResult.to_dict(points=True)},
        "table": separability_table(...) (optional), "overlay": fs.overlay_bias(...) (optional)}``.
    out_dir : str or os.PathLike
        The folder (created if missing).
    formats : str or sequence of str
        Any of "html", "json", "md".

    Returns
    -------
    dict
        Format -> path written.

    Examples
    --------
    >>> import tempfile, numpy as np, fastsas as fs
    >>> from fastsas.report.separability import write_separability
    >>> rng = np.random.default_rng(0); y = np.repeat([0, 1], 30)
    >>> r = fs.separability(rng.normal(size=(60, 4)) + y[:, None], y, ks=(1,), probe=False)
    >>> sorted(write_separability({"modalities": {"images": r.to_dict(points=True)}}, tempfile.mkdtemp(), "json,md"))
    ['json', 'md']
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for fmt in parse_formats(formats):
        path = out / f"separability.{fmt}"
        text = {"json": lambda: dumps(doc, indent=2) + "\n", "md": lambda: separability_markdown(doc),
                "html": lambda: separability_html(doc)}[fmt]()
        write_atomic(path, text.encode())
        paths[fmt] = path
    return paths
