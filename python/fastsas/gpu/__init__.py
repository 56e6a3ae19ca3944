"""The GPU backend (CUDA through CuPy): device detection and the GPU counterparts of the CPU
engine (:class:`GpuMoments`, :mod:`~fastsas.gpu.retrieval`, :mod:`~fastsas.gpu.mmd`, the
kernels of ``cuda/``). Importing fastsas never imports this package or CuPy: public
functions take ``backend="auto" | "cpu" | "cuda"``, and fastsas._dispatch, the one module
that knows both engines, imports this package when a call may use a GPU. CuPy itself is
imported inside the functions that need it.

Install: ``pip install "fastsas[gpu]"`` (CuPy for CUDA 13, ``cupy-cuda13x``).

>>> import fastsas as fs
>>> isinstance(fs.gpu.available(), bool)
True
"""
from __future__ import annotations

import functools

# The engine's modules import CuPy inside their functions only, so importing them here is
# cheap; fastsas._dispatch imports this package on the first call that may use a GPU.
from fastsas.gpu import _arrays, mmd, moments, retrieval  # noqa: F401 - the engine, as attributes
from fastsas.gpu.moments import GpuMoments

__all__ = ["GpuMoments", "available", "device_name", "unavailable_reason"]


@functools.lru_cache(maxsize=1)
def _probe() -> tuple[bool, str]:
    try:
        import cupy
    except Exception as exc:  # noqa: BLE001 - any import failure means no GPU backend
        return False, f"CuPy is not installed or does not import ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - no driver, no device, ...
        return False, f"CuPy found no usable CUDA device ({type(exc).__name__}: {exc})"
    if count < 1:
        return False, "CuPy sees no CUDA device"
    return True, ""


def available() -> bool:
    """True when CuPy imports and sees at least one CUDA device. Never raises.

    Returns
    -------
    bool
        Whether backend="cuda" can run.

    Examples
    --------
    >>> import fastsas as fs
    >>> fs.gpu.available() == (fs.gpu.unavailable_reason() == "")
    True
    """
    return _probe()[0]


def unavailable_reason() -> str:
    """Why :func:`available` is False ("" when it is True).

    Returns
    -------
    str
        The reason (CuPy missing, no driver, no device), for error messages.

    Examples
    --------
    >>> import fastsas as fs
    >>> isinstance(fs.gpu.unavailable_reason(), str)
    True
    """
    return _probe()[1]


def device_name() -> str:
    """The name of the current CUDA device (e.g. "NVIDIA H100 80GB HBM3").

    Returns
    -------
    str
        The device name.

    Raises
    ------
    ImportError
        Without CuPy.

    Examples
    --------
    >>> import fastsas as fs                         # doctest: +SKIP
    >>> fs.gpu.device_name()                         # doctest: +SKIP
    'NVIDIA H100 80GB HBM3'
    """
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)

