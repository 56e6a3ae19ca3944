"""The findings of a report: a short list of what matters in an audit, in words, each with
the numbers it rests on. Read from the audit's plain dict (``AuditResult.to_dict()``) and
written into ``report.json`` (``findings``), at the top of ``report.html`` and of
``report.md``, so the three say the same thing.

Each finding is a dict: ``kind`` (what it is about), ``severity`` ("warning": worth acting
on; "info"), ``text`` (one or two plain sentences, recall in percent) and ``values`` (the
numbers in the text, as in the JSON: recall as fractions)."""
from __future__ import annotations

from typing import Any, Mapping

from fastsas.definitions import IMBALANCE_SIGN
from fastsas.report.text import as_finite, format_p, format_percent, format_value, imbalance_verdict, interval_of

__all__ = ["PAIRING_METRICS", "UNMIRRORED_RHO", "chance_of", "findings"]

UNMIRRORED_RHO = 0.3   # a kept anchor mode with |rho| below this is not mirrored by the other modality
MAX_MODES_LISTED = 4
# The metrics that depend on which text goes with which image (the others are unchanged by a
# re-pairing, so their chance level is their value).
PAIRING_METRICS = ("sas_i2t", "sas_t2i", "cka", "svcca", "delta_cos", "matched_cosine")
_NAMES = {"sas_i2t": "SAS(I→T)", "sas_t2i": "SAS(T→I)", "cka": "CKA", "svcca": "SVCCA", "delta_cos": "Δcos",
          "matched_cosine": "matched cosine", "i2t_r1": "image→text R@1", "t2i_r1": "text→image R@1"}
_ANCHOR = {"i2t": ("image", "texts"), "t2i": ("text", "images")}


def _ci(lo: Any, hi: Any, percent: bool = False) -> str:
    if as_finite(lo) is None or as_finite(hi) is None:
        return ""
    f = format_percent if percent else format_value
    return f" [{f(lo)}, {f(hi)}]"


def chance_of(d: Mapping, key: str) -> float | None:
    """The chance level of a metric: the mean over the random re-pairings, or (retrieval)
    the expected recall of a random ranking."""
    chance = d.get("chance") or {}
    if key in ("i2t_r1", "t2i_r1", "i2t_r5", "t2i_r5", "i2t_r10", "t2i_r10", "rsum"):
        return as_finite((chance.get("retrieval") or {}).get(key))
    metrics = ((chance.get("alignment") or {}).get("metrics") or {})
    return as_finite((metrics.get(key) or {}).get("mean"))


def _mismatch_finding(d: Mapping) -> dict | None:
    test = d.get("mismatch_test") or {}
    if "flagged" not in test:
        status = test.get("status")
        if not status:
            return None
        return {"kind": "mismatches", "severity": "info", "text": f"Suspected mismatches: {status}.",
                "values": {"flagged": None}}
    unit = test.get("unit") or "pair"
    fdr = test.get("fdr")
    if not test.get("has_power"):
        text = (f"The mismatch test has no power on this archive: a report swapped with another {unit}'s would be "
                f"flagged with probability {format_percent(test.get('power'))} at a {format_percent(fdr, 0)} false "
                "discovery rate, because matched pairs are not similar enough beyond their non-matches. Nothing is "
                "listed.")
        return {"kind": "mismatches", "severity": "info", "text": text,
                "values": {"flagged": test.get("flagged"), "power": test.get("power"), "fdr": fdr}}
    flagged = int(test.get("flagged") or 0)
    if flagged == 0:
        text = (f"No suspected mismatches at a {format_percent(fdr, 0)} false discovery rate; a swapped report "
                f"would be flagged with probability {format_percent(test.get('power'))}.")
        severity = "info"
    else:
        text = (f"{flagged:,} of {format_value(test.get('units_tested'))} units ({unit}) look mismatched, their "
                f"report probably filed against another unit, at a {format_percent(fdr, 0)} false discovery rate "
                f"(estimated {format_percent(test.get('estimated_fdr'))}); a swapped report would be flagged with "
                f"probability {format_percent(test.get('power'))}. Check them first (listed under Suspected "
                "mismatches).")
        severity = "warning"
    return {"kind": "mismatches", "severity": severity, "text": text,
            "values": {"flagged": flagged, "estimated_fdr": test.get("estimated_fdr"), "power": test.get("power"),
                       "fdr": fdr}}


def _group_word(d: Mapping) -> str:
    unit = (d.get("unit") or {}).get("name")
    return "studies" if unit and "study" in str(unit).lower() else "pairs"


def _subgroup_findings(d: Mapping) -> list[dict]:
    """One warning per subgroup worse than the rest beyond its intervals (every metric where
    it is), and one line naming the subgroups that are better."""
    out, better = [], []
    groups = {str(g.get("group")): g for g in d.get("groups") or []}
    for c in d.get("contrasts") or []:
        label = str(c.get("group"))
        g = groups.get(label, {})
        significant = {k: t for k, t in (c.get("tests") or {}).items() if t.get("significant")}
        worse = {k: t for k, t in significant.items() if t["difference"] < 0}
        if significant and not worse:
            better.append(label)
        if not worse:
            continue
        parts = []
        for side in ("i2t_r1", "t2i_r1"):
            t = worse.get(side)
            if not t:
                continue
            within = as_finite((g.get("retrieval_within") or {}).get(side))
            lo, hi = interval_of(g.get("retrieval_whole_uncertainty") or {}, side)
            query, target = ("an image", "report") if side == "i2t_r1" else ("a report", "image")
            where = f" ({format_percent(within)} within {label})" if within is not None else ""
            parts.append(f"{query} finds its own {target} {format_percent(t['group'])}{_ci(lo, hi, True)} of the "
                         f"time against the whole archive{where}, against {format_percent(t['rest'])} for the other "
                         f"subgroups (p {_p_words(t.get('p_holm'))})")
        for key in ("sas_i2t", "sas_t2i", "cka"):
            t = worse.get(key)
            if t:
                lo, hi = interval_of(g.get("uncertainty") or {}, key)
                parts.append(f"{_NAMES[key]} {format_value(t['group'])}{_ci(lo, hi)} against {format_value(t['rest'])} "
                             f"(p {_p_words(t.get('p_holm'))})")
        text = (f"{label} ({format_value(g.get('n'))} pairs) is worse than the rest of the archive: " + "; ".join(parts)
                + " (Holm-corrected over the subgroups).")
        out.append({"kind": "subgroup", "severity": "warning", "text": text,
                    "values": {"group": c.get("group"),
                               "metrics": {k: {"group": t["group"], "rest": t["rest"], "p_holm": t.get("p_holm")}
                                           for k, t in worse.items()}}})
    if better:
        out.append({"kind": "subgroup", "severity": "info",
                    "text": f"Better than the rest of the archive on at least one metric (Holm-corrected p < 0.05): "
                            f"{', '.join(better)}.", "values": {"groups": better}})
    return out


def _p_words(p: Any) -> str:
    v = as_finite(p)
    if v is None:
        return "n/a"
    return "< 0.001" if v < 0.001 else f"= {format_p(v)}"


def _conditioning_findings(d: Mapping) -> list[dict]:
    out = []
    cond = d.get("conditioning") or {}
    for direction in ("i2t", "t2i"):
        c = cond.get(direction) or {}
        if not c.get("degenerate"):
            continue
        anchor, other = _ANCHOR[direction]
        name = _NAMES[f"sas_{direction}"]
        parts = []
        for b in c.get("blocks") or []:
            lo_mode, hi_mode = b["modes"]
            ev = b.get("eigenvalues") or [0.0]
            cut = ", across the top-q cut" if b.get("straddles_cut") else ""
            parts.append(f"modes {lo_mode}–{hi_mode} (eigenvalues {format_value(min(ev))} to "
                         f"{format_value(max(ev))}{cut})")
        unc = d.get("uncertainty") or {}
        slo, shi = interval_of(unc, f"sas_{direction}")
        se = as_finite((unc.get(f"sas_{direction}") or {}).get("se"))
        ci = c.get("companion_interval") or {}
        gap = abs((as_finite(c.get("sas")) or 0.0) - (as_finite(c.get("companion")) or 0.0))
        stands = se is not None and gap <= se
        text = (f"{name} is not well determined: among the {anchor} modes it keeps, " + " and ".join(parts)
                + f" have eigenvalues equal within their sampling error ({cond.get('se_method') or 'jackknife'} "
                f"standard errors), so which directions SAS weighs inside {'that block' if len(parts) == 1 else 'those blocks'} "
                f"is arbitrary. The rotation-invariant companion score is {format_value(c.get('companion'))}"
                f"{_ci(ci.get('ci_low'), ci.get('ci_high'))}, against {name} {format_value(c.get('sas'))}"
                f"{_ci(slo, shi)}"
                + (": the difference is within SAS's standard error, so its value stands." if stands else
                   ": read the companion score, and SAS's per-mode values inside the block(s) with care."))
        severity = "info" if stands else "warning"
        out.append({"kind": "conditioning", "severity": severity, "text": text,
                    "values": {"direction": direction, "sas": c.get("sas"), "companion": c.get("companion"),
                               "blocks": [b["modes"] for b in c.get("blocks") or []]}})
    return out


def _unmirrored_findings(d: Mapping) -> list[dict]:
    out = []
    cond = d.get("conditioning") or {}
    profiles = d.get("profiles") or {}
    for direction in ("i2t", "t2i"):
        prof = profiles.get(direction) or {}
        eig = [as_finite(v) or 0.0 for v in prof.get("eigenvalues") or []]
        rho = [abs(as_finite(v) or 0.0) for v in prof.get("rho") or []]
        c = cond.get(direction) or {}
        kept = int(c.get("kept") or 0)
        total = sum(eig) or 1.0
        if not eig or not kept:
            continue
        anchor, other = _ANCHOR[direction]
        blocks = {tuple(b["modes"]): b for b in c.get("blocks") or []}
        items = []
        covered = set()
        for (lo, hi), b in blocks.items():
            covered.update(range(lo, hi + 1))
            cc = b.get("canonical_correlations") or []
            mirrored = sum(1 for v in cc if v >= UNMIRRORED_RHO)
            if mirrored < len(cc):
                items.append((-(b.get("share_of_variance") or 0.0),
                              f"modes {lo}–{hi} ({format_percent(b.get('share_of_variance'))} of the {anchor}s' "
                              f"variance; the {other} mirror {mirrored} of its {len(cc)} directions, canonical "
                              f"correlations {', '.join(format_value(v) for v in cc[:4])}"
                              f"{', …' if len(cc) > 4 else ''})"))
        for k in range(min(kept, len(eig))):
            if (k + 1) in covered or rho[k] >= UNMIRRORED_RHO:
                continue
            items.append((-eig[k] / total, f"mode {k + 1} ({format_percent(eig[k] / total)} of the variance, "
                                           f"|ρ| = {format_value(rho[k])})"))
        if not items:
            continue
        items.sort(key=lambda t: t[0])
        shown = [t for _, t in items[:MAX_MODES_LISTED]]
        more = f" and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
        text = (f"{anchor.capitalize()} modes the {other} do not mirror (|ρ| < {UNMIRRORED_RHO:g}, among the modes "
                f"{_NAMES[f'sas_{direction}']} keeps): " + "; ".join(shown) + more + ".")
        out.append({"kind": "unmirrored_modes", "severity": "info", "text": text,
                    "values": {"direction": direction, "count": len(items)}})
    return out


def _chance_finding(d: Mapping) -> dict | None:
    a = d.get("alignment") or {}
    ret = d.get("retrieval") or {}
    parts, values = [], {}
    for key in ("sas_i2t", "sas_t2i", "cka"):
        chance = chance_of(d, key)
        if chance is None or as_finite(a.get(key)) is None:
            continue
        parts.append(f"{_NAMES[key]} {format_value(a[key])} against {format_value(chance)} by chance")
        values[key] = {"value": a[key], "chance": chance, "ideal": 1.0}
    for key in ("i2t_r1", "t2i_r1"):
        chance = chance_of(d, key)
        if chance is None or as_finite(ret.get(key)) is None:
            continue
        parts.append(f"{_NAMES[key]} {format_percent(ret[key])} against {format_percent(chance, 3)} by chance")
        values[key] = {"value": ret[key], "chance": chance, "ideal": 1.0}
    if not parts:
        return None
    repeats = ((d.get("chance") or {}).get("alignment") or {}).get("repeats")
    how = f" (mean of {repeats} random re-pairings of the archive)" if repeats else ""
    return {"kind": "chance", "severity": "info",
            "text": "Against chance: " + "; ".join(parts) + how + ". Each would be 1 (100%) if the texts mirrored "
                    "the images perfectly.", "values": values}


def _pooled_finding(d: Mapping) -> dict | None:
    a = d.get("alignment") or {}
    ok = [g for g in d.get("groups") or [] if g.get("status") == "ok" and isinstance(g.get("alignment"), Mapping)]
    if len(ok) < 2:
        return None
    for key in ("sas_i2t", "sas_t2i", "cka"):
        pooled = as_finite(a.get(key))
        values = [as_finite(g["alignment"].get(key)) for g in ok]
        if pooled is None or any(v is None for v in values):
            continue
        if all(v > pooled for v in values) or all(v < pooled for v in values):
            side = "above" if values[0] > pooled else "below"
            text = (f"Every subgroup's {_NAMES[key]} lies {side} the whole archive's ({format_value(pooled)}). "
                    "This is not a contradiction: the pooled covariance also holds the differences between the "
                    "subgroups' means (between-group structure), which the other modality may mirror more or less "
                    "than the structure within each subgroup; so the whole archive is not an average of its parts.")
            return {"kind": "pooled", "severity": "info", "text": text,
                    "values": {"metric": key, "pooled": pooled, "subgroups": values}}
    return None


def _drift_finding(d: Mapping) -> dict | None:
    tr = d.get("drift_trend")
    if not isinstance(tr, Mapping):
        return None
    periods = [g.get("group") for g in d.get("drift") or []]
    span = f"{periods[0]}–{periods[-1]}" if periods else "the periods"
    moved = [k for k in ("sas_i2t", "sas_t2i", "cka") if (tr.get(k) or {}).get("p_value", 1.0) < 0.05]
    per = "per period" if tr.get("x") == "period order" else "per unit of the period value"
    if moved:
        parts = [f"{_NAMES[k]} {format_value(tr[k]['first'])} → {format_value(tr[k]['last'])} (slope "
                 f"{format_value(tr[k]['slope'])} {per}, 95% interval {format_value(tr[k]['ci_low'])} to "
                 f"{format_value(tr[k]['ci_high'])}, p {_p_words(tr[k]['p_value'])})" for k in moved]
        return {"kind": "drift", "severity": "warning",
                "text": f"Alignment drifts over {span}: " + "; ".join(parts) + ".",
                "values": {k: tr[k] for k in moved}}
    k = "sas_i2t"
    t = tr.get(k) or {}
    return {"kind": "drift", "severity": "info",
            "text": (f"No trend over {span} ({tr.get('periods')} periods): {_NAMES[k]} slope {format_value(t.get('slope'))} "
                     f"{per}, 95% interval {format_value(t.get('ci_low'))} to {format_value(t.get('ci_high'))} "
                     f"(p {_p_words(t.get('p_value'))}); SAS(T→I) and CKA likewise without a significant trend."),
            "values": {key: tr.get(key) for key in ("sas_i2t", "sas_t2i", "cka")}}


def _imbalance_finding(d: Mapping) -> dict:
    verdict, significant = imbalance_verdict(d)
    a = d.get("alignment") or {}
    unc = d.get("uncertainty") or {}
    lo, hi = interval_of(unc, "sas_imbalance")
    p = ((unc.get("imbalance_test") or {}).get("p_value")) if isinstance(unc, Mapping) else None
    first = verdict.split(": ")[0].split(". ")[0].rstrip(".")
    text = (f"{first}: SAS(I→T) − SAS(T→I) = {format_value(a.get('sas_imbalance'))}{_ci(lo, hi)}, p "
            f"{_p_words(p)}. {IMBALANCE_SIGN}")
    return {"kind": "imbalance", "severity": "warning" if significant else "info", "text": text,
            "values": {"sas_imbalance": a.get("sas_imbalance"), "ci_low": lo, "ci_high": hi, "p_value": p}}


def _unit_finding(d: Mapping) -> dict | None:
    unit = d.get("unit") or {}
    if not unit:
        return None
    by = ("rows with one id form one unit" if unit.get("by") == "id" else "every pair is its own unit")
    notes = list(d.get("notes") or [])
    text = (f"Intervals and tests treat the {unit.get('name')} as the unit of uncertainty ({by}): "
            f"{format_value(unit.get('count'))} units in {format_value(unit.get('blocks'))} jackknife blocks."
            + (" Adapted to this archive: " + "; ".join(notes) + "." if notes else ""))
    return {"kind": "unit", "severity": "info", "text": text, "values": dict(unit, notes=notes)}


def findings(d: Mapping) -> list[dict]:
    """The findings of an audit dict, most actionable first: suspected mismatches,
    subgroups that differ from the rest, SAS's conditioning, the imbalance, the chance
    level, the unmirrored modes, drift, why subgroups can all lie on one side of the whole
    archive, and the unit of uncertainty.

    Parameters
    ----------
    d : dict
        ``AuditResult.to_dict()``.

    Returns
    -------
    list of dict
        ``kind``, ``severity``, ``text``, ``values``.

    Examples
    --------
    >>> import fastsas as fs
    >>> from fastsas.report.findings import findings
    >>> x, y = fs.synthetic.paired_embeddings(2000, 16, image_only_factors=2)
    >>> kinds = [f["kind"] for f in findings(fs.audit(x, y, retrieval="none").to_dict())]
    >>> kinds[0], "imbalance" in kinds, "chance" in kinds
    ('mismatches', True, True)
    """
    parts = ([_mismatch_finding(d)] + _subgroup_findings(d) + _conditioning_findings(d) + [_imbalance_finding(d),
             _chance_finding(d)] + _unmirrored_findings(d) + [_drift_finding(d), _pooled_finding(d), _unit_finding(d)])
    return [p for p in parts if p]

