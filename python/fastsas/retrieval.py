"""Exact bidirectional cosine retrieval (docs/definitions.md, "Retrieval"), streamed through
tiles of one GEMM in the C++ core (or on the GPU): never an n x n matrix in memory."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fastsas import _core, _dispatch
from fastsas._labels import encode_ids
from fastsas._validate import as_embeddings, check_int, check_ks, check_tile_precision, resolve_threads
from fastsas.results import Metrics

__all__ = ["PRECISIONS", "QUANTISATIONS", "ground_truth_codes", "quantisation_cost", "quantise", "rank_summary",
           "retrieval"]

# Tile precisions of the CPU engine (named by the core): "auto" picks the fastest exact one
# for the data and the CPU; "float32" is the GEMM in the input's own precision (float64 input
# keeps float64); "bfloat16" and "int8" screen the tiles on CPUs with AVX512_BF16 / AVX512_VNNI.
PRECISIONS = tuple(_core.RETRIEVAL_PRECISIONS)


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
    """The checked ground truth of a retrieval: int32 id codes of both sides (equal codes
    match; coded by the one encoder, ``fastsas._labels.encode_ids``), or (None, None) for the
    default row i <-> row i. Shared by fs.retrieval, fs.audit and fastsas.dask.

    Parameters
    ----------
    image_ids, text_ids : array_like or None
        One id per image and per text, or both None.
    n_images, n_texts : int
        The rows of each side.

    Returns
    -------
    tuple
        (image codes, text codes), int32 arrays, or (None, None).

    Raises
    ------
    ValueError
        When only one side has ids, the counts differ without ids, an id is NaN, or no
        image id equals any text id.
    TypeError
        When an id is not hashable, or one side holds numbers and the other strings.

    Examples
    --------
    >>> from fastsas.retrieval import ground_truth_codes
    >>> ground_truth_codes(["a", "b", "a"], ["b", "a"], 3, 2)
    (array([0, 1, 0], dtype=int32), array([1, 0], dtype=int32))
    """
    if (image_ids is None) != (text_ids is None):
        given = "image_ids" if image_ids is not None else "text_ids"
        missing = "text_ids" if image_ids is not None else "image_ids"
        raise ValueError(f"{given} was given but {missing} was not: give both image_ids and text_ids, or neither "
                         "(default: row i <-> row i)")
    if image_ids is None:
        if n_images != n_texts:
            raise ValueError(
                f"images and texts have {n_images} and {n_texts} rows: without image_ids / text_ids "
                "row i of images matches row i of texts, so give ids when the counts differ"
            )
        return None, None
    icodes, tcodes = encode_ids(image_ids, text_ids, n_images, n_texts)
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
    """Exact bidirectional cosine retrieval: R@k, rSum, median / mean rank and MRR
    (docs/definitions.md, "Retrieval"), streamed through tiles: never an n x m matrix.

    Parameters
    ----------
    images : array_like, shape (n_images, d)
        float16/32/64 image embeddings (float32 and float64 are computed in their own
        precision without a copy; mixed precisions in float64), or int8 / uint8 / bool
        (quantised or binary embeddings, converted to float32 exactly). Rows are
        L2-normalised; zero-norm and non-finite rows are refused, naming them. Rows whose
        coordinates are all integers, whatever the dtype, are compared by their exact
        rational cosines wherever rounding could decide otherwise, so mathematically equal
        cosines tie (docs/definitions.md, "Exact ties of integer-valued rows");
        :func:`quantisation_cost` measures what quantising embeddings costs in retrieval.
        With the GPU backend also CuPy arrays or torch CUDA tensors.
    texts : array_like, shape (n_texts, d)
        The text embeddings, likewise.
    image_ids, text_ids : array_like or None
        The ground truth: an image and a text match when their ids are equal (ints,
        strings or any hashable values; one per row). Both None (the default): row i of
        `images` matches row i of `texts`. COCO (5 captions per image): ``image_ids =
        arange(n_images)`` and ``text_ids`` the image of every caption; several images per
        report likewise.
    ks : int or sequence of int, default (1, 5, 10)
        Distinct cutoffs k >= 1, none above the smaller gallery.
    return_ranks : bool, default False
        Also return every ranked query's rank.
    return_topk : int, default 0
        Also return every query's k most similar candidates (CPU only; costs threads *
        n_texts * k extra memory).
    threads : int or None
        Worker threads (None: the fastsas default). The result does not depend on it.
    tile : int or (int, int) or None
        Rows per tile, or (image rows, text columns); the result does not depend on it.
    backend : {"auto", "cpu", "cuda"}, default "auto"
        The engine. On the GPU the tiles are fp16 GEMMs with float32 accumulation and every
        pair within the proven rounding band of a threshold is re-decided exactly, so the
        ranks are the CPU engine's (fastsas.gpu.retrieval explains the bound).
    precision : {"auto", "float32", "bfloat16", "int8"}, default "auto"
        The format the CPU engine computes the similarity tiles in; the ranks are the same
        in every one. "auto" takes the fastest exact path for the data and the CPU;
        "float32" the GEMM in the input's own precision (float64 input keeps float64);
        "bfloat16" (AVX512_BF16) and "int8" (AVX512_VNNI) screen the tiles in that format,
        decide every pair outside a proven error bound from the screened value and re-decide
        the pairs inside it with the exact similarity (docs/definitions.md, "Reduced-precision
        screening"). ``return_topk`` needs "auto" or "float32" (its similarities are tile
        values); the GPU backend takes "auto" only (it screens in fp16).

    Returns
    -------
    Metrics
        A dict (with ``.backend``): ``i2t_r{k}``, ``t2i_r{k}`` (fractions in [0, 1]) for
        every k; ``rsum`` = 100 * sum over `ks` of (I->T R@k + T->I R@k);
        ``i2t_median_rank``, ``t2i_median_rank``, ``i2t_mean_rank``, ``t2i_mean_rank``,
        ``i2t_mrr``, ``t2i_mrr``; ``n_images``, ``n_texts``; ``i2t_unmatched``,
        ``t2i_unmatched`` (queries without any match, left out of the metrics). With
        `return_ranks` also ``i2t_ranks`` (int64, the ranks of the matched image queries in
        row order), ``i2t_queries`` (their rows), ``t2i_ranks``, ``t2i_queries``. With
        `return_topk` = k also ``i2t_topk`` (n_images, k) text rows (best first, ties by the
        smaller row), ``i2t_topk_sim`` their similarities, and ``t2i_topk``,
        ``t2i_topk_sim`` (n_texts, k), padded with -1 / NaN when the gallery is smaller.
        ``.screen`` says how the tiles were computed: ``precision`` (the one that ran),
        ``screened`` (tile entries, n_images x n_texts) and ``rechecked`` (entries inside the
        proven band, re-decided exactly).

    Raises
    ------
    TypeError
        When an input is not an array of floats, or ids are not hashable.
    ValueError
        When the dims differ, the ids do not fit the rows or match nothing, a k is too
        large, a row is non-finite or zero, ``return_topk`` is asked of the GPU, or
        ``precision`` is unknown, needs instructions this CPU lacks, or is asked of the GPU.
    RuntimeError
        When ``backend="cuda"`` and no GPU is usable.

    Notes
    -----
    The rank of a query is 1 + the number of non-matching candidates strictly more similar
    than the query's best match: ties count in the query's favour, and a match never counts
    against its own query, whatever the rounding.

    Examples
    --------
    >>> import numpy as np, fastsas as fs
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((1000, 64)).astype(np.float32)
    >>> r = fs.retrieval(x, x + 0.5 * rng.standard_normal(x.shape).astype(np.float32))
    >>> 0.0 <= r["i2t_r1"] <= r["i2t_r5"] <= r["i2t_r10"] <= 1.0
    True
    >>> coco = fs.retrieval(x[:200], x[np.arange(1000) // 5], image_ids=np.arange(200), text_ids=np.arange(1000) // 5)
    >>> coco["n_texts"], coco["t2i_r1"]
    (1000, 1.0)
    """
    kind = _dispatch.retrieval_backend(backend, images, texts, return_topk)
    x, y = _dispatch.as_engine_pair(kind, images, texts, min_rows=1, paired=False, integers=True)
    n_images, n_texts = int(x.shape[0]), int(y.shape[0])
    icodes, tcodes = ground_truth_codes(image_ids, text_ids, n_images, n_texts)
    ks = check_ks(ks, n_images, n_texts)
    return_topk = check_int(return_topk, "return_topk", low=0)
    tile_rows, tile_cols = _check_tile(tile)
    core = _dispatch.retrieval_ranks(kind, x, y, icodes, tcodes, tile_rows=tile_rows, tile_cols=tile_cols,
                                     threads=resolve_threads(threads), topk=return_topk,
                                     precision=check_tile_precision(precision, PRECISIONS))
    screen = {key: core[key] for key in ("precision", "screened", "rechecked")}
    out = Metrics(rank_summary(core["image_ranks"], core["text_ranks"], ks, return_ranks), kind, screen=screen)
    if return_topk:
        out["i2t_topk"] = core["image_topk"]
        out["i2t_topk_sim"] = core["image_topk_sim"]
        out["t2i_topk"] = core["text_topk"]
        out["t2i_topk_sim"] = core["text_topk_sim"]
    return out


def rank_summary(image_ranks: np.ndarray, text_ranks: np.ndarray, ks: tuple[int, ...],
                 return_ranks: bool) -> dict[str, Any]:
    """The retrieval dict of :func:`retrieval` from every query's rank (0: no match), one array
    per direction; fastsas.dask builds the same dict from ranks computed on a cluster.

    Parameters
    ----------
    image_ranks : ndarray, shape (n_images,), int64
        The rank of every image query (0 for a query without a match).
    text_ranks : ndarray, shape (n_texts,), int64
        The same for the text queries.
    ks : tuple of int
        The cutoffs (checked).
    return_ranks : bool
        Also return the ranks and rows of the matched queries.

    Returns
    -------
    dict
        The keys of :func:`retrieval` (without the top-k lists).

    Examples
    --------
    >>> import numpy as np
    >>> from fastsas.retrieval import rank_summary
    >>> r = rank_summary(np.array([1, 3, 0]), np.array([1, 1, 2]), (1, 2), False)
    >>> r["i2t_r1"], r["i2t_unmatched"], r["t2i_r2"], r["rsum"]
    (0.5, 1, 1.0, 266.66666666666663)
    """
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


# The quantisations quantise() knows.
QUANTISATIONS = ("binary", "int8")


def quantise(embeddings: Any, scheme: str) -> np.ndarray:
    """A quantised copy of float embeddings, as int8 rows that :func:`retrieval` takes as they
    are (rows of integers: exact ties).

    Parameters
    ----------
    embeddings : array_like, shape (n, d)
        float16/32/64 embeddings.
    scheme : {"binary", "int8"}
        "binary": the sign of each coordinate, as -1 / +1 (cosines of such codes are
        1 - 2 Hamming / d); "int8": each row scaled by 127 / max |coordinate| and rounded
        (cosines do not depend on the per-row scale).

    Returns
    -------
    ndarray, shape (n, d), int8
        The quantised rows.

    Raises
    ------
    TypeError
        When `embeddings` is not an array of floats.
    ValueError
        When `embeddings` is not 2-D or `scheme` is unknown.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsas.retrieval import quantise
    >>> row = np.array([[0.5, -0.25, 0.0]])
    >>> quantise(row, "binary").tolist(), quantise(row, "int8").tolist()
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
    the float embeddings beside the same pairs quantised (:func:`quantise`), all exact.

    Parameters
    ----------
    images, texts, image_ids, text_ids, ks
        As :func:`retrieval`.
    schemes : sequence of str, default ("binary", "int8")
        The quantisations to compare.
    **kwargs
        Passed to :func:`retrieval` (threads, tile, precision, backend, ...).

    Returns
    -------
    dict
        ``"float"`` and one entry per scheme, each :func:`retrieval`'s summary (without rank
        arrays); each scheme's entry also has ``i2t_ranks_changed`` / ``t2i_ranks_changed``,
        the fraction of queries whose rank differs from the float embeddings'.

    Raises
    ------
    TypeError, ValueError
        As :func:`retrieval` and :func:`quantise`.

    Examples
    --------
    >>> import fastsas as fs
    >>> from fastsas.retrieval import quantisation_cost
    >>> x, y = fs.synthetic.paired_embeddings(500, 32, seed=1)
    >>> cost = quantisation_cost(x, y, ks=(1, 5), backend="cpu")
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
