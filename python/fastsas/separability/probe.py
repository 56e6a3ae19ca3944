"""The linear probe of the separability analysis: scikit-learn logistic regression under
stratified K-fold cross-validation with a fixed seed; accuracy, balanced accuracy and macro
one-vs-rest AUROC of the pooled out-of-fold predictions, with percentile-bootstrap intervals
over rows (scikit-learn imported when a probe runs)."""
from __future__ import annotations

from typing import Any

import numpy as np

from fastsas.gap.probe import PROBE_MAX_ITER, fold_probabilities

__all__ = ["probe_scores", "fit_linear_probe", "stratified_sample"]


def stratified_sample(codes: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted row indices of a seeded sample of `size` rows (all rows when n <= size) in
    which each class keeps its share: floor(size n_c / n) rows, the rows left over going to
    the largest remainders (ties: smaller class code), and at least min(n_c, 2) per class."""
    n = codes.shape[0]
    if n <= size:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(codes, return_counts=True)
    exact = size * counts / n
    take = np.floor(exact).astype(np.int64)
    order = np.lexsort((classes, -(exact - take)))
    take[order[: size - int(take.sum())]] += 1
    take = np.minimum(counts, np.maximum(take, np.minimum(counts, 2)))
    picked = [rng.choice(np.flatnonzero(codes == c), size=int(t), replace=False) for c, t in zip(classes, take)]
    return np.sort(np.concatenate(picked))


def probe_scores(codes: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro one-vs-rest AUROC of class probabilities."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    predicted = classes[np.argmax(proba, axis=1)]
    present = np.unique(codes)
    if classes.size == 2:
        auroc = float(roc_auc_score(codes, proba[:, 1])) if present.size == 2 else float("nan")
    elif present.size == classes.size:
        auroc = float(roc_auc_score(codes, proba, multi_class="ovr", average="macro", labels=classes))
    else:
        auroc = float("nan")
    return {"accuracy": float(np.mean(predicted == codes)),
            "balanced_accuracy": float(balanced_accuracy_score(codes, predicted)), "auroc": auroc}


def fit_linear_probe(features: np.ndarray, codes: np.ndarray, *, cv: int = 5, seed: int = 0,
                     bootstrap: int = 200, level: float = 0.95) -> dict[str, Any]:
    """Out-of-fold logistic-regression probabilities, the three scores, their bootstrap
    intervals (rows resampled with replacement, `bootstrap` times, seeded) and per-fold scores."""
    classes = np.unique(codes)
    least = int(np.min(np.bincount(codes)[classes]))
    if classes.size < 2:
        raise ValueError("labels has a single class; a probe needs at least 2 classes")
    if least < cv:
        raise ValueError(f"labels: the smallest class has {least} rows, fewer than cv={cv} folds; use cv={max(least, 2)} "
                         "or fewer folds, or merge the small classes")
    proba = np.zeros((codes.shape[0], classes.size))
    folds, converged = [], True
    for test, fold_proba, _, n_iter in fold_probabilities(features, codes, cv, seed):
        converged &= n_iter < PROBE_MAX_ITER
        proba[test] = fold_proba
        folds.append(probe_scores(codes[test], fold_proba, classes))
    scores = probe_scores(codes, proba, classes)
    rng = np.random.default_rng(seed)
    draws = {k: [] for k in scores}
    for _ in range(bootstrap):
        rows = rng.integers(0, codes.shape[0], codes.shape[0])
        for k, v in probe_scores(codes[rows], proba[rows], classes).items():
            draws[k].append(v)
    tail = (1.0 - level) / 2.0
    intervals = {k: [float(np.nanquantile(v, tail)), float(np.nanquantile(v, 1.0 - tail))] for k, v in draws.items()}
    return {"scores": scores, "intervals": intervals, "interval_level": level, "interval_over": "rows (bootstrap)",
            "bootstrap": bootstrap, "folds": folds, "cv": cv, "seed": seed, "rows": int(codes.shape[0]),
            "converged": converged, "predicted": classes[np.argmax(proba, axis=1)]}
