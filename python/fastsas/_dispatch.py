"""Which engine computes: the one module that knows both the C++ core (``fastsas._core``,
always there) and the GPU package (``fastsas.gpu``, CuPy). The API modules (metrics,
moments, retrieval, mmd, audit, gap) resolve their ``backend`` argument here and call the
engine through the functions below; they never import the GPU package themselves.

``fastsas.gpu`` is imported on the first call that may use a GPU (``backend="auto"`` or
``"cuda"``), never at ``import fastsas``: it is the optional CuPy engine, and CuPy itself is
imported only inside it.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from fastsas import _core
from fastsas._badrows import bad_rows_error
from fastsas._validate import as_pair

__all__ = ["BACKENDS", "accumulate", "accumulate_chunks", "as_engine_pair", "is_device_array", "mmd",
           "resolve_backend", "retrieval_backend", "retrieval_ranks"]

BACKENDS = ("auto", "cpu", "cuda")


def _gpu():
    """The GPU package (imported here, on first use: see the module docstring)."""
    import fastsas.gpu as gpu

    return gpu


def is_device_array(x: Any) -> bool:
    """Whether `x` lives on a CUDA device (a CuPy array or a DLPack producer such as a torch
    CUDA tensor); False without importing the GPU package for NumPy arrays."""
    if isinstance(x, np.ndarray):
        return False
    return _gpu()._arrays.is_device_array(x)


def resolve_backend(backend: Any, *inputs: Any) -> str:
    """"cpu" or "cuda" for a public function's ``backend`` argument.

    "auto": the GPU when CuPy sees one (or when an input already lives on the GPU), else the
    CPU, silently. "cuda" without a usable GPU raises RuntimeError saying why and how to
    install the GPU extra. An input on a GPU that CuPy cannot use raises RuntimeError.

    Raises
    ------
    ValueError
        When `backend` is not "auto", "cpu" or "cuda".
    RuntimeError
        When "cuda" is asked for (or an input is on a device) and no GPU is usable.
    """
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if backend == "cpu":
        return "cpu"
    gpu = _gpu()
    if gpu.available():
        return "cuda"
    if backend == "cuda":
        raise RuntimeError(
            f"backend='cuda' needs a CUDA GPU visible to CuPy, and none is usable: {gpu.unavailable_reason()}. "
            'Install the GPU extra with pip install "fastsas[gpu]" (CuPy for CUDA 13) on a machine with an '
            "NVIDIA driver, or use backend='cpu'"
        )
    for x in inputs:
        if is_device_array(x):
            raise RuntimeError(f"an input lives on a CUDA device but the GPU backend is not usable: "
                               f"{gpu.unavailable_reason()}")
    return "cpu"


def retrieval_backend(backend: Any, images: Any, texts: Any, return_topk: int) -> str:
    """The engine of a retrieval: as :func:`resolve_backend`, except that "auto" keeps host
    inputs on the CPU when top-k lists are asked for (a CPU feature)."""
    kind = resolve_backend(backend, images, texts)
    if kind == "cuda" and backend == "auto" and return_topk \
            and not (is_device_array(images) or is_device_array(texts)):
        return "cpu"
    return kind


def as_engine_pair(kind: str, images: Any, texts: Any, names: tuple[str, str] = ("images", "texts"), *,
                   min_rows: int = 2, paired: bool = True, integers: bool = False) -> tuple[Any, Any]:
    """The validated inputs for engine `kind`: NumPy arrays (:func:`fastsas._validate.as_pair`),
    or on the GPU, device inputs as CuPy views in place (host inputs stay on the host and are
    streamed by the GPU engine). Same checks and messages either way; `integers` (retrieval)
    also takes int8 / uint8 / bool embeddings, as float32 (:func:`fastsas._validate.computed_dtype`)."""
    if kind == "cuda" and (is_device_array(images) or is_device_array(texts)):
        return _gpu()._arrays.device_pair(images, texts, names, min_rows=min_rows, paired=paired, integers=integers)
    return as_pair(images, texts, names, min_rows=min_rows, paired=paired, integers=integers)


def accumulate(kind: str, x: Any, y: Any, names: tuple[str, str], track_unit_rows: bool,
               threads: int) -> "_core.Moments":
    """The core moments of one pass over paired rows (from :func:`as_engine_pair`); bad rows
    raise ValueError named by `names`."""
    if kind == "cuda":
        gm = _gpu().moments.GpuMoments(int(x.shape[1]), track_unit_rows=track_unit_rows, names=names)
        return gm.update(x, y).to_core()
    core = _core.Moments(int(x.shape[1]), track_unit_rows=bool(track_unit_rows))
    try:
        core.update(x, y, threads=threads)
    except _core.BadRowsError as exc:
        raise bad_rows_error(exc, {"x": names[0], "y": names[1]}) from None
    return core


def accumulate_chunks(chunks: Iterable[tuple[Any, Any]], dim: int | None, track_unit_rows: bool):
    """The core moments of (images_chunk, texts_chunk) pairs accumulated on the GPU (host
    chunks streamed through pinned buffers, device chunks in place), or None when `chunks`
    yields nothing."""
    it = iter(chunks)
    first = next(it, None)
    if first is None:
        return None
    size = dim if dim is not None else int(np.shape(first[0])[1])
    gm = _gpu().moments.GpuMoments(size, track_unit_rows=track_unit_rows)
    return gm.update(*first).update_chunks(it).to_core()


def retrieval_ranks(kind: str, x: Any, y: Any, image_codes: np.ndarray | None, text_codes: np.ndarray | None, *,
                    tile_rows: int, tile_cols: int, threads: int, topk: int,
                    precision: str = "auto") -> dict[str, Any]:
    """Every query's rank (0: no match) both ways, ``image_ranks`` and ``text_ranks``, and how
    the tiles were computed: ``precision`` (the tile precision that ran), ``screened`` (tile
    entries) and ``rechecked`` (entries re-decided exactly); with `topk` also ``image_topk``,
    ``image_topk_sim``, ``text_topk``, ``text_topk_sim`` (CPU only). `precision` chooses the
    CPU engine's tile precision (a name of ``_core.RETRIEVAL_PRECISIONS``; the GPU takes
    "auto" only)."""
    if kind == "cuda":
        if topk:
            raise ValueError("return_topk is only available with backend='cpu' (the GPU backend computes ranks "
                             "only); pass backend='cpu' to get the top-k lists")
        if precision != "auto":
            raise ValueError(f"precision={precision!r} applies to the CPU engine; the GPU backend screens its "
                             "tiles in fp16 (pass backend='cpu' to choose the CPU tile precision)")
        stats: dict = {}
        ranks = _gpu().retrieval.retrieval_ranks(x, y, image_codes, text_codes,
                                                 tile=(tile_rows, tile_cols) if tile_rows else None, stats=stats)
        return {"image_ranks": ranks[0], "text_ranks": ranks[1], "precision": stats["precision"],
                "screened": int(x.shape[0]) * int(y.shape[0]), "rechecked": stats["rechecked"]}
    try:
        return _core.retrieval(x, y, image_codes=image_codes, text_codes=text_codes, tile_rows=tile_rows,
                               tile_cols=tile_cols, threads=threads, topk=topk, precision=precision)
    except _core.BadRowsError as exc:
        raise bad_rows_error(exc, {"x": "images", "y": "texts"}) from None


def mmd(kind: str, x: Any, y: Any, sigma: float, *, tile: int, threads: int) -> float:
    """The RBF MMD of two sets (paper scaling) on engine `kind`; bad rows name x and y."""
    if kind == "cuda":
        return float(_gpu().mmd.mmd(x, y, sigma, tile=tile or None)["mmd"])
    try:
        return float(_core.mmd(x, y, sigma=sigma, tile=tile, threads=threads)["mmd"])
    except _core.BadRowsError as exc:
        raise bad_rows_error(exc, {"x": "x", "y": "y"}) from None
