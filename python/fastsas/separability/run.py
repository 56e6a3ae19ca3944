"""`fs.separability`: every separability measure of one set of embeddings and its labels,
per subgroup, and the models x datasets table (docs/definitions.md, "Class separability")."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from fastsas import _core
from fastsas._labels import encode_labels
from fastsas._validate import as_embeddings, check_int, resolve_threads
from fastsas.neighbourhood import knn
from fastsas.separability.measures import (DEFAULT_SHRINKAGE, RowPass, fisher_ratio, knn_accuracy,
                                           pairwise_separations, silhouette_from_sums)
from fastsas.separability.probe import fit_linear_probe, stratified_sample
from fastsas.separability.state import ClassMoments

__all__ = ["SeparabilityResult", "euclidean_silhouette", "moment_summary", "separability", "separability_table"]

# z of a two-sided 95% normal interval.
_Z95 = 1.959963984540054


def _mean_interval(values: np.ndarray) -> list[float]:
    """mean -/+ z sd / sqrt(n) over rows (the normal approximation)."""
    n = values.shape[0]
    if n < 2:
        return [float("nan"), float("nan")]
    half = _Z95 * float(np.std(values, ddof=1)) / np.sqrt(n)
    mean = float(np.mean(values))
    return [float(mean - half), float(mean + half)]


def _accuracy(predicted: np.ndarray, codes: np.ndarray) -> dict[str, Any]:
    """Accuracy and balanced accuracy (the mean of the per-class recalls) with 95% normal
    intervals over rows; the balanced one's variance is sum_c r_c (1 - r_c) / n_c / C^2."""
    correct = (predicted == codes).astype(np.float64)
    classes, counts = np.unique(codes, return_counts=True)
    recall = np.array([float(np.mean(correct[codes == c])) for c in classes])
    balanced = float(np.mean(recall))
    half = _Z95 * float(np.sqrt(np.sum(recall * (1.0 - recall) / counts))) / classes.size
    return {"accuracy": float(correct.mean()), "balanced_accuracy": balanced,
            "interval": _mean_interval(correct), "balanced_interval": [balanced - half, balanced + half]}


def euclidean_silhouette(x: Any, codes: np.ndarray, n_classes: int, *, threads: int | None = None) -> np.ndarray:
    """Per-row Euclidean silhouette (n,), exact, from the core's blocked per-class distance
    sums (tiles of one GEMM; memory O(n C), never an n x n matrix)."""
    arr = as_embeddings(x, "embeddings")
    sums = _core.class_distance_sums(arr, np.ascontiguousarray(codes, dtype=np.int32), int(n_classes),
                                     threads=resolve_threads(threads))
    counts = np.bincount(codes, minlength=n_classes)
    return silhouette_from_sums(sums, np.asarray(codes, dtype=np.int64), counts)


def moment_summary(state: ClassMoments, row_pass: RowPass, lda_predicted: np.ndarray, cosine_s: np.ndarray,
                   codes: np.ndarray, classes: Sequence[Any], shrinkage: float) -> dict[str, Any]:
    """The summary entries of the moment measures (the state and its second pass): rows,
    classes, Fisher ratio, pairwise separations, held-out LDA, cosine silhouette, PCA."""
    blocks = state.blocks
    pairs = pairwise_separations(state, shrinkage)
    return {
        "rows": int(state.count), "dim": int(state.dim), "classes": [str(v) for v in classes],
        "class_counts": state.class_counts().tolist(), "shrinkage": float(shrinkage),
        "fisher_ratio": fisher_ratio(state, shrinkage),
        "pairwise": {k: np.asarray(v).tolist() for k, v in pairs.items()},
        "lda": dict(_accuracy(lda_predicted, codes), blocks=int(blocks),
                    block_accuracy=[float(np.mean((lda_predicted == codes)[b::blocks])) for b in range(blocks)]),
        "silhouette": {"cosine": float(np.mean(cosine_s)), "cosine_interval": _mean_interval(cosine_s)},
        "pca": {"explained_variance_ratio": row_pass.pca_explained.tolist(),
                "class_means": ((state.class_means() - row_pass.pca_mean) @ row_pass.pca_axes).tolist()},
    }


@dataclass
class SeparabilityResult:
    """What :func:`separability` returns: ``summary`` (JSON-ready dict) and the per-row arrays."""

    summary: dict[str, Any]
    codes: np.ndarray
    classes: list[Any]
    lda_predicted: np.ndarray
    knn_predicted: dict[int, np.ndarray]
    cosine_silhouettes: np.ndarray
    euclidean_silhouettes: np.ndarray | None
    pca: np.ndarray
    view: dict[str, Any] | None = None
    groups: dict[str, "SeparabilityResult"] = field(default_factory=dict)
    state: ClassMoments | None = None

    def __getitem__(self, key: str) -> Any:
        return self.summary[key]

    def to_dict(self, points: bool = False, max_points: int = 5000) -> dict[str, Any]:
        """The summary, with the subgroups' summaries and the 2-D view's method and rows;
        with `points`, the coordinates the report draws: PCA of a seeded stratified sample
        of at most `max_points` rows, and the view's sample."""
        out = dict(self.summary)
        if self.view is not None:
            out["view"] = {k: v for k, v in self.view.items() if k not in ("coordinates", "rows")}
        if points:
            drawn = stratified_sample(self.codes, max_points, int(self.summary["seed"]))
            out["points"] = {"pca": {"x": self.pca[drawn, 0].tolist(), "y": self.pca[drawn, 1].tolist(),
                                     "class": self.codes[drawn].tolist(), "drawn": int(drawn.size)}}
            if self.view is not None:
                coords = np.asarray(self.view["coordinates"])
                out["points"]["view"] = {"x": coords[:, 0].tolist(), "y": coords[:, 1].tolist(),
                                         "class": self.codes[self.view["rows"]].tolist(),
                                         "method": self.view["method"]}
        if self.groups:
            out["groups"] = {k: g.to_dict() for k, g in self.groups.items()}
        return out


def _two_d_view(arr: np.ndarray, codes: np.ndarray, rows: int, seed: int, method: str) -> dict[str, Any]:
    sample = stratified_sample(codes, rows, seed)
    data = arr[sample].astype(np.float64)
    used = method
    if method in ("auto", "umap"):
        try:
            import umap  # optional dependency
            coords = umap.UMAP(n_components=2, random_state=seed).fit_transform(data)
            used = "umap"
        except ImportError:
            if method == "umap":
                raise ImportError("view='umap' needs umap-learn: pip install umap-learn (or use view='tsne')") from None
            used = "tsne"
    if used == "tsne":
        from sklearn.manifold import TSNE
        perplexity = float(min(30.0, max(2.0, (sample.size - 1) / 3.0)))
        coords = TSNE(n_components=2, random_state=seed, init="pca", perplexity=perplexity).fit_transform(data)
    return {"method": used, "sample_rows": int(sample.size), "seed": seed, "rows": sample, "coordinates": coords}


def separability(embeddings: Any, labels: Any, *, ks: Sequence[int] = (1, 5, 10), shrinkage: float = DEFAULT_SHRINKAGE,
                 blocks: int = 5, chunk_rows: int = 65536, probe: bool = True, cv: int = 5, probe_rows: int = 20000,
                 euclidean: bool | None = None, euclidean_rows: int = 20000, view: str | None = None,
                 view_rows: int = 2000, groups: Any = None, seed: int = 0,
                 threads: int | None = None, precision: str = "auto") -> SeparabilityResult:
    """How well one set of embeddings separates its classes (docs/definitions.md, "Class separability").

    Parameters
    ----------
    embeddings : array_like, shape (n, d), float32/float64
        One modality's embeddings (no zero or non-finite rows).
    labels : array_like, shape (n,)
        A class label per row (any hashable values; at least 2 classes).
    ks : sequence of int, optional
        The k of the leave-one-out k-NN classifiers (cosine neighbours).
    shrinkage : float, optional
        alpha of the regularised within-class covariance (1 - alpha) Sw/n + alpha tr(Sw/n)/d I.
    blocks : int, optional
        Held-out blocks of the LDA (row i in block i % blocks).
    chunk_rows : int, optional
        Rows per chunk of the two streaming passes.
    probe : bool, optional
        Run the logistic-regression probe (`cv` stratified folds, `seed`) on a stratified
        sample of at most `probe_rows` rows.
    euclidean : bool or None, optional
        Compute the exact Euclidean silhouette (None: when n <= `euclidean_rows`; True on
        more rows uses a seeded stratified sample of `euclidean_rows` rows).
    view : {None, "auto", "umap", "tsne"}, optional
        A 2-D embedding of a stratified sample of `view_rows` rows (auto: UMAP when
        umap-learn is installed, else t-SNE). PCA of all rows is always computed.
    groups : array_like, shape (n,), optional
        A subgroup per row (modality, site, BurnedInAnnotation): the same analysis per group.
    seed : int, optional
        Seed of the probe folds, samples and views.
    threads : int, optional
        Threads of the neighbour and distance kernels.
    precision : {"auto", "float32", "int8", "bfloat16"}, default "auto"
        Tile precision of the k-NN neighbours (:func:`fastsas.knn`; the lists, and so the
        accuracies, are the same in every precision: the screens only make them faster;
        "auto" takes the cheapest on this data that the CPU has).

    Returns
    -------
    SeparabilityResult
        ``summary``: fisher_ratio, pairwise, lda, silhouette, knn, probe, pca (JSON-ready).

    Raises
    ------
    ValueError
        Bad shapes, fewer than 2 classes, a k not below n, non-finite or zero rows.

    Examples
    --------
    >>> import numpy as np, fastsas as fs
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([0, 1], 50)
    >>> x = rng.normal(size=(100, 8)) + 3.0 * labels[:, None]
    >>> r = fs.separability(x, labels, ks=(1, 3), probe=False)
    >>> r["knn"]["1"]["accuracy"] > 0.9
    True
    """
    arr = as_embeddings(embeddings, "embeddings", min_rows=3)
    n, d = arr.shape
    classes, codes32 = encode_labels(labels, "labels", n, item="class label", per="row", counted="entries")
    codes = codes32.astype(np.int64)
    if len(classes) < 2:
        raise ValueError(f"labels has a single class ({classes[0]!r}); separability needs at least 2 classes")
    if not np.all(np.isfinite(arr)):
        raise ValueError("embeddings has non-finite values (NaN or Inf); drop or repair those rows")
    if np.any(~np.any(arr != 0, axis=1)):
        raise ValueError("embeddings has zero rows (no direction for the cosine measures); drop them")
    ks = sorted({check_int(k, "ks", low=1, high=n - 1) for k in ks})
    if not 0.0 <= float(shrinkage) <= 1.0:
        raise ValueError(f"shrinkage must lie in [0, 1] (the weight of the scaled identity); got {shrinkage!r}")
    check_int(blocks, "blocks", low=2, high=n)
    check_int(chunk_rows, "chunk_rows", low=1)
    c = len(classes)

    def chunks():
        for start in range(0, n, chunk_rows):
            yield arr[start:start + chunk_rows], codes[start:start + chunk_rows]

    state = ClassMoments.from_chunks(chunks(), d, c, blocks)
    row_pass = RowPass(state, float(shrinkage)).run(chunks())
    lda_predicted, cosine_s, pca = row_pass.result()
    neighbours = knn(arr, topk=max(ks), threads=threads, precision=precision)
    knn_predicted = knn_accuracy(neighbours.index, codes, ks, c)

    summary = moment_summary(state, row_pass, lda_predicted, cosine_s, codes, classes, float(shrinkage))
    summary.update({
        "knn": {str(k): dict(_accuracy(p, codes), k=k) for k, p in knn_predicted.items()},
        "knn_precision": neighbours.precision,
        "seed": int(seed),
    })
    euclid = None
    if euclidean is None:
        euclidean = n <= euclidean_rows
    if euclidean:
        rows = stratified_sample(codes, euclidean_rows, seed)
        sub_codes = codes[rows]
        present, remapped = np.unique(sub_codes, return_inverse=True)
        euclid = euclidean_silhouette(arr[rows], remapped, present.size, threads=threads)
        summary["silhouette"].update(euclidean=float(np.mean(euclid)), euclidean_interval=_mean_interval(euclid),
                                     euclidean_rows=int(rows.size))
    if probe:
        rows = stratified_sample(codes, probe_rows, seed)
        fitted = fit_linear_probe(arr[rows].astype(np.float64), codes[rows], cv=cv, seed=seed)
        fitted.pop("predicted")
        summary["probe"] = fitted
    result = SeparabilityResult(summary, codes, list(classes), lda_predicted, knn_predicted, cosine_s, euclid, pca,
                                state=state)
    if view is not None:
        result.view = _two_d_view(arr, codes, view_rows, seed, view)
    if groups is not None:
        group_values, group_codes = encode_labels(groups, "groups", n, item="group", per="row", counted="entries")
        for g, value in enumerate(group_values):
            members = np.flatnonzero(group_codes == g)
            sub_labels = np.asarray(classes, dtype=object)[codes[members]]
            counts = np.unique(codes[members], return_counts=True)[1]
            if counts.size < 2 or members.size <= max(ks) or (probe and counts.min() < cv) or members.size < blocks:
                continue  # too small a group to analyse: listed in groups_skipped
            result.groups[str(value)] = separability(
                arr[members], sub_labels, ks=ks, shrinkage=shrinkage, blocks=blocks, chunk_rows=chunk_rows,
                probe=probe, cv=cv, probe_rows=probe_rows, euclidean=euclidean, euclidean_rows=euclidean_rows,
                view=None, seed=seed, threads=threads, precision=precision)
        summary["groups_skipped"] = [str(v) for v in group_values if str(v) not in result.groups]
    return result


def separability_table(results: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The models x datasets table: one row per (model, dataset) with the headline measures
    and their 95% intervals. `results[model][dataset]` is a SeparabilityResult or its dict."""
    rows = []
    for model, per_dataset in results.items():
        for dataset, result in per_dataset.items():
            s = result.to_dict() if hasattr(result, "to_dict") else result
            k_first = sorted(s["knn"], key=int)[0] if s["knn"] else None
            row = {"model": str(model), "dataset": str(dataset), "rows": s["rows"], "fisher_ratio": s["fisher_ratio"],
                   "lda_accuracy": s["lda"]["accuracy"], "lda_interval": s["lda"]["interval"],
                   "silhouette_cosine": s["silhouette"]["cosine"],
                   "silhouette_cosine_interval": s["silhouette"]["cosine_interval"]}
            if k_first is not None:
                row.update(knn_k=int(k_first), knn_accuracy=s["knn"][k_first]["accuracy"],
                           knn_interval=s["knn"][k_first]["interval"])
            if "probe" in s:
                row.update(probe_balanced_accuracy=s["probe"]["scores"]["balanced_accuracy"],
                           probe_balanced_accuracy_interval=s["probe"]["intervals"]["balanced_accuracy"],
                           probe_auroc=s["probe"]["scores"]["auroc"], probe_auroc_interval=s["probe"]["intervals"]["auroc"])
            rows.append(row)
    return rows
