"""The report a person reads: one self-contained HTML page, ``report.json`` and a short
Markdown summary, written from an :class:`~fastsas.audit.AuditResult` (and optionally a
:class:`~fastsas.gap.GapSweep`).

- ``report.html``: opens with no network. Figures are PNGs rendered by matplotlib (Agg,
  object API: no pyplot state, no GUI) and inlined as ``data:`` URIs; CSS is inline; there
  is no script at all, and a Content-Security-Policy meta tag forbids loading anything but
  inline images and styles. Every piece of text that comes from the data or the caller
  (group labels, ids, titles, context keys and values) goes through :func:`html.escape`.
- ``report.json``: every number of ``audit.to_dict()`` at the top level (same keys), plus
  ``gap_sweep``, ``fastsas_version``, ``definitions_version``, ``input_fingerprint``,
  ``created`` (UTC, ISO 8601), ``title``, ``id_column`` and ``context``. Strict JSON:
  NaN and infinities are written as ``null``.
- ``report.md``: the key numbers, the worst subgroups and the number of suspected
  mismatches (no ids).

Privacy (DESIGN.md): a report holds aggregates plus the keys of flagged rows (the
archive's own id column, chosen by the user to be pseudonymous). The writer never sees
report text or other metadata columns; ``show_ids=False`` drops the ids from every file.

:func:`fingerprint_arrays` is the SHA-256 of a pair of arrays (shape, dtype, bytes),
streamed in chunks so memory-mapped archives are never loaded whole.
"""
from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import html
import io
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = ["FORMATS", "fingerprint_arrays", "write_report"]

FORMATS = ("html", "json", "md")
FILE_NAMES = {"html": "report.html", "json": "report.json", "md": "report.md"}

# Every figure is FIG_WIDTH_PX wide (10 in at 100 dpi) and shown at its natural size.
FIG_DPI = 100
FIG_WIDTH_IN = 10.0
FIG_WIDTH_PX = int(FIG_WIDTH_IN * FIG_DPI)
# The 1-px frame drawn around every figure in the HTML; a colour used nowhere else on the
# page, so a screenshot test can find the figures.
FIGURE_FRAME = "#8a94a6"
FIGURE_FRAME_RGB = (0x8A, 0x94, 0xA6)
# Subgroups drawn in the per-subgroup figure / the recall-curve figure (the lowest SAS first
# when there are more); every subgroup is in the tables.
MAX_GROUPS_PLOTTED = 40
MAX_GROUP_CURVES = 10
_LABEL_CHARS = 32

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

# Short meanings of the metrics, for the tables (plain text).
_MEANING = {
    "sas_i2t": "SAS(I→T): share of the images' principal variance that the texts mirror",
    "sas_t2i": "SAS(T→I): share of the texts' principal variance that the images mirror",
    "sas_sym": "mean of the two SAS directions",
    "sas_imbalance": "SAS(I→T) − SAS(T→I); negative: images carry structure the texts lack",
    "cka": "linear CKA: overall similarity of the two embedding geometries (0 to 1)",
    "coral": "CORAL: distance between the two covariance matrices (0 = identical)",
    "svcca": "SVCCA: mean canonical correlation of the top-10 principal subspaces",
    "delta_cos": "matched minus unmatched mean cosine similarity",
    "rmg": "relative modality gap (symmetric variant)",
    "rmg_paper": "relative modality gap as the SAS paper's code computes it",
    "centroid_euclidean": "distance between the image and text centroids",
    "centroid_cosine": "1 − cosine between the image and text centroids",
    "cone_images": "mean pairwise cosine among images (cone effect)",
    "cone_texts": "mean pairwise cosine among texts (cone effect)",
    "matched_cosine": "mean cosine of each image with its own text",
    "rsum": "100 × sum of R@1, R@5, R@10 over both directions",
}


# ------------------------------------------------------------------------------- fingerprint
def fingerprint_arrays(images: Any, texts: Any, chunk_rows: int = 65536) -> str:
    """SHA-256 of a pair of arrays: each array's name, shape and dtype, then its bytes
    (C order, little-endian), read ``chunk_rows`` rows at a time, so a memory-mapped
    archive is streamed, never loaded whole. The result does not depend on ``chunk_rows``,
    the memory layout or the byte order of the input, only on shapes, dtypes and values.

    Returns ``"sha256:<64 hex digits>"``.

    >>> import numpy as np
    >>> x = np.zeros((4, 3), np.float32)
    >>> fingerprint_arrays(x, x) == fingerprint_arrays(x, x.copy(), chunk_rows=1)
    True
    """
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    h = hashlib.sha256(b"fastsas-fingerprint-v1\n")
    for name, value in (("images", images), ("texts", texts)):
        try:
            arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        except Exception as exc:  # noqa: BLE001 - name the argument whatever went wrong
            raise TypeError(f"{name} must be an array (NumPy array or memmap), got {type(value).__name__}: {exc}") \
                from None
        if arr.dtype.hasobject:
            raise TypeError(f"{name} has dtype object; give a numeric array")
        if arr.ndim == 0:
            arr = arr.reshape(1)
        canonical = arr.dtype.newbyteorder("<") if arr.dtype.byteorder in (">", "<", "=") else arr.dtype
        h.update(f"{name} shape={tuple(int(s) for s in arr.shape)} dtype={canonical.str}\n".encode())
        rows = arr.shape[0]
        for start in range(0, rows, int(chunk_rows)):
            block = np.ascontiguousarray(arr[start:start + int(chunk_rows)], dtype=canonical)
            h.update(memoryview(block).cast("B"))
    return "sha256:" + h.hexdigest()


# ------------------------------------------------------------------------------- plain data
def _jsonable(value: Any) -> Any:
    """Strict-JSON copy: NumPy scalars/arrays -> Python numbers/lists, NaN/Inf -> None,
    tuples -> lists, keys -> str; anything else unknown -> str."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_dict"):
        return _jsonable(value.to_dict())
    return str(value)


def _num(value: Any) -> float | None:
    """A finite float, or None."""
    if value is None or isinstance(value, (bool, str)):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _fmt(value: Any) -> str:
    """Plain text for a table cell (not yet escaped)."""
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "n/a"
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        if v == 0.0:
            return "0"
        if abs(v) >= 1e4 or abs(v) < 1e-8:
            return f"{v:.3e}"
        if abs(v) < 1e-3:  # four significant digits, still positional: -0.0005123
            return np.format_float_positional(v, precision=4, unique=False, fractional=False, trim="-")
        return f"{v:.4f}"
    return str(value)


def _fmt_p(p: Any) -> str:
    v = _num(p)
    if v is None:
        return "n/a"
    if v == 0.0:
        return "< 1e-300"
    if v < 0.001:
        return f"{v:.1e}"
    return f"{v:.3f}"


def _e(value: Any) -> str:
    """Escaped text for HTML (text and attribute values alike)."""
    return html.escape(str(value), quote=True)


class _Html(str):
    """A string of HTML built here from escaped parts: inserted as is."""


def _cell(value: Any) -> str:
    if isinstance(value, _Html):
        return f"<td>{value}</td>"
    numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    return f'<td class="num">{_e(_fmt(value))}</td>' if numeric else f"<td>{_e(_fmt(value))}</td>"


def _table(headers: Sequence[Any], rows: Iterable[Sequence[Any]], caption: str | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "\n".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    cap = f"<caption>{_e(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>"


def _label(value: Any, limit: int = _LABEL_CHARS) -> str:
    """A data label for a matplotlib figure: '$' escaped (no mathtext), shortened."""
    text = str(value).replace("\n", " ")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("$", r"\$")


# ------------------------------------------------------------------------------- reading inputs
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


def _formats(formats: Any) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = [f for f in formats.split(",")]
    try:
        items = [str(f).strip().lower() for f in formats]
    except TypeError:
        raise TypeError(f"formats must be a sequence such as ('html', 'json', 'md'), got {formats!r}") from None
    items = [f for f in items if f]
    bad = [f for f in items if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown report format(s) {bad}; choose from {', '.join(FORMATS)}")
    if not items:
        raise ValueError(f"formats is empty; choose one or more of {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(items))


def _ok_groups(rows: Sequence[Mapping]) -> list[Mapping]:
    return [g for g in rows if g.get("status") == "ok" and isinstance(g.get("alignment"), Mapping)]


def _ks(summary: Mapping | None, side: str) -> list[int]:
    if not isinstance(summary, Mapping):
        return []
    pat = re.compile(rf"^{side}_r(\d+)$")
    return sorted(int(m.group(1)) for k in summary if (m := pat.match(str(k))))


def _interval(unc: Mapping, key: str) -> tuple[float | None, float | None]:
    u = unc.get(key) if isinstance(unc, Mapping) else None
    if not isinstance(u, Mapping):
        return None, None
    return _num(u.get("ci_low")), _num(u.get("ci_high"))


def _group_interval(row: Mapping, key: str) -> tuple[float | None, float | None]:
    return _interval(row.get("uncertainty") or {}, key)


def _mismatch_rows(d: Mapping, show_ids: bool) -> list[dict]:
    rows = [dict(m) for m in (d.get("mismatches") or [])]
    if not show_ids:
        for m in rows:
            m.pop("id", None)
    return rows


# ------------------------------------------------------------------------------- the words
def _verdict(d: Mapping) -> tuple[str, bool]:
    """(plain-text interpretation of the imbalance, whether it is significant)."""
    a = d["alignment"]
    unc = d.get("uncertainty") or {}
    imb = _num(a.get("sas_imbalance"))
    lo, hi = _interval(unc, "sas_imbalance")
    p = _num((unc.get("imbalance_test") or {}).get("p_value")) if isinstance(unc, Mapping) else None
    if imb is None:
        return "The imbalance could not be computed.", False
    if lo is not None and hi is not None:
        significant = lo > 0 or hi < 0
    elif p is not None:
        significant = p < 0.05
    else:
        return ("No interval is available for the imbalance, so its direction is not assessed "
                f"(imbalance {_fmt(imb)}).", False)
    if not significant:
        return ("No clear imbalance: the 95% interval of SAS(I→T) − SAS(T→I) includes 0, so "
                "neither modality shows structure that the other clearly fails to mirror.", False)
    if imb < 0:
        return ("The images carry structure that the texts do not mirror: the main patterns of "
                "variation among the images are reflected less well in the texts than the texts' "
                "patterns are in the images (SAS(I→T) < SAS(T→I), 95% interval below 0). In a "
                "hospital archive this typically means image content the reports do not describe.",
                True)
    return ("The texts carry structure that the images do not mirror: the main patterns of "
            "variation among the texts are reflected less well in the images than the images' "
            "patterns are in the texts (SAS(I→T) > SAS(T→I), 95% interval above 0). In a hospital "
            "archive this typically means report content (history, findings from elsewhere) the "
            "images do not show.", True)


def _worst_groups(d: Mapping, count: int = 3) -> list[Mapping]:
    ok = [g for g in _ok_groups(d.get("groups") or []) if _num(g["alignment"].get("sas_sym")) is not None]
    return sorted(ok, key=lambda g: g["alignment"]["sas_sym"])[:count]


# ------------------------------------------------------------------------------- figures
class _Figures:
    """Renders figures with matplotlib's object API on the Agg canvas (no pyplot, no
    display, thread-safe with respect to other figures)."""

    def __init__(self) -> None:
        try:
            import matplotlib  # noqa: F401
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:  # pragma: no cover - matplotlib is a dependency
            raise ImportError("the HTML report needs matplotlib: pip install 'matplotlib>=3.7'") from None
        import matplotlib as mpl

        self._mpl = mpl
        self._Figure = Figure
        self._Canvas = FigureCanvasAgg
        self.rc = {"font.size": 10, "axes.titlesize": 10.5, "axes.labelsize": 10, "legend.fontsize": 8.5,
                   "axes.grid": True, "grid.alpha": 0.3, "text.usetex": False}
        self.colors = [mpl.colors.to_hex(c) for c in mpl.colormaps["tab10"].colors]

    def style(self):
        """The report's matplotlib style, for the figures created inside the block."""
        return self._mpl.rc_context(self.rc)

    def new(self, height_px: int, nrows: int = 1, ncols: int = 1, **kw: Any):
        """A figure FIG_WIDTH_PX x height_px pixels (the quarter pixel survives both
        truncation and rounding of inches x dpi)."""
        fig = self._Figure(figsize=((FIG_WIDTH_PX + 0.25) / FIG_DPI, (int(height_px) + 0.25) / FIG_DPI),
                           dpi=FIG_DPI, layout="constrained")
        self._Canvas(fig)
        axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
        return fig, axes

    @staticmethod
    def png(fig) -> tuple[bytes, int, int]:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=FIG_DPI, facecolor="white", metadata={"Software": None})
        data = buf.getvalue()
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        return data, width, height


def _unit_range(ax: Any, values: Iterable[Any], axis: str = "y") -> None:
    """Limits for a quantity in [0, 1]: from a round value just below the data (0 when the
    data reach down there) to 1, so that close values stay distinguishable."""
    finite = [v for v in (_num(x) for x in values) if v is not None]
    low = min(finite) if finite else 0.0
    start = max(0.0, math.floor((low - 0.02) * 10.0) / 10.0)
    if start > 0.9:
        start = 0.9
    (ax.set_ylim if axis == "y" else ax.set_xlim)(start, 1.01)


def _spectrum_figure(F: _Figures, d: Mapping) -> Any | None:
    profiles = d.get("profiles") or {}
    if not all(isinstance(profiles.get(k), Mapping) for k in ("i2t", "t2i")):
        return None
    q = float(d["topq"])
    fig, axes = F.new(600, 2, 2)
    names = {"i2t": ("images", "texts", "SAS(I→T)"), "t2i": ("texts", "images", "SAS(T→I)")}
    for col, direction in enumerate(("i2t", "t2i")):
        anchor, other, name = names[direction]
        eig = np.asarray(profiles[direction].get("eigenvalues") or [], dtype=np.float64)
        rho = np.abs(np.asarray(profiles[direction].get("rho") or [], dtype=np.float64))
        if eig.size == 0 or eig.size != rho.size:
            continue
        order = np.argsort(-np.nan_to_num(eig, nan=-np.inf), kind="stable")
        eig, rho = eig[order], rho[order]
        clipped = np.clip(np.nan_to_num(eig, nan=0.0), 0.0, None)
        kept = clipped >= np.quantile(clipped, 1.0 - q)
        k_kept = int(kept.sum())
        modes = np.arange(1, eig.size + 1)
        top, bottom = axes[0, col], axes[1, col]
        floor = max(float(clipped.max()) * 1e-12, 1e-300)
        top.semilogy(modes, np.maximum(clipped, floor), color=F.colors[col], lw=1.5,
                     marker="o" if eig.size <= 64 else None, ms=3)
        top.axvspan(0.5, k_kept + 0.5, color="#f2c14e", alpha=0.25, lw=0,
                    label=f"modes in SAS (top {q:g}: {k_kept})")
        top.set_title(f"{anchor.capitalize()} eigenspectrum (anchor of {name})")
        top.set_xlabel("mode (by decreasing variance)")
        top.set_ylabel("variance (eigenvalue)")
        top.legend(loc="upper right")
        bar_colors = np.where(kept, F.colors[col], "#b9c0c8")
        bottom.bar(modes, np.nan_to_num(rho, nan=0.0), width=1.0 if eig.size > 64 else 0.8,
                   color=bar_colors, lw=0)
        bottom.set_ylim(0, 1.05)
        bottom.set_title(f"Per-mode |ρ|: how well the {other} mirror each {anchor[:-1]} mode")
        bottom.set_xlabel("mode (by decreasing variance)")
        bottom.set_ylabel("|ρ|")
    return fig


def _sas_q_figure(F: _Figures, d: Mapping) -> Any | None:
    sweep = d.get("sas_sweep") or {}
    q = sweep.get("q")
    if not q:
        return None
    fig, axes = F.new(360)
    ax = axes[0, 0]
    shown: list[float] = []
    for i, (key, name) in enumerate((("sas_i2t", "SAS(I→T)"), ("sas_t2i", "SAS(T→I)"))):
        values = [np.nan if _num(v) is None else float(v) for v in sweep.get(key) or []]
        if len(values) == len(q):
            ax.plot(q, values, marker="o", color=F.colors[i], label=name)
            shown += values
    ax.axvline(float(d["topq"]), color="#444", ls="--", lw=1, label=f"q used in this report ({float(d['topq']):g})")
    ax.set_xlabel("q (fraction of the anchor's modes kept)")
    ax.set_ylabel("SAS")
    _unit_range(ax, shown)
    ax.set_title("SAS versus q")
    ax.legend(loc="lower right")
    return fig


def _plotted_groups(rows: Sequence[Mapping], limit: int) -> tuple[list[Mapping], int]:
    """Up to `limit` subgroup rows (the lowest SAS(sym) first when there are more), in
    their original order; and how many rows there were."""
    rows = list(rows)
    if len(rows) <= limit:
        return rows, len(rows)

    def key(g: Mapping) -> float:
        v = _num((g.get("alignment") or {}).get("sas_sym")) if g.get("status") == "ok" else None
        return v if v is not None else math.inf

    keep = {id(g) for g in sorted(rows, key=key)[:limit]}
    return [g for g in rows if id(g) in keep], len(rows)


def _groups_figure(F: _Figures, d: Mapping) -> Any | None:
    rows, total = _plotted_groups(d.get("groups") or [], MAX_GROUPS_PLOTTED)
    if not rows:
        return None
    fig, axes = F.new(max(280, 42 * len(rows) + 150))
    ax = axes[0, 0]
    y = np.arange(len(rows))[::-1]
    labels, shown = [], []
    for i, (key, name, marker, dy) in enumerate((("sas_i2t", "SAS(I→T)", "o", 0.14),
                                                   ("sas_t2i", "SAS(T→I)", "s", -0.14))):
        xs, ys, lo_err, hi_err = [], [], [], []
        for yy, g in zip(y, rows):
            v = _num((g.get("alignment") or {}).get(key)) if g.get("status") == "ok" else None
            if v is None:
                continue
            lo, hi = _group_interval(g, key)
            xs.append(v)
            ys.append(yy + dy)
            shown.append(v if lo is None else lo)
            lo_err.append(v - lo if lo is not None else 0.0)
            hi_err.append(hi - v if hi is not None else 0.0)
        if not xs:
            continue
        if any(lo_err) or any(hi_err):
            ax.errorbar(xs, ys, xerr=[lo_err, hi_err], fmt=marker, color=F.colors[i], ms=6, capsize=3,
                        label=f"{name} (95% interval)")
        else:
            ax.plot(xs, ys, marker, color=F.colors[i], ms=6, label=name)
        whole = _num(d["alignment"].get(key))
        if whole is not None:
            ax.axvline(whole, color=F.colors[i], ls="--", lw=1, label=f"{name}, whole archive")
            shown.append(whole)
    for g in rows:
        suffix = "" if g.get("status") == "ok" else ", too small"
        labels.append(f"{_label(g.get('group'))} (n={_fmt(g.get('n'))}{suffix})")
    ax.set_yticks(y)
    ax.set_yticklabels(labels)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    _unit_range(ax, shown, "x")
    ax.set_xlabel("SAS")
    shown = "" if total == len(rows) else f" ({len(rows)} of {total}, lowest SAS)"
    ax.set_title("SAS per subgroup" + shown)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4, frameon=False)
    return fig


def _recall_figure(F: _Figures, d: Mapping) -> Any | None:
    whole = d.get("retrieval") if isinstance(d.get("retrieval"), Mapping) else None
    groups, total = _plotted_groups(
        [g for g in d.get("groups") or [] if isinstance(g.get("retrieval_whole"), Mapping)
         or (isinstance(g.get("retrieval_within"), Mapping) and _ks(g["retrieval_within"], "i2t"))],
        MAX_GROUP_CURVES)
    if whole is None and not groups:
        return None
    fig, axes = F.new(440, 1, 2)
    shown: list[Any] = []
    for col, (side, name) in enumerate((("i2t", "Image → text (find the report of an image)"),
                                        ("t2i", "Text → image (find the image of a report)"))):
        ax = axes[0, col]
        if whole is not None and _ks(whole, side):
            ks = _ks(whole, side)
            ax.plot(ks, [whole[f"{side}_r{k}"] for k in ks], marker="o", color="black", lw=2.2,
                    label="whole archive")
            shown += [whole[f"{side}_r{k}"] for k in ks]
        for i, g in enumerate(groups):
            color = F.colors[i % len(F.colors)]
            label = _label(g.get("group"), 20)
            for part, ls, what in (("retrieval_whole", "-", "vs all"), ("retrieval_within", ":", "within")):
                r = g.get(part)
                ks = _ks(r, side)
                if ks:
                    values = [_num(r[f"{side}_r{k}"]) for k in ks]
                    ax.plot(ks, [np.nan if v is None else v for v in values], ls=ls, marker=".", color=color,
                            label=f"{label} ({what})")
                    shown += values
        ax.set_xlabel("k")
        ax.set_ylabel("R@k")
        ax.set_title(name)
        ticks = sorted({k for r in [whole] + [g.get(p) for g in groups for p in ("retrieval_whole", "retrieval_within")]
                        for k in _ks(r, side)})
        if ticks:
            ax.set_xticks(ticks)
    handles, labels = axes[0, 1].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 5), fontsize=8,
                   frameon=False)
    for ax in axes[0]:
        _unit_range(ax, shown)
    return fig


def _gap_figure(F: _Figures, gap: Mapping) -> Any | None:
    points = [p for p in gap.get("points") or [] if isinstance(p, Mapping)]
    if not points:
        return None
    lams = [float(p["lam"]) for p in points]

    def series(part: str, key: str) -> list[float] | None:
        out = []
        for p in points:
            src = p if part == "" else (p.get(part) or {})
            if key not in src:
                return None
            v = _num(src[key])
            out.append(np.nan if v is None else v)
        return out

    panels = [("Alignment", [("alignment", "sas_i2t", "SAS(I→T)"), ("alignment", "sas_t2i", "SAS(T→I)"),
                             ("alignment", "cka", "CKA")]),
              ("Modality gap", [("", "gap_norm", "gap norm"), ("alignment", "rmg", "RMG"),
                                ("alignment", "delta_cos", "Δcos")])]
    has_ret = any(p.get("retrieval") for p in points)
    has_probe = any(p.get("probe") for p in points)
    if has_ret or has_probe:
        panels.append(("Retrieval and probe", [("retrieval", "i2t_r1", "I→T R@1"), ("retrieval", "t2i_r1", "T→I R@1"),
                                               ("probe", "accuracy", "probe accuracy"),
                                               ("probe", "auroc", "probe AUROC")]))
    fig, axes = F.new(380, 1, len(panels))
    for col, (title, lines) in enumerate(panels):
        ax = axes[0, col]
        for i, (part, key, name) in enumerate(lines):
            values = series(part, key)
            if values is not None:
                ax.plot(lams, values, marker="o", color=F.colors[i], label=name)
        best = _num(gap.get("best_lam"))
        if best is not None and title == "Retrieval and probe":
            ax.axvline(best, color="#444", ls="--", lw=1, label=f"best λ ({best:g})")
        ax.set_xlabel("λ (gap shift strength)")
        ax.set_title(title)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=7.5, frameon=False)
    return fig


def _drift_figure(F: _Figures, d: Mapping) -> Any | None:
    rows = [g for g in d.get("drift") or [] if isinstance(g, Mapping)]
    if not rows:
        return None
    fig, axes = F.new(360)
    ax = axes[0, 0]
    x = np.arange(len(rows))
    shown: list[float] = []
    for i, (key, name) in enumerate((("sas_i2t", "SAS(I→T)"), ("sas_t2i", "SAS(T→I)"), ("cka", "CKA"))):
        vals, lo_err, hi_err = [], [], []
        for g in rows:
            v = _num((g.get("alignment") or {}).get(key)) if g.get("status") == "ok" else None
            lo, hi = _group_interval(g, key)
            vals.append(np.nan if v is None else v)
            shown.append(v if lo is None else lo)
            lo_err.append(v - lo if v is not None and lo is not None else 0.0)
            hi_err.append(hi - v if v is not None and hi is not None else 0.0)
        if any(lo_err) or any(hi_err):
            ax.errorbar(x, vals, yerr=[lo_err, hi_err], marker="o", color=F.colors[i], capsize=3, label=name)
        else:
            ax.plot(x, vals, marker="o", color=F.colors[i], label=name)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{_label(g.get('group'), 14)}\nn={_fmt(g.get('n'))}" for g in rows],
                       fontsize=8 if len(rows) > 12 else 9)
    _unit_range(ax, shown)
    ax.set_xlabel("period")
    ax.set_title("Alignment over time")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5)
    return fig


# ------------------------------------------------------------------------------- HTML
def _figure_html(F: _Figures, fig: Any, name: str, alt: str, caption: str) -> str:
    data, width, height = F.png(fig)
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (f'<figure id="fig-{_e(name)}"><img src="{src}" data-figure="{_e(name)}" width="{width}" '
            f'height="{height}" alt="{_e(alt)}"><figcaption>{_e(caption)}</figcaption></figure>')


def _card(key: str, value: str, interval: str = "") -> str:
    extra = f'<div class="i">{_e(interval)}</div>' if interval else ""
    return f'<div class="card"><div class="k">{_e(key)}</div><div class="v">{_e(value)}</div>{extra}</div>'


def _ci_text(lo: float | None, hi: float | None) -> str:
    return f"95% interval {_fmt(lo)} to {_fmt(hi)}" if lo is not None and hi is not None else ""


def _group_table(rows: Sequence[Mapping], kind: str) -> str:
    headers = [kind, "pairs", "status", "SAS(I→T)", "SAS(T→I)", "imbalance", "CKA"]
    with_ret = any("retrieval_within" in g or "retrieval_whole" in g for g in rows)
    if with_ret:
        headers += ["I→T R@1 within", "T→I R@1 within", "I→T R@1 vs all", "T→I R@1 vs all"]
    body = []
    for g in rows:
        a = g.get("alignment") or {}
        row = [str(g.get("group")), g.get("n"), g.get("status"), a.get("sas_i2t"), a.get("sas_t2i"),
               a.get("sas_imbalance"), a.get("cka")]
        if with_ret:
            w = g.get("retrieval_within") or {}
            v = g.get("retrieval_whole") or {}
            row += [w.get("i2t_r1"), w.get("t2i_r1"), v.get("i2t_r1"), v.get("t2i_r1")]
        body.append(row)
    return _table(headers, body)


def _meaning(key: str) -> str:
    if key in _MEANING:
        return _MEANING[key]
    m = re.fullmatch(r"(i2t|t2i)_(r(\d+)|median_rank|mean_rank|mrr|unmatched|queries)", key)
    if not m:
        return {"n_images": "image queries", "n_texts": "text queries"}.get(key, "")
    query, target = ("image", "text") if m.group(1) == "i2t" else ("text", "image")
    if m.group(3):
        return f"share of {query}s whose own {target} is among the {m.group(3)} most similar {target}s"
    return {"median_rank": f"median rank of a {query}'s own {target}",
            "mean_rank": f"mean rank of a {query}'s own {target}",
            "mrr": f"mean reciprocal rank of a {query}'s own {target}",
            "unmatched": f"{query}s without any matching {target} (left out)",
            "queries": f"{query} queries"}[m.group(2)]


def _metrics_table(d: Mapping) -> str:
    a = d["alignment"]
    unc = d.get("uncertainty") or {}
    rows = []
    for key, value in a.items():
        if key in ("n", "topq"):
            continue
        lo, hi = _interval(unc, key)
        se = _num((unc.get(key) or {}).get("se")) if isinstance(unc.get(key), Mapping) else None
        rows.append([key, value, se, _Html(_e(f"{_fmt(lo)} to {_fmt(hi)}")) if lo is not None else None,
                     _MEANING.get(key, "")])
    ret = d.get("retrieval")
    if isinstance(ret, Mapping):
        for key, value in ret.items():
            if isinstance(value, (list, dict)):
                continue
            rows.append([f"retrieval.{key}", value, None, None, _meaning(str(key))])
    test = unc.get("imbalance_test") if isinstance(unc, Mapping) else None
    if isinstance(test, Mapping):
        rows.append(["imbalance_test.t", test.get("t"), None, None, "jackknife t statistic of the imbalance"])
        rows.append(["imbalance_test.df", test.get("df"), None, None, "degrees of freedom (blocks − 1)"])
        rows.append(["imbalance_test.p_value", _Html(_e(_fmt_p(test.get("p_value")))), None, None,
                     f"two-sided p-value, null hypothesis {test.get('null', 'SAS(I→T) == SAS(T→I)')}"])
    return _table(["metric", "value", "std. error", "95% interval", "meaning"], rows)


def _html(d: Mapping, gap: Mapping | None, meta: Mapping, show_ids: bool, id_column_name: str,
          extra_context: Mapping | None) -> str:
    F = _Figures()
    with F.style():
        return _html_page(F, d, gap, meta, show_ids, id_column_name, extra_context)


def _mismatches_assessed(d: Mapping) -> bool:
    """Whether the audit computed the ranks that suspected mismatches come from."""
    return (isinstance(d.get("retrieval"), Mapping) or bool(d.get("mismatches"))
            or any(isinstance(g, Mapping) and "retrieval_within" in g for g in d.get("groups") or []))


def _html_page(F: _Figures, d: Mapping, gap: Mapping | None, meta: Mapping, show_ids: bool, id_column_name: str,
               extra_context: Mapping | None) -> str:
    a = d["alignment"]
    unc = d.get("uncertainty") or {}
    test = unc.get("imbalance_test") or {} if isinstance(unc, Mapping) else {}
    ret = d.get("retrieval") if isinstance(d.get("retrieval"), Mapping) else None
    groups = [g for g in d.get("groups") or [] if isinstance(g, Mapping)]
    drift = [g for g in d.get("drift") or [] if isinstance(g, Mapping)]
    mismatches = _mismatch_rows(d, show_ids)
    verdict, significant = _verdict(d)
    q = float(d["topq"])
    parts: list[str] = []
    out = parts.append

    out("<!DOCTYPE html>")
    out('<html lang="en"><head><meta charset="utf-8">')
    out('<meta name="viewport" content="width=device-width, initial-scale=1">')
    out(f'<meta http-equiv="Content-Security-Policy" content="{_e(_CSP)}">')
    out(f'<meta name="generator" content="fastsas {_e(meta["fastsas_version"])}">')
    out(f"<title>{_e(meta['title'])}</title><style>{_CSS}</style></head><body><main>")
    out(f"<h1>{_e(meta['title'])}</h1>")
    out(f'<p class="meta">{_e(_fmt(d["n"]))} image–text pairs, embedding dimension {_e(d["dim"])}, '
        f"SAS with the top {_e(f'{q:g}')} of modes · created {_e(meta['created'])} · fastsas "
        f"{_e(meta['fastsas_version'])} · definitions {_e(meta['definitions_version'])}</p>")

    # -- summary
    out('<section id="summary"><h2>Summary</h2><div class="cards">')
    for key, name in (("sas_i2t", "SAS(I→T)"), ("sas_t2i", "SAS(T→I)"), ("sas_imbalance", "imbalance")):
        out(_card(name, _fmt(a.get(key)), _ci_text(*_interval(unc, key))))
    out(_card("imbalance test", f"p = {_fmt_p(test.get('p_value'))}", "H0: SAS(I→T) = SAS(T→I)"))
    if ret is not None:
        for side, name in (("i2t", "image → text R@1"), ("t2i", "text → image R@1")):
            if f"{side}_r1" in ret:
                out(_card(name, _fmt(ret[f"{side}_r1"])))
    out(_card("suspected mismatches", _fmt(len(mismatches)) if _mismatches_assessed(d) else "not assessed"))
    out("</div>")
    out(f'<div class="verdict{"" if significant else " neutral"}"><p>{_e(verdict)}</p></div>')
    out("<p>How to read SAS: SAS(A→B) is between 0 and 1 and is high when B mirrors the main "
        "patterns of variation (principal variance) of A. SAS(I→T) asks how much of the images' "
        "structure the texts reflect; SAS(T→I) asks the reverse. Their difference, the imbalance, "
        "says which modality carries structure the other does not mirror: negative means the "
        "images carry structure the texts lack, positive the reverse. Intervals are 95% "
        f"delete-a-block jackknife intervals over {_e(unc.get('blocks', '?'))} blocks.</p>")
    worst = _worst_groups(d)
    if worst:
        names = "; ".join(f"{g.get('group')} (SAS(I→T) {_fmt(g['alignment'].get('sas_i2t'))}, "
                          f"SAS(T→I) {_fmt(g['alignment'].get('sas_t2i'))}, n={_fmt(g.get('n'))})" for g in worst)
        out(f"<p>Subgroups with the lowest alignment: {_e(names)}.</p>")
    out("</section>")

    # -- spectral figures
    out('<section id="spectrum"><h2>Spectral profile</h2>')
    fig = _spectrum_figure(F, d)
    if fig is not None:
        out(_figure_html(F, fig, "spectrum", "Eigenspectra and per-mode correlations for both directions",
                         "Top: variance of each principal mode of the anchor modality (log scale); the shaded "
                         f"modes (top {q:g}) enter SAS. Bottom: |ρ|, how strongly the other modality follows "
                         "each mode (1 = fully mirrored); SAS is the variance-weighted mean of |ρ| over the "
                         "shaded modes."))
    fig = _sas_q_figure(F, d)
    if fig is not None:
        out(_figure_html(F, fig, "sas_vs_q", "SAS versus q for both directions",
                         "SAS computed with a growing share q of the anchor's modes. Curves that fall as q "
                         "grows mean the minor modes are mirrored less well than the dominant ones."))
    out("</section>")

    # -- subgroups
    if groups:
        out('<section id="subgroups"><h2>Subgroups</h2>')
        fig = _groups_figure(F, d)
        if fig is not None:
            has_ci = any(g.get("uncertainty") for g in groups)
            out(_figure_html(F, fig, "subgroups", "SAS per subgroup",
                             "SAS in both directions within each subgroup; dashed lines: the whole archive. "
                             + ("Bars: 95% jackknife intervals." if has_ci else
                                "Subgroup values are point estimates (no interval computed).")))
        out(_group_table(groups, "subgroup"))
        out("</section>")

    # -- retrieval
    fig = _recall_figure(F, d)
    if fig is not None or ret is not None:
        out('<section id="retrieval"><h2>Retrieval</h2>')
        if fig is not None:
            out(_figure_html(F, fig, "recall", "Retrieval recall curves, both directions",
                             "R@k: the share of queries whose own match is among the k most similar candidates. "
                             "Black: the whole archive. Coloured solid: a subgroup's queries against the whole "
                             "gallery; dotted: within the subgroup only."))
        out("</section>")

    # -- drift
    if drift:
        out('<section id="drift"><h2>Drift over time</h2>')
        fig = _drift_figure(F, d)
        if fig is not None:
            out(_figure_html(F, fig, "drift", "Alignment per period",
                             "SAS and CKA computed separately for each period."))
        out(_group_table(drift, "period"))
        out("</section>")

    # -- gap sweep
    if gap is not None:
        out('<section id="gap"><h2>Modality-gap sweep</h2>')
        fig = _gap_figure(F, gap)
        if fig is not None:
            out(_figure_html(F, fig, "gap_sweep", "Metrics versus the gap shift λ",
                             "Each metric after moving the image and text embeddings towards each other by a "
                             "fraction λ of the modality gap (λ = 0: unchanged, 1: centroids coincide)."))
        rows = []
        for p in gap.get("points") or []:
            al, r, pr = p.get("alignment") or {}, p.get("retrieval") or {}, p.get("probe") or {}
            lam = _num(p.get("lam"))
            rows.append([f"{lam:g}" if lam is not None else None, p.get("gap_norm"), al.get("sas_i2t"), al.get("sas_t2i"), al.get("cka"),
                         r.get("rsum"), pr.get("accuracy"), pr.get("auroc")])
        out(_table(["λ", "gap norm", "SAS(I→T)", "SAS(T→I)", "CKA", "rSum", "probe accuracy", "probe AUROC"], rows))
        if gap.get("best_lam") is not None:
            best = float(gap["best_lam"])
            out(f"<p>Best λ by probe accuracy: {_e(f'{best:g}')}.</p>")
        out("</section>")

    # -- mismatches
    out('<section id="mismatches"><h2>Suspected mismatches</h2>')
    if mismatches:
        with_ids = any("id" in m for m in mismatches)
        # Columns the user explicitly asked to include (e.g. report text), never by default.
        included = list(dict.fromkeys(k for m in mismatches for k in (m.get("columns") or {})))
        privacy = ("Ids are the archive's own key column; no report text or other columns are included."
                   if not included else
                   "Included on request: " + ", ".join(included) + ". Treat this file as patient data.")
        out("<p>Pairs whose own match ranks poorly in both directions: the image's own text is ranked "
            "r-th among all texts, and the text's own image s-th among all images. These are worth "
            "checking for a report filed against the wrong study. "
            + _e(privacy if with_ids or included else "Rows are positions in the input.") + "</p>")
        headers = (["#", "row"] + ([id_column_name] if with_ids else []) + ["I→T rank", "T→I rank"]
                   + included)
        body = []
        for i, m in enumerate(mismatches, 1):
            extra = m.get("columns") or {}
            body.append([i, str(m.get("row"))] + ([str(m.get("id"))] if with_ids else [])
                        + [m.get("i2t_rank"), m.get("t2i_rank")] + [str(extra.get(c, "")) for c in included])
        out(_table(headers, body))
    elif not _mismatches_assessed(d):
        out("<p>Not assessed: retrieval was not computed.</p>")
    else:
        out("<p>No suspected mismatches.</p>")
    out("</section>")

    # -- all metrics, provenance
    out('<section id="metrics"><h2>All metrics (whole archive)</h2>')
    out(_metrics_table(d))
    out("</section>")
    out('<section id="provenance"><h2>Provenance</h2>')
    prov = [["created (UTC)", meta["created"]], ["fastsas version", meta["fastsas_version"]],
            ["definitions version", meta["definitions_version"]],
            ["input fingerprint", _Html(f"<code>{_e(meta['input_fingerprint'] or 'not given')}</code>")],
            ["pairs", d["n"]], ["dimension", d["dim"]], ["q (top fraction of modes)", d["topq"]]]
    if isinstance(d.get("backend"), Mapping):  # which engine computed what (cpu, cuda, dask)
        prov.append(["computed on", ", ".join(f"{k}: {v}" for k, v in d["backend"].items())])
    for key, value in (extra_context or {}).items():
        text = value if isinstance(value, str) else json.dumps(_jsonable(value), ensure_ascii=False)
        prov.append([str(key), text])
    out(_table(["item", "value"], prov))
    out("</section>")
    out("<footer><p>Written by fastsas. This file is self-contained: it loads nothing from the network. "
        "It holds aggregate numbers and the ids of flagged pairs only.</p></footer>")
    out("</main></body></html>")
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------- Markdown
def _md(text: Any) -> str:
    """Escape data text for Markdown (HTML entities, and Markdown's own punctuation)."""
    s = html.escape(str(text), quote=False).replace("\n", " ")
    return re.sub(r"([\\`*_\[\]|#!])", r"\\\1", s)


def _markdown(d: Mapping, gap: Mapping | None, meta: Mapping, show_ids: bool) -> str:
    a = d["alignment"]
    unc = d.get("uncertainty") or {}
    test = unc.get("imbalance_test") or {}
    ret = d.get("retrieval") if isinstance(d.get("retrieval"), Mapping) else None
    lines = [f"# {_md(meta['title'])}", "",
             f"{_fmt(d['n'])} pairs, dimension {d['dim']}, q = {float(d['topq']):g}. Created {meta['created']}; "
             f"fastsas {meta['fastsas_version']}, definitions {meta['definitions_version']}; "
             f"input {_md(meta['input_fingerprint'] or 'not fingerprinted')}.", "",
             "| metric | value | 95% interval |", "|---|---|---|"]
    for key, name in (("sas_i2t", "SAS(I→T)"), ("sas_t2i", "SAS(T→I)"), ("sas_imbalance", "imbalance"),
                      ("cka", "CKA")):
        lo, hi = _interval(unc, key)
        ci = f"{_fmt(lo)} to {_fmt(hi)}" if lo is not None and hi is not None else ""
        lines.append(f"| {name} | {_fmt(a.get(key))} | {ci} |")
    lines.append(f"| imbalance test p | {_fmt_p(test.get('p_value'))} | |")
    if ret is not None:
        for key in ("i2t_r1", "t2i_r1", "rsum"):
            if key in ret:
                lines.append(f"| {key} | {_fmt(ret[key])} | |")
    verdict, _ = _verdict(d)
    lines += ["", verdict, ""]
    worst = _worst_groups(d)
    if worst:
        lines.append("Subgroups with the lowest alignment (SAS sym):")
        lines += [f"- {_md(g.get('group'))}: SAS(I→T) {_fmt(g['alignment'].get('sas_i2t'))}, "
                  f"SAS(T→I) {_fmt(g['alignment'].get('sas_t2i'))}, n = {_fmt(g.get('n'))}" for g in worst]
        lines.append("")
    if d.get("drift"):
        lines.append(f"Drift: {len(d['drift'])} periods (see report.html).")
    if gap is not None and gap.get("best_lam") is not None:
        lines.append(f"Gap sweep: best λ by probe accuracy = {float(gap['best_lam']):g}.")
    mismatches = _mismatch_rows(d, show_ids)
    if not _mismatches_assessed(d):
        lines.append("Suspected mismatches: not assessed (no retrieval).")
    else:
        lines.append(f"Suspected mismatches: {len(mismatches)} (listed by id in report.html and report.json).")
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------------------------- writing
def _write_text(path: Path, text: str) -> None:
    """Write atomically: a temporary file in the same folder, then a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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
    """Write the report of an audit into ``out_dir`` (created if missing).

    audit: the :class:`~fastsas.audit.AuditResult` of ``fs.audit`` (or its ``to_dict()``).
    formats: any of ``"html"`` (``report.html``, self-contained), ``"json"``
        (``report.json``) and ``"md"`` (``report.md``); a sequence or a comma-separated string.
    gap_sweep: optional :class:`~fastsas.gap.GapSweep` of ``fs.gap.sweep``: adds its figure,
        table and numbers.
    title: the page title. input_fingerprint: e.g. :func:`fingerprint_arrays` of the input.
    id_column_name: header of the id column in the mismatch table.
    show_ids: False drops the ids of suspected mismatches from every file (rows stay).
    extra_context: small key/value pairs (command line, model name) shown under Provenance
        and stored under ``context`` in the JSON.

    Returns ``{format: path}`` for each file written. Files are written atomically.

    >>> import tempfile, fastsas as fs
    >>> x, y = fs.synthetic.paired_embeddings(500, 16, image_only_factors=2)
    >>> paths = write_report(fs.audit(x, y), tempfile.mkdtemp(), formats=("json", "md"))
    >>> sorted(paths)
    ['json', 'md']
    """
    import fastsas

    d = _audit_dict(audit)
    gap = _gap_dict(gap_sweep)
    kinds = _formats(formats)
    if not isinstance(title, str):
        raise TypeError(f"title must be a string, got {type(title).__name__}")
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
        "fastsas_version": fastsas.__version__,
        "definitions_version": d.get("definitions_version") or fastsas.DEFINITIONS_VERSION,
        "input_fingerprint": input_fingerprint,
    }
    paths: dict[str, Path] = {}
    for kind in kinds:
        path = out / FILE_NAMES[kind]
        if kind == "json":
            audit_part = dict(d)
            audit_part["mismatches"] = _mismatch_rows(d, show_ids)
            payload = {**audit_part, **meta, "id_column": id_column_name if show_ids else None,
                       "gap_sweep": gap, "context": dict(extra_context) if extra_context else None}
            text = json.dumps(_jsonable(payload), indent=1, ensure_ascii=False, allow_nan=False)
        elif kind == "md":
            text = _markdown(d, gap, meta, show_ids)
        else:
            text = _html(d, gap, meta, show_ids, id_column_name, extra_context)
        _write_text(path, text)
        paths[kind] = path
    return paths
