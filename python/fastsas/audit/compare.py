"""Several archives side by side (:func:`compare`): each archive's metrics with its
intervals and, when the archives hold the same pairs (one dataset embedded by several
models), paired intervals of the differences from the first archive: a delete-a-block
jackknife over the same blocks in every archive (docs/definitions.md, "Comparing archives")."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from fastsas._multiple_tests import adjust_pvalues
from fastsas.audit.intervals import paired_difference

__all__ = ["COMPARED", "compare", "same_ids"]

# Metrics with intervals (and paired differences); the others are shown as values.
COMPARED = ("sas_i2t", "sas_t2i", "sas_imbalance", "cka", "sas_companion_i2t", "sas_companion_t2i", "i2t_r1",
            "t2i_r1")
POINT_ONLY = ("svcca", "delta_cos", "rmg", "matched_cosine", "rsum")


def same_ids(a: Any, b: Any) -> bool:
    """Whether two id columns name the same rows in the same order (values compared as the
    strings they print as, so 7 and "7" are one id).

    Examples
    --------
    >>> from fastsas.audit.compare import same_ids
    >>> same_ids(["a", "b"], ["a", "b"]), same_ids([1, 2], ["1", "2"]), same_ids([1, 2], [2, 1])
    (True, True, False)
    """
    if a is None or b is None:
        return False
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and bool(np.all(a.astype(str) == b.astype(str)))


def _dict(result: Any) -> Mapping:
    return result.to_dict() if hasattr(result, "to_dict") else result


def _entry(d: Mapping, key: str) -> tuple[dict | None, list | None]:
    """(value and interval, leave-one-block-out values) of a compared metric of an audit dict."""
    unc = d.get("uncertainty") or {}
    reps = (unc.get("replicates") or {}).get(key)
    if key in ("i2t_r1", "t2i_r1"):
        u = (unc.get("retrieval") or {}).get(key)
        return ((dict((k, u[k]) for k in ("value", "se", "ci_low", "ci_high")) if u else None),
                (u or {}).get("replicates"))
    u = unc.get(key)
    if not isinstance(u, Mapping):
        return None, None
    return {k: u[k] for k in ("value", "se", "ci_low", "ci_high")}, reps


def compare(results: Sequence[Any], names: Sequence[str], same_pairs: bool) -> dict:
    """Compare audited archives: per archive every compared metric with its 95% interval,
    and with `same_pairs` the paired difference of each archive from the first.

    Parameters
    ----------
    results : sequence of AuditResult or dict
        One audit per archive (e.g. :func:`fastsas.audit` with ``retrieval="whole"``).
    names : sequence of str
        The archives' names (file names, model names).
    same_pairs : bool
        Whether the archives hold the same pairs in the same order (checked by the caller,
        e.g. by their id columns); the differences are paired only then, and only when every
        audit used the same units and jackknife blocks.

    Returns
    -------
    dict
        ``archives`` (per archive: ``name``, ``n``, ``dim``, ``unit``, ``metrics``: per key
        ``value``, ``se``, ``ci_low``, ``ci_high``; ``values``: point-only metrics),
        ``same_pairs``, ``paired`` (whether differences were computed, and why not),
        ``differences`` (per other archive: ``name``, ``reference``, per key ``difference``,
        ``se``, ``ci_low``, ``ci_high``, ``t``, ``df``, ``p_value``, ``p_holm``), ``method``.

    Examples
    --------
    >>> import fastsas as fs
    >>> from fastsas.audit.compare import compare
    >>> x, y = fs.synthetic.paired_embeddings(2000, 16, image_only_factors=2)
    >>> a = fs.audit(x, y, retrieval="whole", chance_repeats=0, mismatch_fdr=None)
    >>> b = fs.audit(x, y + 0.5, retrieval="whole", chance_repeats=0, mismatch_fdr=None)
    >>> out = compare([a, b], ["a", "b"], same_pairs=True)
    >>> out["paired"]["done"], round(out["differences"][0]["metrics"]["cka"]["difference"], 6) == round(b.alignment["cka"] - a.alignment["cka"], 6)
    (True, True)
    """
    ds = [_dict(r) for r in results]
    if len(ds) != len(names):
        raise ValueError(f"give one name per result: {len(names)} names for {len(ds)} results")
    archives = []
    for d, name in zip(ds, names):
        metrics = {}
        for key in COMPARED:
            entry, _ = _entry(d, key)
            if entry is not None:
                metrics[key] = entry
        values = {k: (d.get("alignment") or {}).get(k) for k in POINT_ONLY if k in (d.get("alignment") or {})}
        if d.get("retrieval"):
            values["rsum"] = d["retrieval"].get("rsum")
        archives.append({"name": name, "n": d.get("n"), "dim": d.get("dim"), "unit": d.get("unit"),
                         "metrics": metrics, "values": values})
    out: dict[str, Any] = {"archives": archives, "same_pairs": bool(same_pairs),
                           "method": "delete-a-block jackknife over the same blocks in every archive; two-sided t "
                                     "test of no difference (blocks - 1 degrees of freedom), Holm's correction over "
                                     "the archives compared with the first"}
    units = [(d.get("unit") or {}) for d in ds]
    if not same_pairs:
        out["paired"] = {"done": False, "why": "the archives are not known to hold the same pairs (give them the "
                                               "same id column, or --paired)"}
        out["differences"] = []
        return out
    if len({(u.get("count"), u.get("blocks"), d.get("n")) for u, d in zip(units, ds)}) != 1:
        out["paired"] = {"done": False, "why": "the audits used different units or jackknife blocks"}
        out["differences"] = []
        return out
    out["paired"] = {"done": True, "blocks": units[0].get("blocks"), "unit": units[0].get("name")}
    ref = ds[0]
    diffs = []
    for d, name in zip(ds[1:], names[1:]):
        row = {"name": name, "reference": names[0], "metrics": {}}
        for key in COMPARED:
            (a, ra), (b, rb) = _entry(ref, key), _entry(d, key)
            if a is None or b is None or ra is None or rb is None or len(ra) != len(rb):
                continue
            ci = paired_difference(b["value"], a["value"], rb, ra)  # block b left out of both
            row["metrics"][key] = {"difference": ci["value"], **{k: ci[k] for k in ("se", "ci_low", "ci_high", "t",
                                                                                     "df", "p_value")}}
        diffs.append(row)
    for key in COMPARED:
        having = [r["metrics"][key] for r in diffs if key in r["metrics"]]
        for m, p in zip(having, adjust_pvalues([m["p_value"] for m in having], "holm").tolist()):
            m["p_holm"] = p
    out["differences"] = diffs
    return out
