"""The report of ``fastsas compare`` (:func:`fastsas.audit.compare.compare`'s dict):
``compare.html`` (self-contained, like the audit page), ``compare.json`` and ``compare.md``,
the same content in each: per archive every compared metric with its 95% interval, and when
the archives hold the same pairs the paired differences from the first archive."""
from __future__ import annotations

import datetime as _dt
from typing import Any, Mapping, Sequence

from fastsas._version import __version__
from fastsas.definitions import DEFINITIONS_VERSION
from fastsas.report.page import _CSP, _CSS, Html, _table, escape
from fastsas.report.text import as_finite, format_p, format_percent, format_value

__all__ = ["LABELS", "compare_findings", "compare_html", "compare_markdown"]

LABELS = {"sas_i2t": "SAS(I→T)", "sas_t2i": "SAS(T→I)", "sas_imbalance": "imbalance", "cka": "CKA",
          "sas_companion_i2t": "companion I→T", "sas_companion_t2i": "companion T→I",
          "i2t_r1": "image→text R@1", "t2i_r1": "text→image R@1", "svcca": "SVCCA", "delta_cos": "Δcos",
          "rmg": "RMG", "matched_cosine": "matched cosine", "rsum": "rSum (0 to 600)"}
_RECALL = ("i2t_r1", "t2i_r1")


def _value(key: str, v: Any) -> str:
    return format_percent(v) if key in _RECALL else format_value(v)


def _with_ci(key: str, m: Mapping | None) -> str:
    if not m:
        return "–"
    lo, hi = as_finite(m.get("ci_low")), as_finite(m.get("ci_high"))
    ci = f" [{_value(key, lo)}, {_value(key, hi)}]" if lo is not None and hi is not None else ""
    return _value(key, m.get("value")) + ci


def _diff(key: str, m: Mapping | None) -> str:
    if not m:
        return "–"
    scale, unit, digits = (100.0, " points", 2) if key in _RECALL else (1.0, "", 4)
    return (f"{scale * m['difference']:+.{digits}f}{unit} [{scale * m['ci_low']:+.{digits}f}, "
            f"{scale * m['ci_high']:+.{digits}f}], Holm p {format_p(m.get('p_holm'))}")


def compare_findings(c: Mapping) -> list[str]:
    """The comparison in sentences: which archive aligns best, and which differences are
    beyond their paired intervals (Holm-corrected)."""
    out = []
    archives = c.get("archives") or []
    for key in ("sas_i2t", "sas_t2i", "cka", "i2t_r1"):
        have = [(a["name"], a["metrics"][key]["value"]) for a in archives if key in (a.get("metrics") or {})]
        if len(have) >= 2:
            best = max(have, key=lambda t: t[1])
            out.append(f"Highest {LABELS[key]}: {best[0]} ({_value(key, best[1])}).")
    if not (c.get("paired") or {}).get("done"):
        out.append("Differences are not paired: " + str((c.get("paired") or {}).get("why", "")) + "; compare the "
                   "per-archive intervals instead.")
        return out
    for row in c.get("differences") or []:
        beyond = [k for k, m in (row.get("metrics") or {}).items() if (as_finite(m.get("p_holm")) or 1.0) < 0.05]
        if beyond:
            out.append(f"{row['name']} against {row['reference']} (same pairs, paired intervals): "
                       + "; ".join(f"{LABELS[k]} {_diff(k, row['metrics'][k])}" for k in beyond) + ".")
        else:
            out.append(f"{row['name']} and {row['reference']} do not differ beyond their paired intervals on any "
                       "compared metric.")
    return out


def _meta() -> dict:
    return {"created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "fastsas_version": __version__, "definitions_version": DEFINITIONS_VERSION}


def _rows(c: Mapping) -> tuple[list[str], list[list[str]]]:
    archives = c.get("archives") or []
    headers = ["metric"] + [a["name"] for a in archives]
    keys = [k for k in LABELS if any(k in (a.get("metrics") or {}) or k in (a.get("values") or {}) for a in archives)]
    rows = []
    for key in keys:
        cells = []
        for a in archives:
            if key in (a.get("metrics") or {}):
                cells.append(_with_ci(key, a["metrics"][key]))
            else:
                v = (a.get("values") or {}).get(key)
                cells.append("–" if v is None else (f"{v:.1f}" if key == "rsum" else format_value(v)))
        rows.append([LABELS[key]] + cells)
    return headers, rows


def _diff_rows(c: Mapping) -> tuple[list[str], list[list[str]]]:
    diffs = c.get("differences") or []
    headers = ["metric"] + [f"{d['name']} − {d['reference']}" for d in diffs]
    keys = [k for k in LABELS if any(k in d["metrics"] for d in diffs)]
    return headers, [[LABELS[k]] + [_diff(k, d["metrics"].get(k)) for d in diffs] for k in keys]


def compare_html(c: Mapping, title: str = "fastsas compare") -> str:
    """The comparison as one self-contained HTML page (no script, no network)."""
    meta = _meta()
    headers, rows = _rows(c)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f'<meta http-equiv="Content-Security-Policy" content="{escape(_CSP)}">',
             f"<title>{escape(title)}</title><style>{_CSS}</style></head><body><main>",
             f"<h1>{escape(title)}</h1>",
             f'<p class="meta">{len(c.get("archives") or [])} archives · created {escape(meta["created"])} · fastsas '
             f'{escape(meta["fastsas_version"])} · definitions {escape(meta["definitions_version"])}</p>',
             '<section id="findings"><h2>Findings</h2><ol class="findings" id="findings-list">']
    parts += [f"<li>{escape(t)}</li>" for t in compare_findings(c)]
    parts += ["</ol></section>", '<section id="archives"><h2>Archives</h2>',
              _table(headers, [[Html(escape(x)) for x in r] for r in rows],
                     caption="95% delete-a-block jackknife intervals per archive; recall in percent."),
              "</section>"]
    if (c.get("paired") or {}).get("done"):
        dh, dr = _diff_rows(c)
        parts += ['<section id="differences"><h2>Paired differences</h2>',
                  f"<p>{escape(c.get('method', ''))}; {escape(format_value((c['paired']).get('blocks')))} blocks of "
                  f"{escape(str((c['paired']).get('unit')))} units; recall differences in percentage points.</p>",
                  _table(dh, [[Html(escape(x)) for x in r] for r in dr]), "</section>"]
    units = [[a["name"], format_value(a.get("n")), str((a.get("unit") or {}).get("name")),
              format_value((a.get("unit") or {}).get("count"))] for a in c.get("archives") or []]
    parts += ['<section id="provenance"><h2>Provenance</h2>',
              _table(["archive", "pairs", "unit", "units"], [[Html(escape(x)) for x in r] for r in units]),
              "</section></main></body></html>"]
    return "\n".join(parts) + "\n"


def compare_markdown(c: Mapping, title: str = "fastsas compare") -> str:
    """The comparison in Markdown: the same findings and tables as the HTML page."""
    def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
        return (["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
                + ["| " + " | ".join(r) + " |" for r in rows] + [""])

    lines = [f"# {title}", ""] + [f"{i}. {t}" for i, t in enumerate(compare_findings(c), 1)] + [""]
    lines += ["## Archives", ""] + table(*_rows(c))
    if (c.get("paired") or {}).get("done"):
        lines += ["## Paired differences", "", str(c.get("method", "")) + ".", ""] + table(*_diff_rows(c))
    return "\n".join(lines).rstrip() + "\n"
