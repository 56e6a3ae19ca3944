"""`fs.overlay_bias`: how far text burned into images moves their embeddings, and what it
does to the classes (docs/definitions.md, "Class separability", overlaid-text bias)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fastsas._labels import encode_labels
from fastsas._validate import as_embeddings
from fastsas.embedding.pipeline import FRAME_COLUMN, IMAGE_COLUMN, overlay_record
from fastsas.gap.probe import PROBE_MAX_ITER
from fastsas.neighbourhood import knn
from fastsas.separability.measures import DEFAULT_SHRINKAGE, knn_accuracy
from fastsas.separability.run import separability
from fastsas.store import open_source

__all__ = ["overlay_bias"]

# The measures whose change (overlaid - clean) is reported.
_CHANGED = (("fisher_ratio",), ("lda", "accuracy"), ("silhouette", "cosine"), ("silhouette", "euclidean"),
            ("probe", "scores", "balanced_accuracy"), ("probe", "scores", "auroc"))


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _images(obj: Any, name: str) -> tuple[np.ndarray, dict[str, np.ndarray], Any]:
    """(image embeddings, metadata, the source or None) of an array or a store / source."""
    if isinstance(obj, np.ndarray) or (hasattr(obj, "__array__") and not hasattr(obj, "arrays")):
        return as_embeddings(obj, name, min_rows=3), {}, None
    source = open_source(obj) if not hasattr(obj, "arrays") else obj
    x, _ = source.arrays()
    return as_embeddings(np.asarray(x), name, min_rows=3), source.metadata(), source


def _dig(d: dict, path: Sequence[str]) -> float | None:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return float(d)


def _probe_flips(clean: np.ndarray, overlaid: np.ndarray, codes: np.ndarray, cv: int, seed: int) -> float:
    """Share of rows whose probe prediction differs: per stratified fold, a probe fitted to the
    clean training rows predicts the clean and the overlaid test rows."""
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    flipped = np.zeros(codes.shape[0], dtype=bool)
    for train, test in StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed).split(clean, codes):
        clf = LogisticRegression(max_iter=PROBE_MAX_ITER)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(clean[train], codes[train])
        flipped[test] = clf.predict(clean[test]) != clf.predict(overlaid[test])
    return float(flipped.mean())


def overlay_bias(clean: Any, overlaid: Any, labels: Any, *, text_embedding: Any = None, ks: Sequence[int] = (1, 5, 10),
                 shrinkage: float = DEFAULT_SHRINKAGE, probe: bool = True, cv: int = 5, seed: int = 0,
                 threads: int | None = None) -> dict[str, Any]:
    """How much text overlaid on the images moves their embeddings (docs/definitions.md,
    "Class separability", overlaid-text bias).

    Parameters
    ----------
    clean, overlaid : array_like (n, d) or embedding store (path or open source)
        The same images embedded without and with the overlay, row i the same image
        (stores written by ``fastsas embed`` are checked to list the same image and frame
        in every row).
    labels : array_like (n,) or str
        Class labels, or the name of a metadata column of `clean`.
    text_embedding : array_like (d,), optional
        The embedding of the overlaid string by the same model's text tower; by default
        the one ``fastsas embed --overlay`` kept in the overlaid store (none: no pull measured).
    ks, shrinkage, probe, cv, seed, threads
        As in :func:`fastsas.separability`.

    Returns
    -------
    dict
        ``shift`` (cosine shift mean/median/max, its share of the between-class distance),
        ``knn_flips`` (per k), ``probe_flips``, ``separability`` (clean, overlaid, change),
        ``pull`` (toward the overlay text; absent without a text embedding).

    Raises
    ------
    ValueError
        Different shapes, rows that are not the same images, a missing label column.

    Examples
    --------
    >>> import numpy as np, fastsas as fs
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([0, 1], 40)
    >>> x = rng.normal(size=(80, 8)) + 2.0 * labels[:, None]
    >>> fs.overlay_bias(x, x.copy(), labels, probe=False)["shift"]["mean"]
    0.0
    """
    x, meta_clean, _ = _images(clean, "clean")
    z, meta_over, source_over = _images(overlaid, "overlaid")
    if x.shape != z.shape:
        raise ValueError(f"clean {x.shape} and overlaid {z.shape} must be the same images embedded by the same model")
    for column in (IMAGE_COLUMN, FRAME_COLUMN):
        if column in meta_clean and column in meta_over and not np.array_equal(meta_clean[column], meta_over[column]):
            raise ValueError(f"clean and overlaid list different {column!r} values row by row; embed the same images "
                             "in the same order (the same --images and --image-id) for both stores")
    if isinstance(labels, str):
        if labels not in meta_clean:
            raise ValueError(f"labels {labels!r}: no such metadata column of clean (available: "
                             f"{', '.join(sorted(meta_clean)) or 'none'})")
        labels = meta_clean[labels]
    classes, codes32 = encode_labels(labels, "labels", x.shape[0], item="class label", per="row", counted="entries")
    codes = codes32.astype(np.int64)
    ux, uz = _unit(x), _unit(z)
    # 1 - cos(x, z) as |u_x - u_z|^2 / 2: the same number, exactly 0 for equal rows and
    # without the cancellation of 1 - u_x . u_z for small shifts.
    diff = ux - uz
    shift = 0.5 * np.einsum("ij,ij->i", diff, diff)
    means = np.stack([x[codes == c].astype(np.float64).mean(axis=0) for c in range(len(classes))])
    um = _unit(means)
    pairs = [(a, b) for a in range(len(classes)) for b in range(a + 1, len(classes))]
    between = float(np.mean([1.0 - um[a] @ um[b] for a, b in pairs])) if pairs else float("nan")
    out: dict[str, Any] = {
        "rows": int(x.shape[0]), "classes": [str(c) for c in classes],
        "shift": {"mean": float(shift.mean()), "median": float(np.median(shift)), "max": float(shift.max()),
                  "between_class_cosine_distance": between,
                  "share_of_between_class": float(shift.mean() / between) if between > 0 else float("nan")},
    }
    k_max = max(ks)
    flips_clean = knn_accuracy(knn(x, topk=k_max, threads=threads).index, codes, ks, len(classes))
    flips_over = knn_accuracy(knn(z, topk=k_max, threads=threads).index, codes, ks, len(classes))
    out["knn_flips"] = {str(k): float(np.mean(flips_clean[k] != flips_over[k])) for k in flips_clean}
    if probe:
        out["probe_flips"] = _probe_flips(x.astype(np.float64), z.astype(np.float64), codes, cv, seed)
    options = dict(ks=ks, shrinkage=shrinkage, probe=probe, cv=cv, seed=seed, threads=threads)
    a = separability(x, labels, **options).to_dict()
    b = separability(z, labels, **options).to_dict()
    change = {}
    for path in _CHANGED:
        va, vb = _dig(a, path), _dig(b, path)
        if va is not None and vb is not None:
            change[".".join(path)] = vb - va
    for k in a["knn"]:
        change[f"knn.{k}.accuracy"] = b["knn"][k]["accuracy"] - a["knn"][k]["accuracy"]
    out["separability"] = {"clean": a, "overlaid": b, "change": change}
    overlays: list[dict] = []
    if text_embedding is None and source_over is not None and hasattr(source_over, "notes"):
        overlays, text_embedding = overlay_record(source_over)
    out["overlays"] = overlays
    if text_embedding is not None:
        t = _unit(np.asarray(text_embedding, dtype=np.float64).reshape(-1))
        if t.shape[0] != x.shape[1]:
            raise ValueError(f"text_embedding has {t.shape[0]} values; the embeddings have dim {x.shape[1]}")
        before, after = ux @ t, uz @ t
        out["pull"] = {"clean_similarity": float(before.mean()), "overlaid_similarity": float(after.mean()),
                       "change": float((after - before).mean()), "share_rows_closer": float(np.mean(after > before))}
    return out
