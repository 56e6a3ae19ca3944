"""The words and numbers of a report, shared by its HTML and Markdown forms: how a value
is printed, what each metric means, what the imbalance says, which subgroups align worst.
Everything here reads the plain dict of an audit (``AuditResult.to_dict()``)."""
from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

import numpy as np

from fastsas.definitions import IMBALANCE_SIGN

__all__ = ["MEANINGS", "as_finite", "format_p", "format_percent", "format_value", "group_interval", "imbalance_verdict", "interval_of",
           "ks_of", "meaning_of", "mismatch_rows", "mismatch_summary", "mismatches_assessed", "ok_groups", "worst_groups"]

# Short meanings of the metrics, for the tables (plain text).
MEANINGS = {
    "sas_i2t": "SAS(I→T): share of the images' principal variance that the texts mirror",
    "sas_t2i": "SAS(T→I): share of the texts' principal variance that the images mirror",
    "sas_sym": "mean of the two SAS directions",
    "sas_imbalance": IMBALANCE_SIGN,
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
    "rsum": "rSum: the sum over the cutoffs k of R@k in percent, both directions (0 to 600 with k = 1, 5, 10)",
    "cka_unbiased": "linear CKA with the unbiased HSIC: no small-sample inflation; may be slightly negative near 0",
    "procrustes": "orthogonal Procrustes distance of the centred embeddings (0 = equal up to a rotation)",
    "procrustes_angular": "angle between the centred embeddings after the best rotation (radians, 0 to π/2)",
    "procrustes_angular_whitened": "the same angle after whitening each modality (radians, 0 to π/2)",
    "mutual_knn": "share of each pair's k nearest images that are also its k nearest texts (0 to 1)",
    "cycle_knn": "share of pairs that come back to themselves through a text-side then an image-side neighbour",
    "lcs_knn": "mean longest common subsequence of the two ordered neighbour lists (0 to k)",
    "edit_distance_knn": "1 − mean edit distance of the two ordered neighbour lists over k (1 = same order)",
    "cknna": "CKNNA: kernel alignment restricted to shared neighbourhoods (unbiased HSIC)",
    "cknna_biased": "CKNNA with the biased HSIC (neighbourhoods include the row itself)",
}

NEIGHBOURHOOD_COLUMNS = ("mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn", "cknna", "cknna_biased")


def neighbourhood_rows(d: Mapping) -> tuple[list[str], list[list[Any]]] | None:
    """(headers, rows) of the neighbourhood family, the whole archive then each subgroup (a
    subgroup without values shows its status); None when the audit did not compute it."""
    whole = d.get("neighbourhood")
    if not isinstance(whole, Mapping) or not whole:
        return None
    headers = ["set", "pairs", *NEIGHBOURHOOD_COLUMNS]
    rows = [["whole archive", d.get("n"), *[whole.get(k) for k in NEIGHBOURHOOD_COLUMNS]]]
    for g in d.get("groups") or []:
        nb = g.get("neighbourhood") if isinstance(g, Mapping) else None
        if not isinstance(nb, Mapping):
            continue
        if nb.get("status") == "ok":
            rows.append([str(g.get("group")), g.get("n"), *[nb.get(k) for k in NEIGHBOURHOOD_COLUMNS]])
        else:
            rows.append([str(g.get("group")), g.get("n"), str(nb.get("status")), *[None] * (len(NEIGHBOURHOOD_COLUMNS) - 1)])
    return headers, rows


def neighbourhood_caption(d: Mapping) -> str:
    """What the neighbourhood table shows, in words."""
    topk = (d.get("neighbourhood") or {}).get("topk")
    return (f"Neighbourhood family with k = {topk} exact cosine neighbours within each modality (self excluded, "
            "ties by the smaller row index; docs/definitions.md). Values near 0 mean the two modalities "
            "arrange their items differently; 1 (lcs_knn: k) means the same neighbours in the same order. "
            "Subgroups are computed among their own rows, so a small subgroup's values are not comparable "
            "with the whole archive's.")


def as_finite(value: Any) -> float | None:
    """A finite float, or None."""
    if value is None or isinstance(value, (bool, str)):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def format_value(value: Any) -> str:
    """Plain text for a number in a report (not yet escaped): integers with thousands
    separators, floats with four decimals (four significant digits below 1e-3, scientific
    notation beyond 1e4 or below 1e-8), NaN as "n/a", None as "–".

    Parameters
    ----------
    value : any
        A number, None, a bool or anything printable.

    Returns
    -------
    str
        The text shown in tables and cards.

    Examples
    --------
    >>> from fastsas.report import format_value
    >>> format_value(0.123456), format_value(20000), format_value(-0.00051234), format_value(None)
    ('0.1235', '20,000', '-0.0005123', '–')
    """
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


def format_percent(fraction: Any, digits: int = 1) -> str:
    """A fraction (recall, a share, a rate) as a percentage: ``0.9773`` -> ``"97.7%"``;
    "n/a" when it is not a finite number.

    Parameters
    ----------
    fraction : float or None
        The value in [0, 1] (any finite number is printed).
    digits : int, default 1
        Decimals of the percentage.

    Returns
    -------
    str

    Examples
    --------
    >>> from fastsas.report.text import format_percent
    >>> format_percent(0.9773), format_percent(5e-05, 3), format_percent(None)
    ('97.7%', '0.005%', 'n/a')
    """
    v = as_finite(fraction)
    if v is None:
        return "n/a"
    return f"{100.0 * v:.{digits}f}%"


def format_p(p: Any) -> str:
    """A p-value as text: three decimals, scientific below 0.001, "< 1e-300" for 0."""
    v = as_finite(p)
    if v is None:
        return "n/a"
    if v == 0.0:
        return "< 1e-300"
    if v < 0.001:
        return f"{v:.1e}"
    return f"{v:.3f}"


def ok_groups(rows: Sequence[Mapping]) -> list[Mapping]:
    """The subgroup rows whose alignment was computed (status "ok")."""
    return [g for g in rows if g.get("status") == "ok" and isinstance(g.get("alignment"), Mapping)]


def ks_of(summary: Mapping | None, side: str) -> list[int]:
    """The cutoffs k of a retrieval summary's `side`_r{k} keys ("i2t" or "t2i"), sorted."""
    if not isinstance(summary, Mapping):
        return []
    pat = re.compile(rf"^{side}_r(\d+)$")
    return sorted(int(m.group(1)) for k in summary if (m := pat.match(str(k))))


def interval_of(unc: Mapping, key: str) -> tuple[float | None, float | None]:
    """(ci_low, ci_high) of metric `key` in an uncertainty dict, or (None, None)."""
    u = unc.get(key) if isinstance(unc, Mapping) else None
    if not isinstance(u, Mapping):
        return None, None
    return as_finite(u.get("ci_low")), as_finite(u.get("ci_high"))


def group_interval(row: Mapping, key: str) -> tuple[float | None, float | None]:
    """(ci_low, ci_high) of metric `key` of a subgroup row, or (None, None)."""
    return interval_of(row.get("uncertainty") or {}, key)


def mismatch_rows(d: Mapping, show_ids: bool) -> list[dict]:
    """The suspected mismatches of an audit dict, without their ids unless `show_ids`."""
    rows = [dict(m) for m in (d.get("mismatches") or [])]
    if not show_ids:
        for m in rows:
            m.pop("id", None)
    return rows


def mismatches_assessed(d: Mapping) -> bool:
    """Whether the audit ran the suspected-mismatch test."""
    test = d.get("mismatch_test")
    return isinstance(test, Mapping) and "flagged" in test


def mismatch_summary(d: Mapping) -> str:
    """What the mismatch test found, in one sentence (the count flagged is never capped;
    the listed rows may be).

    Parameters
    ----------
    d : dict
        An audit's ``to_dict()``.

    Returns
    -------
    str

    Examples
    --------
    >>> from fastsas.report import mismatch_summary
    >>> mismatch_summary({"mismatch_test": {"flagged": 101, "shown": 20, "fdr": 0.05, "estimated_fdr": 0.005,
    ...                                     "power": 0.99, "has_power": True}})
    'Suspected mismatches: 101 at a 5% false discovery rate (estimated 0.5%; power 99.0%), showing 20 of 101.'
    """
    test = d.get("mismatch_test") if isinstance(d.get("mismatch_test"), Mapping) else {}
    if "flagged" not in test:
        return f"Suspected mismatches: not assessed ({test.get('status') or 'the test did not run'})."
    if not test.get("has_power"):
        return f"Suspected mismatches: none listed: {test.get('status')}."
    flagged, shown = int(test.get("flagged") or 0), int(test.get("shown") or 0)
    listed = f", showing {shown} of {flagged:,}" if shown < flagged else ""
    return (f"Suspected mismatches: {flagged:,} at a {format_percent(test.get('fdr'), 0)} false discovery rate "
            f"(estimated {format_percent(test.get('estimated_fdr'))}; power {format_percent(test.get('power'))})"
            f"{listed}.")


def imbalance_verdict(d: Mapping) -> tuple[str, bool]:
    """(plain-text interpretation of the imbalance, whether it is significant)."""
    a = d["alignment"]
    unc = d.get("uncertainty") or {}
    imb = as_finite(a.get("sas_imbalance"))
    lo, hi = interval_of(unc, "sas_imbalance")
    p = as_finite((unc.get("imbalance_test") or {}).get("p_value")) if isinstance(unc, Mapping) else None
    if imb is None:
        return "The imbalance could not be computed.", False
    if lo is not None and hi is not None:
        significant = lo > 0 or hi < 0
    elif p is not None:
        significant = p < 0.05
    else:
        return ("No interval is available for the imbalance, so its direction is not assessed "
                f"(imbalance {format_value(imb)}).", False)
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


def worst_groups(d: Mapping, count: int = 3) -> list[Mapping]:
    """The `count` subgroups with the lowest SAS(sym), lowest first."""
    ok = [g for g in ok_groups(d.get("groups") or []) if as_finite(g["alignment"].get("sas_sym")) is not None]
    return sorted(ok, key=lambda g: g["alignment"]["sas_sym"])[:count]


def meaning_of(key: str) -> str:
    """What a metric key means in a few words ("" when unknown): MEANINGS, and the
    retrieval keys (i2t_r5, t2i_mrr, ...) spelled out."""
    if key in MEANINGS:
        return MEANINGS[key]
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
