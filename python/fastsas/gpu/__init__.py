"""The GPU backend (CUDA through CuPy): device detection and the GPU counterparts of the CPU
engine. Importing fastsas never imports CuPy; these functions import it when called.

Install: ``pip install "fastsas[gpu]"`` (CuPy for CUDA 13, ``cupy-cuda13x``).
Public functions take ``backend="auto" | "cpu" | "cuda"``; this package is what "cuda" runs.
"""
from __future__ import annotations

import functools

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
    """True when CuPy imports and sees at least one CUDA device. Never raises."""
    return _probe()[0]


def unavailable_reason() -> str:
    """Why `available()` is False ("" when it is True)."""
    return _probe()[1]


def device_name() -> str:
    """Name of the current CUDA device (e.g. "NVIDIA H100 80GB HBM3")."""
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def __getattr__(name: str):
    if name == "GpuMoments":
        from fastsas.gpu.moments import GpuMoments

        return GpuMoments
    raise AttributeError(f"module 'fastsas.gpu' has no attribute {name!r}")
