"""The downstream probe of a gap sweep: a cross-validated logistic regression on the fused
features ``[x', y']`` (scikit-learn, imported when a probe runs)."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from fastsas._badrows import SHOWN
from fastsas._labels import encode_labels

__all__ = ["PROBE_MAX_ITER", "check_labels", "fit_probe"]

# The probe's solver budget: lbfgs on unit-norm features converges in far fewer.
PROBE_MAX_ITER = 5000


def check_labels(labels: Any, n: int, cv: int) -> tuple[np.ndarray, list[Any]]:
    """Integer class codes 0..k-1 (int64, one per pair) and the class values; every class
    needs at least `cv` members (stratified folds)."""
    classes, codes = encode_labels(labels, "labels", n, item="class label", per="pair", counted="entries")
    counts = np.bincount(codes, minlength=len(classes))
    if len(classes) < 2:
        raise ValueError(f"labels has a single class ({classes[0]!r}); a probe needs at least 2 classes")
    small = [(c, int(k)) for c, k in zip(classes, counts) if k < cv]
    if small:
        listed = ", ".join(f"{c!r} ({k})" for c, k in small[:SHOWN]) + (", ..." if len(small) > SHOWN else "")
        least = int(np.min(counts))
        fix = (f"use cv={least} or fewer folds" if least >= 2
               else "drop or merge the classes with a single member")
        raise ValueError(
            f"labels: {len(small)} class(es) have fewer members than cv={cv} folds: {listed}; "
            f"stratified folds need every class in every fold, so {fix}"
        )
    return codes.astype(np.int64), classes


def fit_probe(features: np.ndarray, codes: np.ndarray, n_classes: int, cv: int, seed: int,
              on_fold: Any = None) -> dict[str, Any]:
    """Cross-validated logistic-regression probe: mean accuracy and macro one-vs-rest AUROC
    (`on_fold()` is called after each fold)."""
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import roc_auc_score
        from sklearn.model_selection import StratifiedKFold
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        raise ImportError("the linear probe needs scikit-learn: pip install scikit-learn") from None
    accuracy, auroc, iterations = [], [], []
    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
    for train, test in folds.split(np.zeros((codes.shape[0], 1)), codes):
        clf = LogisticRegression(max_iter=PROBE_MAX_ITER)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence is reported in the result instead
            clf.fit(features[train], codes[train])
        proba = clf.predict_proba(features[test])
        accuracy.append(float(np.mean(clf.classes_[np.argmax(proba, axis=1)] == codes[test])))
        if n_classes == 2:
            auroc.append(float(roc_auc_score(codes[test], proba[:, 1])))
        else:
            auroc.append(float(roc_auc_score(codes[test], proba, multi_class="ovr", average="macro",
                                             labels=clf.classes_)))
        iterations.append(int(np.max(clf.n_iter_)))
        if on_fold is not None:
            on_fold()
    return {
        "accuracy": float(np.mean(accuracy)),
        "accuracy_std": float(np.std(accuracy)),
        "auroc": float(np.mean(auroc)),
        "auroc_std": float(np.std(auroc)),
        "fold_accuracy": accuracy,
        "fold_auroc": auroc,
        "converged": all(i < PROBE_MAX_ITER for i in iterations),
    }
