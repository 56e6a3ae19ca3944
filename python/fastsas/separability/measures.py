"""The separability measures computed from a :class:`ClassMoments` state and a second pass
over the rows (docs/definitions.md, "Class separability")."""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from fastsas.separability.state import ClassMoments

__all__ = ["DEFAULT_SHRINKAGE", "RowPass", "fisher_ratio", "knn_accuracy", "pairwise_separations",
           "regularised_within", "silhouette_from_sums"]

# The regularisation of the within-class covariance (Fisher ratio, pairwise separations, LDA):
# (1 - alpha) Sigma_w + alpha (trace(Sigma_w) / d) I, scikit-learn's fixed `shrinkage`.
DEFAULT_SHRINKAGE = 1e-2


def regularised_within(state: ClassMoments, shrinkage: float, leave_out: int | None = None) -> np.ndarray:
    """(1 - a) Sw/n + a (trace(Sw/n)/d) I over the kept blocks."""
    counts, _, within = state._pooled(leave_out)
    cov = within / max(int(counts.sum()), 1)
    return (1.0 - shrinkage) * cov + shrinkage * (np.trace(cov) / state.dim) * np.eye(state.dim)


def _solve(cov: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """cov^-1 rhs; the minimum-norm least-squares solution when cov is singular (a class
    structure without within-class spread, or shrinkage 0 on too few rows)."""
    try:
        return np.linalg.solve(cov, rhs)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(cov, rhs, rcond=None)[0]


def fisher_ratio(state: ClassMoments, shrinkage: float = DEFAULT_SHRINKAGE) -> float:
    """trace(Sigma_alpha^-1 Sigma_b), Sigma_b = sum_c (n_c/n)(mu_c - mu)(mu_c - mu)^T."""
    counts = state.class_counts().astype(np.float64)
    present = counts > 0
    means = state.class_means()[present]
    weights = counts[present] / counts.sum()
    grand = weights @ means
    diff = means - grand
    between = (diff * weights[:, None]).T @ diff
    return float(np.trace(_solve(regularised_within(state, shrinkage), between)))


def pairwise_separations(state: ClassMoments, shrinkage: float = DEFAULT_SHRINKAGE) -> dict[str, np.ndarray]:
    """Per pair of classes: squared Mahalanobis distance of the means under the pooled
    regularised covariance, Euclidean and cosine distance of the means; per class: spread,
    nearest class (by Mahalanobis) and its distance."""
    means = state.class_means()
    cov = regularised_within(state, shrinkage)
    present = state.class_counts() > 0
    c = state.n_classes
    mahalanobis = np.full((c, c), np.nan)
    idx = np.flatnonzero(present)
    m = means[idx]
    solved = _solve(cov, m.T).T  # Sigma^-1 mu_c
    quad = np.einsum("ij,ij->i", m, solved)
    cross = m @ solved.T
    mahalanobis[np.ix_(idx, idx)] = np.maximum(quad[:, None] + quad[None, :] - 2.0 * cross, 0.0)
    np.fill_diagonal(mahalanobis, 0.0)
    diff = means[:, None, :] - means[None, :, :]
    euclidean = np.sqrt(np.einsum("abk,abk->ab", diff, diff))
    norms = np.linalg.norm(means, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = 1.0 - (means @ means.T) / np.outer(norms, norms)
    masked = mahalanobis + np.where(np.eye(c, dtype=bool), np.inf, 0.0)
    nearest = np.where(present, np.argmin(np.nan_to_num(masked, nan=np.inf), axis=1), -1) if c > 1 else np.full(c, -1)
    nearest_distance = np.array([masked[a, nearest[a]] if nearest[a] >= 0 else np.nan for a in range(c)])
    return {"mahalanobis_squared": mahalanobis, "euclidean": euclidean, "cosine": cosine,
            "spread": state.class_spreads(), "nearest_class": nearest, "nearest_mahalanobis_squared": nearest_distance}


def silhouette_from_sums(sums: np.ndarray, codes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per-row silhouette from (m, C) sums of distances to every class (the own class's sum
    excludes the row itself): a = own sum / (n_own - 1), b = min over other non-empty classes
    of sum / n_c, s = (b - a) / max(a, b) (0 when both are 0, and for a class of one row)."""
    m = codes.shape[0]
    own_count = counts[codes].astype(np.float64)
    rows = np.arange(m)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = sums[rows, codes] / (own_count - 1.0)
        others = sums / counts[None, :].astype(np.float64)
    others[rows, codes] = np.inf
    others[:, counts == 0] = np.inf
    b = others.min(axis=1)
    denom = np.maximum(a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(denom > 0, (b - a) / np.where(denom > 0, denom, 1.0), 0.0)
    return np.where(own_count > 1, s, 0.0)


class RowPass:
    """The second pass: per row, the held-out-block LDA prediction, the cosine silhouette,
    and the 2-D PCA coordinates, from a finished :class:`ClassMoments` state."""

    def __init__(self, state: ClassMoments, shrinkage: float = DEFAULT_SHRINKAGE) -> None:
        self.state = state
        self.counts = state.class_counts()
        self.unit_sums = state.class_unit_sums()
        self.models = []
        for b in range(state.blocks):
            counts, _, _ = state._pooled(b)
            present = counts > 0
            means = state.class_means(b)
            cov = regularised_within(state, shrinkage, b)
            coef = np.zeros_like(means)
            coef[present] = _solve(cov, means[present].T).T
            intercept = np.full(state.n_classes, -np.inf)
            intercept[present] = (-0.5 * np.einsum("ij,ij->i", means[present], coef[present])
                                  + np.log(counts[present] / counts.sum()))
            self.models.append((coef, intercept))
        mean, cov = state.covariance()
        values, vectors = np.linalg.eigh(cov)
        order = np.argsort(values)[::-1]
        self.pca_mean = mean
        self.pca_axes = vectors[:, order[:2]]
        self.pca_explained = values[order[:2]] / max(float(values.sum()), np.finfo(float).tiny)
        self.predictions: list[np.ndarray] = []
        self.silhouettes: list[np.ndarray] = []
        self.coordinates: list[np.ndarray] = []
        self.next_row = 0

    def update(self, x: Any, codes: Any) -> None:
        x64 = np.asarray(x, dtype=np.float64)
        codes = np.asarray(codes, dtype=np.int64)
        m = x64.shape[0]
        blocks = self.state.blocks
        prediction = np.empty(m, dtype=np.int64)
        for b, (coef, intercept) in enumerate(self.models):
            # Rows of block b in this chunk: every blocks-th from the first whose global
            # position is b mod blocks (a strided view BLAS reads without a copy).
            first = (b - self.next_row) % blocks
            if first < m:
                prediction[first::blocks] = np.argmax(x64[first::blocks] @ coef.T + intercept, axis=1)
        norms = np.sqrt(np.einsum("ij,ij->i", x64, x64))
        inverse_norms = 1.0 / np.where(norms > 0, norms, 1.0)
        dots = (x64 @ self.unit_sums.T) * inverse_norms[:, None]  # u_i . (class sums of unit rows)
        sums = self.counts[None, :] - dots  # sum over the class of (1 - u_i . u_j)
        rows = np.arange(m)
        sums[rows, codes] -= 1.0 - (norms * inverse_norms) ** 2  # the row itself (1 - u_i . u_i)
        self.predictions.append(prediction)
        self.silhouettes.append(silhouette_from_sums(sums, codes, self.counts))
        self.coordinates.append(((x64 - self.pca_mean) @ self.pca_axes).astype(np.float32))
        self.next_row += m

    def run(self, chunks: Iterable[tuple[Any, Any]]) -> "RowPass":
        for x, codes in chunks:
            self.update(x, codes)
        return self

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(LDA predictions (n,), cosine silhouettes (n,), PCA coordinates (n, 2))."""
        cat = (lambda parts, shape: np.concatenate(parts) if parts else np.zeros(shape))
        return (cat(self.predictions, (0,)).astype(np.int64), cat(self.silhouettes, (0,)),
                cat(self.coordinates, (0, 2)))


def knn_accuracy(index: np.ndarray, codes: np.ndarray, ks: Iterable[int], n_classes: int) -> dict[int, np.ndarray]:
    """Leave-one-out k-NN predictions for every k from the (n, K) neighbour lists (best first,
    self excluded): the majority class of the first k; a tie of votes goes to the smallest
    class code."""
    n = codes.shape[0]
    votes = np.zeros((n, n_classes), dtype=np.int64)
    rows = np.arange(n)
    wanted = sorted(set(int(k) for k in ks))
    out: dict[int, np.ndarray] = {}
    for j in range(max(wanted)):
        votes[rows, codes[index[:, j]]] += 1  # one entry per row: no repeated index
        if j + 1 in wanted:
            out[j + 1] = np.argmax(votes, axis=1)
    return out
