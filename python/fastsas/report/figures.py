"""The report's figures: PNGs rendered by matplotlib with its object API on the Agg
canvas (no pyplot state, no GUI), each ``FIG_WIDTH_PX`` wide. matplotlib is imported when
the first figure is made (:class:`Figures`), so importing the report stays light. Each
``*_figure`` function takes the plain dict of an audit (or a gap sweep) and returns a
matplotlib Figure, or None when there is nothing to draw."""
from __future__ import annotations

import io
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from fastsas.report.text import as_finite, format_value, group_interval, ks_of

__all__ = ["FIGURE_FRAME", "FIGURE_FRAME_RGB", "FIG_DPI", "FIG_WIDTH_IN", "FIG_WIDTH_PX", "Figures", "MAX_GROUPS_PLOTTED",
           "MAX_GROUP_CURVES", "drift_figure", "figure_label", "gap_figure", "groups_figure", "recall_figure",
           "sas_q_figure", "spectrum_figure"]

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


def figure_label(value: Any, limit: int = _LABEL_CHARS) -> str:
    """A data label for a matplotlib figure: '$' escaped (no mathtext), shortened."""
    text = str(value).replace("\n", " ")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("$", r"\$")


class Figures:
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
    finite = [v for v in (as_finite(x) for x in values) if v is not None]
    low = min(finite) if finite else 0.0
    start = max(0.0, math.floor((low - 0.02) * 10.0) / 10.0)
    if start > 0.9:
        start = 0.9
    (ax.set_ylim if axis == "y" else ax.set_xlim)(start, 1.01)


def spectrum_figure(F: Figures, d: Mapping) -> Any | None:
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


def sas_q_figure(F: Figures, d: Mapping) -> Any | None:
    sweep = d.get("sas_sweep") or {}
    q = sweep.get("q")
    if not q:
        return None
    fig, axes = F.new(360)
    ax = axes[0, 0]
    shown: list[float] = []
    for i, (key, name) in enumerate((("sas_i2t", "SAS(I→T)"), ("sas_t2i", "SAS(T→I)"))):
        values = [np.nan if as_finite(v) is None else float(v) for v in sweep.get(key) or []]
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
        v = as_finite((g.get("alignment") or {}).get("sas_sym")) if g.get("status") == "ok" else None
        return v if v is not None else math.inf

    keep = {id(g) for g in sorted(rows, key=key)[:limit]}
    return [g for g in rows if id(g) in keep], len(rows)


def groups_figure(F: Figures, d: Mapping) -> Any | None:
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
            v = as_finite((g.get("alignment") or {}).get(key)) if g.get("status") == "ok" else None
            if v is None:
                continue
            lo, hi = group_interval(g, key)
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
        whole = as_finite(d["alignment"].get(key))
        if whole is not None:
            ax.axvline(whole, color=F.colors[i], ls="--", lw=1, label=f"{name}, whole archive")
            shown.append(whole)
    for g in rows:
        suffix = "" if g.get("status") == "ok" else ", too small"
        labels.append(f"{figure_label(g.get('group'))} (n={format_value(g.get('n'))}{suffix})")
    ax.set_yticks(y)
    ax.set_yticklabels(labels)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    _unit_range(ax, shown, "x")
    ax.set_xlabel("SAS")
    shown = "" if total == len(rows) else f" ({len(rows)} of {total}, lowest SAS)"
    ax.set_title("SAS per subgroup" + shown)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4, frameon=False)
    return fig


def recall_figure(F: Figures, d: Mapping) -> Any | None:
    whole = d.get("retrieval") if isinstance(d.get("retrieval"), Mapping) else None
    groups, total = _plotted_groups(
        [g for g in d.get("groups") or [] if isinstance(g.get("retrieval_whole"), Mapping)
         or (isinstance(g.get("retrieval_within"), Mapping) and ks_of(g["retrieval_within"], "i2t"))],
        MAX_GROUP_CURVES)
    if whole is None and not groups:
        return None
    fig, axes = F.new(440, 1, 2)
    shown: list[Any] = []
    for col, (side, name) in enumerate((("i2t", "Image → text (find the report of an image)"),
                                        ("t2i", "Text → image (find the image of a report)"))):
        ax = axes[0, col]
        if whole is not None and ks_of(whole, side):
            ks = ks_of(whole, side)
            ax.plot(ks, [whole[f"{side}_r{k}"] for k in ks], marker="o", color="black", lw=2.2,
                    label="whole archive")
            shown += [whole[f"{side}_r{k}"] for k in ks]
        for i, g in enumerate(groups):
            color = F.colors[i % len(F.colors)]
            label = figure_label(g.get("group"), 20)
            for part, ls, what in (("retrieval_whole", "-", "vs all"), ("retrieval_within", ":", "within")):
                r = g.get(part)
                ks = ks_of(r, side)
                if ks:
                    values = [as_finite(r[f"{side}_r{k}"]) for k in ks]
                    ax.plot(ks, [np.nan if v is None else v for v in values], ls=ls, marker=".", color=color,
                            label=f"{label} ({what})")
                    shown += values
        ax.set_xlabel("k")
        ax.set_ylabel("R@k")
        ax.set_title(name)
        ticks = sorted({k for r in [whole] + [g.get(p) for g in groups for p in ("retrieval_whole", "retrieval_within")]
                        for k in ks_of(r, side)})
        if ticks:
            ax.set_xticks(ticks)
    handles, labels = axes[0, 1].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 5), fontsize=8,
                   frameon=False)
    for ax in axes[0]:
        _unit_range(ax, shown)
    return fig


def gap_figure(F: Figures, gap: Mapping) -> Any | None:
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
            v = as_finite(src[key])
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
        best = as_finite(gap.get("best_lam"))
        if best is not None and title == "Retrieval and probe":
            ax.axvline(best, color="#444", ls="--", lw=1, label=f"best λ ({best:g})")
        ax.set_xlabel("λ (gap shift strength)")
        ax.set_title(title)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=7.5, frameon=False)
    return fig


def drift_figure(F: Figures, d: Mapping) -> Any | None:
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
            v = as_finite((g.get("alignment") or {}).get(key)) if g.get("status") == "ok" else None
            lo, hi = group_interval(g, key)
            vals.append(np.nan if v is None else v)
            shown.append(v if lo is None else lo)
            lo_err.append(v - lo if v is not None and lo is not None else 0.0)
            hi_err.append(hi - v if v is not None and hi is not None else 0.0)
        if any(lo_err) or any(hi_err):
            ax.errorbar(x, vals, yerr=[lo_err, hi_err], marker="o", color=F.colors[i], capsize=3, label=name)
        else:
            ax.plot(x, vals, marker="o", color=F.colors[i], label=name)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{figure_label(g.get('group'), 14)}\nn={format_value(g.get('n'))}" for g in rows],
                       fontsize=8 if len(rows) > 12 else 9)
    _unit_range(ax, shown)
    ax.set_xlabel("period")
    ax.set_title("Alignment over time")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5)
    return fig
