"""The results of a gap sweep: :class:`GapSweep`, one :class:`GapPoint` per lambda."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fastsas.results import to_python

__all__ = ["GapPoint", "GapSweep", "LAM0_ROWS"]

# What the lambda = 0 point is computed on (said beside it in every output).
LAM0_ROWS = ("lambda = 0 is computed on the unit-normalised rows, so its SAS, CKA, CORAL, SVCCA and centroid "
             "distances differ from the audit's, which uses the rows as given (the sweep's baseline)")


@dataclass(frozen=True, eq=False)
class GapPoint:
    """The sweep at one lambda; printing it shows a summary.

    Attributes
    ----------
    lam : float
        The shift strength.
    gap_norm : float
        ``||mean(x') - mean(y')||`` of the shifted unit rows (equal to
        ``alignment["centroid_euclidean"]``).
    alignment : dict
        :func:`fastsas.alignment` of (x', y').
    retrieval : dict or None
        :func:`fastsas.retrieval` summary of (x', y'), None without retrieval.
    probe : dict or None
        None without labels, else ``accuracy``, ``auroc`` (fold means), ``accuracy_std``,
        ``auroc_std``, ``fold_accuracy``, ``fold_auroc`` (one value per fold) and
        ``converged``.

    Examples
    --------
    >>> import fastsas as fs
    >>> x, y = fs.synthetic.paired_embeddings(400, 16, seed=0)
    >>> point = fs.gap.sweep(x, y, lams=(0, 1), retrieval=False).point(1)
    >>> point.lam, point.gap_norm < 0.1, sorted(point.to_dict())
    (1.0, True, ['alignment', 'gap_norm', 'lam', 'probe', 'retrieval'])
    """

    lam: float
    gap_norm: float
    alignment: dict[str, Any]
    retrieval: dict[str, Any] | None
    probe: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        """The point as plain data: ``lam``, ``gap_norm``, ``alignment``, ``retrieval``, ``probe``."""
        return to_python({"lam": self.lam, "gap_norm": self.gap_norm, "alignment": self.alignment,
                          "retrieval": self.retrieval, "probe": self.probe})

    def __repr__(self) -> str:
        a = self.alignment
        parts = [f"lam={self.lam:g}", f"gap_norm={self.gap_norm:.4f}", f"SAS(I->T)={a['sas_i2t']:.4f}",
                 f"SAS(T->I)={a['sas_t2i']:.4f}"]
        if self.retrieval:
            parts.append(f"rsum={self.retrieval['rsum']:.2f}")
        if self.probe:
            parts.append(f"probe accuracy={self.probe['accuracy']:.4f}")
        return "GapPoint(" + ", ".join(parts) + ")"


@dataclass(frozen=True, eq=False)
class GapSweep:
    """Result of :func:`fastsas.gap.sweep`: one :class:`GapPoint` per lambda, in the order
    given; printing it shows a summary, ``.to_dict()`` is JSON-ready.

    Attributes
    ----------
    lams : tuple of float
        The lambdas.
    gap : ndarray, shape (d,), float64
        The gap vector the shifts used.
    baseline : dict
        :func:`fastsas.alignment` of the input as given (before unit normalisation; SAS,
        CKA, CORAL, SVCCA and the centroid distances depend on row norms, so they differ
        from the lambda = 0 point, while Delta-cos, RMG, the cone and the matched cosine do
        not).
    points : tuple of GapPoint
        One per lambda.
    best_lam : float or None
        The lambda with the highest probe accuracy (ties: the smaller lambda), None without
        labels.
    probe_gain : dict or None
        Whether `best_lam` beats lambda = 0 beyond the cross-validation spread: ``mean_gain``
        (mean per-fold accuracy difference), ``spread`` (their standard deviation),
        ``declared``, ``rule``; :attr:`declared_lam` is `best_lam` only when declared.
    settings : dict
        How it was computed: ``n``, ``dim``, ``dtype``, ``source``, ``chunk_rows``, ``topq``,
        ``ks``, ``gap_given``, ``backend``, ``probe`` (model, folds, cv, seed, classes) and
        ``definitions_version``.

    Examples
    --------
    >>> import fastsas as fs
    >>> x, y = fs.synthetic.paired_embeddings(400, 16, seed=0)
    >>> print(fs.gap.sweep(x, y, lams=(0, 1), retrieval=False))  # doctest: +ELLIPSIS
    GapSweep(n=400, dim=16, gap_norm=..., lams=(0.0, 1.0), gap_norm by lam=[..., ...], SAS(I->T) by lam=[..., ...], best_lam=None)
    """

    lams: tuple[float, ...]
    gap: np.ndarray
    baseline: dict[str, Any]
    points: tuple[GapPoint, ...]
    best_lam: float | None
    settings: dict[str, Any]
    probe_gain: dict[str, Any] | None = None

    @property
    def declared_lam(self) -> float | None:
        """The best lambda when it beats lambda = 0 beyond the probe's cross-validation
        spread, else None (lambda = 0, the unshifted rows, is as good)."""
        return self.best_lam if (self.probe_gain or {}).get("declared") else None

    def verdict(self) -> str | None:
        """The sweep's conclusion about the probe, in one sentence (None without labels)."""
        g = self.probe_gain
        if self.best_lam is None or g is None:
            return None
        if g.get("reference") is None:
            return f"best λ by probe accuracy: {self.best_lam:g} (no λ = 0 in the sweep to compare it against)"
        if g["declared"]:
            return (f"best λ = {self.best_lam:g}: probe accuracy {g['mean_gain']:+.4f} over λ = 0, beyond the "
                    f"cross-validation spread ({g['spread']:.4f})")
        if self.best_lam == 0.0:
            return "no λ beats λ = 0 (the unshifted rows) in probe accuracy"
        return (f"no λ beats λ = 0 beyond the cross-validation spread (best λ {self.best_lam:g}: "
                f"{g['mean_gain']:+.4f}, spread {g['spread']:.4f})")

    @property
    def gap_norm(self) -> float:
        """Norm of the gap of the unshifted data."""
        return float(np.linalg.norm(self.gap))

    def point(self, lam: float) -> GapPoint:
        """The point of `lam`; KeyError lists the lambdas."""
        for p in self.points:
            if p.lam == float(lam):
                return p
        raise KeyError(f"lam={lam} is not in this sweep; it has lams={self.lams}")

    def series(self, key: str) -> np.ndarray:
        """One number per lambda: ``"gap_norm"``, any alignment key (``"sas_sym"``), any
        retrieval key (``"rsum"``) or any probe key (``"accuracy"``, ``"auroc"``)."""
        if key == "gap_norm":
            return np.array([p.gap_norm for p in self.points])
        for part in ("alignment", "retrieval", "probe"):
            first = getattr(self.points[0], part)
            if first is not None and key in first:
                return np.array([getattr(p, part)[key] for p in self.points], dtype=np.float64)
        known = ["gap_norm"] + [k for part in ("alignment", "retrieval", "probe")
                                for k in (getattr(self.points[0], part) or {})]
        raise KeyError(f"{key!r} is not a metric of this sweep; known: {', '.join(known)}")

    def to_dict(self) -> dict[str, Any]:
        """The sweep as plain data: ``lams``, ``gap``, ``gap_norm``, ``baseline``, ``points``
        (each :meth:`GapPoint.to_dict`), ``best_lam``, ``probe_gain``, ``declared_lam``,
        ``verdict``, ``lam0_rows``, ``settings``."""
        return to_python({"lams": list(self.lams), "gap": self.gap, "gap_norm": self.gap_norm,
                          "baseline": self.baseline, "points": [p.to_dict() for p in self.points],
                          "best_lam": self.best_lam, "probe_gain": self.probe_gain,
                          "declared_lam": self.declared_lam, "verdict": self.verdict(),
                          "lam0_rows": LAM0_ROWS, "settings": self.settings})

    def __repr__(self) -> str:
        def listed(values: Any) -> str:
            return "[" + ", ".join(f"{v:.4f}" for v in values) + "]"

        parts = [f"n={self.settings.get('n')}", f"dim={self.settings.get('dim')}", f"gap_norm={self.gap_norm:.4f}",
                 f"lams={self.lams}", f"gap_norm by lam={listed(self.series('gap_norm'))}",
                 f"SAS(I->T) by lam={listed(self.series('sas_i2t'))}"]
        if self.points and self.points[0].retrieval:
            parts.append(f"rsum by lam={listed(self.series('rsum'))}")
        if self.best_lam is not None:
            parts.append(f"probe accuracy by lam={listed(self.series('accuracy'))}")
        parts.append(f"best_lam={self.best_lam}")
        return "GapSweep(" + ", ".join(parts) + ")"

