"""Exact bidirectional cosine retrieval (METRICS.md "Retrieval"), streamed through tiles of
one GEMM in the C++ core: never an n x n matrix in memory."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fastsas import _core
from fastsas._validate import (Result, as_embeddings, check_number_sequence, one_per_row, rename_bad_rows,
                               resolve_backend, resolve_threads)

__all__ = ["PRECISIONS", "QUANTISATIONS", "quantisation_cost", "quantise", "retrieval"]

_NAMES = {"x": "images", "y": "texts"}
# Tile precisions of the CPU engine: "auto" picks the fastest exact one for the data and the
# CPU; "float32" is the GEMM in the input's own precision (float64 input keeps float64);
# "bfloat16" and "int8" screen the tiles on CPUs with AVX512_BF16 / AVX512_VNNI.
PRECISIONS = ("auto", "float32", "bfloat16", "int8")


class RetrievalResult(Result):
    """fs.retrieval's dict, with ``.screen``: how the tiles were computed, as a dict with
    ``precision`` (the tile precision that ran), ``screened`` (tile entries, n_images x
    n_texts) and ``rechecked`` (entries inside the proven band, re-decided exactly); the
    band occupancy is rechecked / screened. An attribute, not a key, like ``.backend``."""

    screen: dict

    def __init__(self, values: Any = (), backend: str = "cpu", screen: dict | None = None):
        super().__init__(values, backend)
        self.screen = dict(screen or {})

    def __reduce__(self):
        return (RetrievalResult, (dict(self), self.backend, self.screen))


# Integer embeddings (sign/binary codes, int8 quantisation) are computed exactly: their
# values are exact in float32, and rows of integers compare by their exact rational cosines.
INTEGER_DTYPES = (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.bool_))


def integer_as_float32(a: Any) -> Any:
    """An int8 / uint8 / bool NumPy array as float32 (exact); anything else unchanged."""
    if isinstance(a, np.ndarray) and a.dtype in INTEGER_DTYPES:
        return a.astype(np.float32)
    return a


def check_precision(precision: Any) -> str:
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    return precision


def _as_id_array(ids: Any, name: str, rows: int, side: str) -> np.ndarray:
    return one_per_row(ids, name, rows, item="id", per=f"{side} row")


def _codes(image_ids: Any, text_ids: Any, n_images: int, n_texts: int) -> tuple[np.ndarray, np.ndarray]:
    """Equal ids -> equal int32 codes (ids may be ints, strings or any hashable values)."""
    a = _as_id_array(image_ids, "image_ids", n_images, "image")
    b = _as_id_array(text_ids, "text_ids", n_texts, "text")
    kinds_numeric = a.dtype.kind in "iub" and b.dtype.kind in "iub"
    kinds_string = a.dtype.kind in "US" and b.dtype.kind == a.dtype.kind
    if kinds_numeric or kinds_string:
        _, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
        inverse = inverse.reshape(-1).astype(np.int32)
        return inverse[:n_images], inverse[n_images:]
    # Anything else (floats, objects, mixed kinds): Python equality through a dict.
    table: dict[Any, int] = {}
    out = []
    for name, arr in (("image_ids", a), ("text_ids", b)):
        codes = np.empty(arr.shape[0], dtype=np.int32)
        for i, v in enumerate(arr.tolist()):
            try:
                codes[i] = table.setdefault(v, len(table))
            except TypeError as exc:
                raise TypeError(f"{name}[{i}] = {v!r} is not hashable; ids must be hashable values") from exc
        out.append(codes)
    return out[0], out[1]


def _check_ks(ks: Any, n_images: int, n_texts: int) -> tuple[int, ...]:
    out = check_number_sequence(ks, "ks", integers=True, low=1, high=None, sequence_of="positive integers",
                                example="(1, 5, 10)", item="k", item_range=">= 1")
    gallery = min(n_images, n_texts)
    too_big = [k for k in out if k > gallery]
    if too_big:
        raise ValueError(
            f"ks={tuple(out)} has k larger than the gallery: {too_big} > "
            f"min(n_images={n_images}, n_texts={n_texts}) = {gallery}; R@k would be trivially 1"
        )
    return tuple(out)


def _check_tile(tile: Any) -> tuple[int, int]:
    if tile is None:
        return 0, 0
    if isinstance(tile, (int, np.integer)) and not isinstance(tile, bool):
        tile = (tile, tile)
    try:
        rows, cols = (int(t) for t in tile)
    except (TypeError, ValueError):
        raise TypeError(f"tile must be None, a positive int or a pair (rows, cols), got {tile!r}") from None
    if rows < 1 or cols < 1:
        raise ValueError(f"tile must be positive, got {tile!r}")
    return rows, cols


def ground_truth_codes(image_ids: Any, text_ids: Any, n_images: int,
                       n_texts: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The checked id codes of both sides (see _codes), or (None, None) for the default
    ground truth row i <-> row i. Shared by fs.retrieval and fastsas.dask."""
    if (image_ids is None) != (text_ids is None):
        given = "image_ids" if image_ids is not None else "text_ids"
        missing = "text_ids" if image_ids is not None else "image_ids"
        raise ValueError(f"{given} was given but {missing} was not: give both id arrays, or neither")
    if image_ids is None:
        if n_images != n_texts:
            raise ValueError(
                f"images and texts have {n_images} and {n_texts} rows: without image_ids / text_ids "
                "row i of images matches row i of texts, so give ids when the counts differ"
            )
        return None, None
    icodes, tcodes = _codes(image_ids, text_ids, n_images, n_texts)
    if not np.isin(icodes, tcodes).any():
        raise ValueError("no image id equals any text id (image_ids vs text_ids): nothing to retrieve")
    return icodes, tcodes


def retrieval(
    images: Any,
    texts: Any,
    image_ids: Any = None,
    text_ids: Any = None,
    ks: Sequence[int] = (1, 5, 10),
    return_ranks: bool = False,
    *,
    return_topk: int = 0,
    threads: int | None = None,
    tile: int | tuple[int, int] | None = None,
    backend: str = "auto",
    precision: str = "auto",
) -> dict[str, Any]:
    """Exact bidirectional cosine retrieval: R@k, rSum, median / mean rank and MRR.

    images: (n_images, d), texts: (n_texts, d) float16/32/64 arrays (float32 and float64
    are computed in their own precision without a copy of the input; mixed precisions in
    float64), or int8 / uint8 / bool arrays (quantised or binary embeddings, converted to
    float32 exactly). Rows are L2-normalised (zero-norm and non-finite rows are refused,
    naming them). Rows whose coordinates are all integers, whatever the dtype, are compared
    by their exact rational cosines wherever rounding could decide otherwise, so
    mathematically equal cosines tie (docs/definitions.md, "Exact ties of integer-valued
    rows"); ``quantisation_cost`` measures what quantising embeddings costs in retrieval.

    Ground truth: an image and a text match when their ids are equal. By default (both ids
    None) row i of ``images`` matches row i of ``texts``. COCO (5 captions per image): give
    ``image_ids = arange(n_images)`` and ``text_ids`` the image of every caption; several
    images per report works the same way. Ids may be ints, strings or any hashable values.

    rank of a query = 1 + the number of non-matching candidates strictly more similar than
    the query's best match (ties count in the query's favour; a match never counts against
    its query). Queries with no match are excluded from every metric and counted in
    ``i2t_unmatched`` / ``t2i_unmatched``.

    Returns a dict: ``i2t_r{k}``, ``t2i_r{k}`` (fractions in [0, 1]) for every k in ``ks``;
    ``rsum`` = 100 * sum over ``ks`` of (i2t R@k + t2i R@k) (METRICS.md's rSum with the
    default ks = (1, 5, 10)); ``i2t_median_rank``, ``t2i_median_rank``, ``i2t_mean_rank``,
    ``t2i_mean_rank``, ``i2t_mrr``, ``t2i_mrr``; ``n_images``, ``n_texts``,
    ``i2t_unmatched``, ``t2i_unmatched``. With ``return_ranks`` also ``i2t_ranks`` (int64,
    the ranks of the *matched* image queries only, in row order, as the NumPy reference
    returns them), ``i2t_queries`` (their row numbers), and ``t2i_ranks`` / ``t2i_queries``
    likewise over texts. With ``return_topk=k`` also ``i2t_topk`` (n_images, k) text rows,
    best first, ``i2t_topk_sim`` their cosine similarities, and ``t2i_topk`` /
    ``t2i_topk_sim`` (n_texts, k) (padded with -1 / NaN when the gallery is smaller than k;
    costs threads * n_texts * k extra memory).

    ``threads``: worker threads (None: the fastsas default). ``tile``: rows per tile, or
    (image rows, text columns); results do not depend on either.

    ``precision`` (CPU): the format the similarity tiles are computed in; the ranks are the
    same in every one. "auto" (default) takes the fastest exact path for the data and the CPU;
    "float32" the GEMM in the input's own precision (float64 input keeps float64); "bfloat16"
    (AVX512_BF16) and "int8" (AVX512_VNNI) screen the tiles in that format, decide every pair
    outside a proven error bound from the screened value and re-decide the pairs inside it
    with the exact similarity (docs/definitions.md, "Reduced-precision screening"); asking for
    one the CPU lacks raises ValueError. ``result.screen`` says which ran and how many pairs
    were re-decided. ``return_topk`` needs "auto" or "float32" (its similarities are tile
    values).

    ``backend``: "auto" (the GPU when CuPy sees one, else the CPU), "cpu" or "cuda". On the
    GPU (inputs may also be CuPy arrays or torch CUDA tensors) the tiles are fp16 GEMMs with
    float32 accumulation and every pair within the proven rounding band of a threshold is
    re-decided exactly, so the ranks are the CPU engine's (fastsas.gpu.retrieval explains the
    bound); ``return_topk`` needs the CPU. The result says which backend ran in ``.backend``.

    >>> import numpy as np, fastsas as fs
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((1000, 64)).astype(np.float32)
    >>> r = fs.retrieval(x, x + 0.5 * rng.standard_normal(x.shape).astype(np.float32))
    >>> 0.0 <= r["i2t_r1"] <= r["i2t_r5"] <= r["i2t_r10"] <= 1.0
    True
    """
    images, texts = integer_as_float32(images), integer_as_float32(texts)
    kind = resolve_backend(backend, images, texts)
    if kind == "cuda" and backend == "auto" and return_topk:
        # Top-k lists are a CPU feature: "auto" keeps host inputs on the CPU for them.
        from fastsas.gpu._arrays import is_device_array

        if not (is_device_array(images) or is_device_array(texts)):
            kind = "cpu"
    if kind == "cuda":
        from fastsas.gpu._arrays import is_device_array
        from fastsas.gpu.moments import device_pair

        if is_device_array(images) or is_device_array(texts):
            x, y = device_pair(images, texts, min_rows=1, paired=False)
        else:
            x = as_embeddings(images, "images", min_rows=1)
            y = as_embeddings(texts, "texts", min_rows=1)
    else:
        x = as_embeddings(images, "images", min_rows=1)
        y = as_embeddings(texts, "texts", min_rows=1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"images and texts must live in the same embedding space: got dims {x.shape[1]} and {y.shape[1]}"
        )
    if x.dtype != y.dtype:
        x = x.astype(np.float64, copy=False)
        y = y.astype(np.float64, copy=False)
    n_images, n_texts = int(x.shape[0]), int(y.shape[0])
    icodes, tcodes = ground_truth_codes(image_ids, text_ids, n_images, n_texts)
    ks = _check_ks(ks, n_images, n_texts)
    if isinstance(return_topk, bool) or not isinstance(return_topk, (int, np.integer)) or return_topk < 0:
        raise ValueError(f"return_topk must be a non-negative integer, got {return_topk!r}")
    tile_rows, tile_cols = _check_tile(tile)
    nthreads = resolve_threads(threads)
    precision = check_precision(precision)
    if kind == "cuda" and precision != "auto":
        raise ValueError(f"precision={precision!r} applies to the CPU engine; the GPU backend screens its tiles "
                         "in fp16 (pass backend='cpu' to choose the CPU tile precision)")

    if kind == "cuda":
        if return_topk:
            raise ValueError("return_topk is only available with backend='cpu' (the GPU backend computes ranks "
                             "only); pass backend='cpu' to get the top-k lists")
        from fastsas.gpu.retrieval import retrieval_ranks

        stats: dict = {}
        ranks = retrieval_ranks(x, y, icodes, tcodes, tile=(tile_rows, tile_cols) if tile_rows else None,
                                stats=stats)
        core = {"image_ranks": ranks[0], "text_ranks": ranks[1], "precision": stats["precision"],
                "screened": n_images * n_texts, "rechecked": stats["rechecked"]}
    else:
        try:
            core = _core.retrieval(x, y, icodes, tcodes, tile_rows, tile_cols, nthreads, int(return_topk), precision)
        except _core.BadRowsError as exc:
            raise rename_bad_rows(exc, _NAMES) from None

    screen = {key: core[key] for key in ("precision", "screened", "rechecked")}
    out = RetrievalResult(rank_summary(core["image_ranks"], core["text_ranks"], ks, return_ranks), kind, screen)
    if return_topk:
        out["i2t_topk"] = core["image_topk"]
        out["i2t_topk_sim"] = core["image_topk_sim"]
        out["t2i_topk"] = core["text_topk"]
        out["t2i_topk_sim"] = core["text_topk_sim"]
    return out


def rank_summary(image_ranks: np.ndarray, text_ranks: np.ndarray, ks: tuple[int, ...],
                 return_ranks: bool) -> dict[str, Any]:
    """The retrieval dict from every query's rank (0: no match), one array per direction;
    fastsas.dask builds the same dict from ranks computed on a cluster."""
    out: dict[str, Any] = {"n_images": int(image_ranks.shape[0]), "n_texts": int(text_ranks.shape[0])}
    for name, all_ranks in (("i2t", image_ranks), ("t2i", text_ranks)):
        queries = np.flatnonzero(all_ranks > 0)
        r = all_ranks[queries]
        out[f"{name}_unmatched"] = int(all_ranks.shape[0] - queries.shape[0])
        for k in ks:
            out[f"{name}_r{k}"] = float(np.mean(r <= k))
        out[f"{name}_median_rank"] = float(np.median(r))
        out[f"{name}_mean_rank"] = float(np.mean(r))
        out[f"{name}_mrr"] = float(np.mean(1.0 / r))
        if return_ranks:
            out[f"{name}_ranks"] = r
            out[f"{name}_queries"] = queries.astype(np.int64)
    out["rsum"] = float(100.0 * sum(out[f"i2t_r{k}"] + out[f"t2i_r{k}"] for k in ks))
    return out


QUANTISATIONS = ("binary", "int8")


def quantise(embeddings: Any, scheme: str) -> np.ndarray:
    """Quantised copy of (n, d) float embeddings as int8 rows.

    Parameters
    ----------
    embeddings : (n, d) float array.
    scheme : "binary" (the sign of each coordinate, as -1 / +1; cosines of such codes are
        1 - 2 Hamming / d) or "int8" (each row scaled by 127 / max |coordinate| and rounded:
        cosines do not depend on the per-row scale).

    Returns
    -------
    (n, d) int8 array.

    >>> import numpy as np
    >>> quantise(np.array([[0.5, -0.25, 0.0]]), "binary").tolist(), quantise(np.array([[0.5, -0.25, 0.0]]), "int8").tolist()
    ([[1, -1, 1]], [[127, -64, 0]])
    """
    x = as_embeddings(embeddings, "embeddings", min_rows=1).astype(np.float64, copy=False)
    if scheme == "binary":
        return np.where(x >= 0, 1, -1).astype(np.int8)
    if scheme == "int8":
        top = np.abs(x).max(axis=1, keepdims=True)
        top[top == 0] = 1.0
        return np.clip(np.rint(x * (127.0 / top)), -127, 127).astype(np.int8)
    raise ValueError(f"scheme must be one of {QUANTISATIONS}, got {scheme!r}")


def quantisation_cost(images: Any, texts: Any, image_ids: Any = None, text_ids: Any = None,
                      ks: Sequence[int] = (1, 5, 10), schemes: Sequence[str] = QUANTISATIONS,
                      **kwargs: Any) -> dict[str, dict[str, Any]]:
    """What quantising the embeddings costs in retrieval: R@k, MRR, rSum and median rank of
    the float embeddings beside the same pairs quantised (``quantise``), all exact.

    Parameters
    ----------
    images, texts, image_ids, text_ids, ks : as in ``retrieval``.
    schemes : quantisations to compare ("binary", "int8").
    **kwargs : passed to ``retrieval`` (threads, tile, precision, ...).

    Returns
    -------
    dict: ``"float"`` and one entry per scheme, each ``retrieval``'s summary (no rank arrays);
    each scheme's entry also has ``i2t_ranks_changed`` / ``t2i_ranks_changed``, the fraction
    of queries whose rank differs from the float embeddings'.

    >>> import numpy as np, fastsas as fs
    >>> x, y = fs.synthetic.paired_embeddings(500, 32, seed=1)
    >>> cost = quantisation_cost(x, y, ks=(1, 5))
    >>> sorted(cost), 0 <= cost["binary"]["i2t_r1"] <= 1
    (['binary', 'float', 'int8'], True)
    """
    def summary(a, b):
        r = retrieval(a, b, image_ids, text_ids, ks=ks, return_ranks=True, **kwargs)
        return r, {k: v for k, v in r.items() if not isinstance(v, np.ndarray)}

    base, out_float = summary(images, texts)
    out = {"float": out_float}
    for scheme in schemes:
        r, s = summary(quantise(images, scheme), quantise(texts, scheme))
        for name in ("i2t", "t2i"):
            s[f"{name}_ranks_changed"] = float(np.mean(r[f"{name}_ranks"] != base[f"{name}_ranks"]))
        out[scheme] = s
    return out
