"""The neighbourhood family (docs/definitions.md, "Neighbourhood family"): exact within-modality
nearest neighbours by cosine, and the alignment metrics of the "platonic representation" line of
work built from them (mutual k-NN, cycle k-NN, LCS k-NN, edit-distance k-NN, CKNNA), at any n:
the neighbours come from tiles of one GEMM in the C++ core, never an n x n matrix.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fastsas import _core
from fastsas._badrows import bad_rows_error
from fastsas._validate import as_embeddings, check_tile_precision, resolve_threads

__all__ = ["HsicTerms", "NeighbourhoodResult", "Neighbours", "knn", "neighbourhood", "neighbourhood_scores"]

# The metrics of a NeighbourhoodResult, in report order.
NEIGHBOURHOOD_KEYS = ("mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn", "cknna", "cknna_biased")


@dataclass(frozen=True)
class HsicTerms:
    """One kernel-alignment estimate: HSIC(K, L), HSIC(K, K), HSIC(L, L) and
    value = kl / sqrt(kk ll) (0 when kk or ll is not positive; never NaN)."""

    kl: float
    kk: float
    ll: float
    value: float

    @classmethod
    def _from(cls, d: dict[str, float]) -> "HsicTerms":
        return cls(float(d["kl"]), float(d["kk"]), float(d["ll"]), float(d["value"]))


@dataclass(frozen=True)
class Neighbours:
    """The exact top-k neighbours of every row within one set (what :func:`knn` returns).

    Attributes
    ----------
    index : ndarray, shape (n, topk), int64
        Row i's neighbours, best first (never i itself).
    similarity : ndarray, shape (n, topk), float64
        Their cosine similarity (the canonical one: rows normalised in float64, stored in the
        input's precision, multiplied and summed in float64 in a fixed order). Equal
        similarities are ordered by the smaller index.
    precision : str
        How the similarity tiles were computed ("float32": the GEMM in the input's own
        precision; "int8" / "bfloat16": a reduced-precision screen). The lists are the same.

    Examples
    --------
    >>> import numpy as np, fastsas as fs
    >>> x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> nb = fs.knn(x, topk=2)
    >>> nb.topk, nb.head(1).index.ravel().tolist()
    (2, [1, 0, 3, 2])
    """

    index: np.ndarray
    similarity: np.ndarray
    precision: str = "float32"

    @property
    def topk(self) -> int:
        """Neighbours held per row."""
        return int(self.index.shape[1])

    def head(self, topk: int) -> "Neighbours":
        """The top-`topk` neighbours (a prefix of every list: exact, since lists are sorted)."""
        k = _check_topk(topk, self.topk + 1, what="the neighbours held")
        return Neighbours(self.index[:, :k], self.similarity[:, :k], self.precision)


@dataclass(frozen=True)
class NeighbourhoodResult:
    """Every neighbourhood metric from one neighbour computation per modality (what
    :func:`neighbourhood` returns; definitions in docs/definitions.md).

    Attributes
    ----------
    n, topk : int
        Pairs and neighbours per row.
    mutual_knn, cycle_knn, lcs_knn, edit_distance_knn, cknna, cknna_biased : float
        The metrics, as below.
    cknna_terms, cknna_biased_terms : HsicTerms
        The HSIC terms behind the two CKNNA values.
    image_neighbours, text_neighbours : Neighbours or None
        The neighbour lists when asked for.

    Notes
    -----
    mutual_knn: mean over rows of |N_I(i) & N_T(i)| / topk, in [0, 1].
    cycle_knn: fraction of rows i that some text-side neighbour j of i has among its
    image-side neighbours, in [0, 1].
    lcs_knn: mean length of the longest common subsequence of the two ordered lists, in
    [0, topk] (not divided by topk, as in the reference code).
    edit_distance_knn: 1 - mean Levenshtein distance of the two ordered lists / topk, in [0, 1].
    cknna: the unbiased HSIC alignment of the cosine kernels masked to the joint
    neighbourhoods (``cknna_terms``); cknna_biased: the biased HSIC with neighbourhoods that
    include the row itself (``cknna_biased_terms``).
    image_neighbours, text_neighbours: the neighbour lists when asked for, else None.

    Examples
    --------
    >>> import fastsas as fs
    >>> x, y = fs.synthetic.paired_embeddings(200, 16, seed=0)
    >>> r = fs.neighbourhood(x, x, topk=5)
    >>> r.n, r.topk, r.mutual_knn, 0.0 < r.cycle_knn <= 1.0  # neighbour lists are not symmetric
    (200, 5, 1.0, True)
    """

    n: int
    topk: int
    mutual_knn: float
    cycle_knn: float
    lcs_knn: float
    edit_distance_knn: float
    cknna: float
    cknna_biased: float
    cknna_terms: HsicTerms
    cknna_biased_terms: HsicTerms
    image_neighbours: Neighbours | None = None
    text_neighbours: Neighbours | None = None

    def to_dict(self) -> dict[str, Any]:
        """The metrics (NEIGHBOURHOOD_KEYS) with n and topk, JSON-serialisable."""
        out: dict[str, Any] = {key: float(getattr(self, key)) for key in NEIGHBOURHOOD_KEYS}
        out["n"] = self.n
        out["topk"] = self.topk
        return out


def _check_topk(topk: Any, n: int, *, what: str = "the rows") -> int:
    if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)):
        raise TypeError(f"topk must be a positive integer (neighbours per row), got {topk!r}")
    k = int(topk)
    if not 1 <= k <= n - 1:
        raise ValueError(f"topk must be in [1, n - 1] = [1, {n - 1}] for {what} (a row is never its own "
                         f"neighbour), got {k}; use a smaller topk")
    return k


def _check_tile(tile: Any) -> int:
    if tile is None:
        return 0
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1:
        raise ValueError(f"tile must be None or a positive integer (rows per block), got {tile!r}")
    return int(tile)


def knn(x: Any, topk: int = 10, *, threads: int | None = None, tile: int | None = None,
        precision: str = "auto") -> Neighbours:
    """Exact top-k nearest neighbours of every row within `x` by cosine, self excluded.

    Parameters
    ----------
    x : array_like, shape (n, d)
        float16/32/64 rows (float32 and float64 are computed in their own precision; float16 is
        converted to float32 once). Rows are L2-normalised; n >= 2.
    topk : int
        Neighbours per row, 1 <= topk <= n - 1.
    threads : int, optional
        Worker threads (default: every core); the result does not depend on it.
    tile : int, optional
        Rows per block of the tiled GEMM (default: the core's); the result does not depend on it.
    precision : {"auto", "float32", "int8", "bfloat16"}, default "auto"
        How the similarity tiles are computed: "float32" the GEMM in the input's own precision;
        "int8" (AVX512_VNNI) or "bfloat16" (AVX512_BF16) a reduced-precision screen whose
        proven error bound decides which pairs are re-decided with the canonical similarity,
        so the lists are the same in every precision (docs/definitions.md,
        "Reduced-precision screening"); "auto" the one of these this CPU has that is cheapest
        on this data (from 4,096 rows it measures, on a sample of queries, how many rows lie
        within each screen's band of their k-th neighbour: each one is a re-check).
        ``Neighbours.precision`` says which ran.

    Returns
    -------
    Neighbours
        ``index`` (n, topk) int64 and ``similarity`` (n, topk) float64, best first; equal
        similarities ordered by the smaller index. Exact: every similarity that decides a
        list is the canonical float64 one, whatever the GEMM's rounding.

    Raises
    ------
    ValueError
        topk outside [1, n - 1], fewer than 2 rows, NaN/Inf or all-zero rows (named); a
        precision that is unknown or needs instructions this CPU lacks.
    TypeError
        non-float input or a non-integer topk.

    Examples
    --------
    >>> import numpy as np, fastsas as fs
    >>> x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> fs.knn(x, topk=1).index.ravel().tolist()
    [1, 0, 3, 2]
    """
    a = as_embeddings(x, "x", min_rows=2)
    k = _check_topk(topk, a.shape[0])
    try:
        r = _core.knn(a, k, _check_tile(tile), resolve_threads(threads), "x",
                      check_tile_precision(precision, _core.RETRIEVAL_PRECISIONS))
    except _core.BadRowsError as exc:
        raise bad_rows_error(exc, {"x": "x"}) from None
    return Neighbours(r["index"], r["similarity"], str(r["precision"]))


def _result(scores: dict[str, Any], n: int, topk: int, images: Neighbours | None,
            texts: Neighbours | None) -> NeighbourhoodResult:
    unbiased, biased = HsicTerms._from(scores["cknna"]), HsicTerms._from(scores["cknna_biased"])
    return NeighbourhoodResult(
        n=n, topk=topk, mutual_knn=float(scores["mutual_knn"]), cycle_knn=float(scores["cycle_knn"]),
        lcs_knn=float(scores["lcs_knn"]), edit_distance_knn=float(scores["edit_distance_knn"]),
        cknna=unbiased.value, cknna_biased=biased.value, cknna_terms=unbiased, cknna_biased_terms=biased,
        image_neighbours=images, text_neighbours=texts)


def neighbourhood(images: Any, texts: Any, topk: int = 10, *, return_neighbours: bool = False,
                  threads: int | None = None, tile: int | None = None,
                  precision: str = "auto") -> NeighbourhoodResult:
    """Every neighbourhood metric from one exact neighbour computation per modality.

    Parameters
    ----------
    images, texts : array_like, shapes (n, d_images) and (n, d_texts)
        Paired rows (row i of each describes the same item); the dims and dtypes may differ
        (each modality's neighbours are computed in its own space and precision). n >= 4.
    topk : int
        Neighbours per row, 1 <= topk <= n - 1 (default 10).
    return_neighbours : bool
        Also return both neighbour lists (``image_neighbours``, ``text_neighbours``).
    threads, tile : optional
        Worker threads and rows per GEMM block; neither changes the result.
    precision : {"auto", "float32", "int8", "bfloat16"}, default "auto"
        Tile precision of both neighbour computations, as in :func:`knn` (the lists, and so
        every metric, are the same in each).

    Returns
    -------
    NeighbourhoodResult
        mutual_knn, cycle_knn, lcs_knn, edit_distance_knn, cknna, cknna_biased (with their
        HSIC terms), and the neighbour lists when asked for. ``.to_dict()`` gives the floats.

    Raises
    ------
    ValueError
        Unpaired inputs, n < 4, topk outside [1, n - 1], NaN/Inf or all-zero rows (named).
    TypeError
        Non-float inputs or a non-integer topk.

    Examples
    --------
    >>> import fastsas as fs
    >>> images, texts = fs.synthetic.paired_embeddings(2000, 32, seed=0)
    >>> r = fs.neighbourhood(images, texts, topk=10)
    >>> 0.0 <= r.mutual_knn <= 1.0 and 0.0 <= r.cycle_knn <= 1.0
    True
    """
    x = as_embeddings(images, "images", min_rows=4)
    y = as_embeddings(texts, "texts", min_rows=4)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"images and texts must be paired row by row: got {x.shape[0]} and {y.shape[0]} rows")
    k = _check_topk(topk, x.shape[0])
    try:
        r = _core.neighbourhood(x, y, k, _check_tile(tile), resolve_threads(threads),
                                check_tile_precision(precision, _core.RETRIEVAL_PRECISIONS))
    except _core.BadRowsError as exc:
        raise bad_rows_error(exc, {"x": "images", "y": "texts"}) from None
    lists = (Neighbours(r["images"]["index"], r["images"]["similarity"], str(r["images"]["precision"])),
             Neighbours(r["texts"]["index"], r["texts"]["similarity"], str(r["texts"]["precision"]))
             ) if return_neighbours else (None, None)
    return _result(r, x.shape[0], k, *lists)


def neighbourhood_scores(image_neighbours: Neighbours, text_neighbours: Neighbours, topk: int | None = None, *,
                         threads: int | None = None) -> NeighbourhoodResult:
    """The neighbourhood metrics from neighbour lists already computed (e.g. by `knn`).

    Parameters
    ----------
    image_neighbours, text_neighbours : Neighbours
        The lists of the same n rows, with the same topk (n >= 4).
    topk : int, optional
        Use only the first `topk` of every list (exactly the top-`topk` neighbours, since the
        lists are sorted): one neighbour computation serves a sweep over topk.

    Returns
    -------
    NeighbourhoodResult
        As `neighbourhood` returns it (with these lists).

    Raises
    ------
    ValueError
        Lists of different shapes, fewer than 4 rows, a topk larger than the lists hold, or
        lists that name a row outside [0, n) or the row itself.
    TypeError
        Arguments that are not Neighbours.

    Examples
    --------
    >>> import fastsas as fs
    >>> images, texts = fs.synthetic.paired_embeddings(1000, 16, seed=1)
    >>> a, b = fs.knn(images, 20), fs.knn(texts, 20)
    >>> r = fs.neighbourhood_scores(a, b, topk=10)
    >>> r.mutual_knn == fs.neighbourhood(images, texts, topk=10).mutual_knn
    True
    """
    for name, v in (("image_neighbours", image_neighbours), ("text_neighbours", text_neighbours)):
        if not isinstance(v, Neighbours):
            raise TypeError(f"{name} must be a fastsas Neighbours (from fs.knn), got {type(v).__name__}")
    if image_neighbours.index.shape != text_neighbours.index.shape:
        raise ValueError(f"image_neighbours and text_neighbours must have the same shape (n, topk): got "
                         f"{image_neighbours.index.shape} and {text_neighbours.index.shape}")
    n = int(image_neighbours.index.shape[0])
    if n < 4:
        raise ValueError(f"neighbourhood metrics need at least 4 rows, got {n}")
    a, b = image_neighbours, text_neighbours
    if topk is not None:
        a, b = a.head(topk), b.head(topk)
    r = _core.neighbourhood_scores(a.index, a.similarity, b.index, b.similarity, resolve_threads(threads))
    return _result(r, n, a.topk, a, b)
