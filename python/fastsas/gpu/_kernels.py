"""Where the CUDA sources live, how NVRTC compiles them, and the compiled modules (one per
source file per device, compiled on first use and cached by CuPy on disk as well).

Nothing here imports CuPy at import time: the compile options are shared with the NVRTC
compile test (tests/test_gpu_compile.py), which runs on machines without a GPU.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

# Kernel sources: cuda/ at the repository root (editable installs and the source tree), or
# fastsas/_cuda inside an installed wheel.
_CANDIDATES = (
    Path(__file__).resolve().parent.parent / "_cuda",
    Path(__file__).resolve().parents[3] / "cuda",
)

SOURCES = ("rows.cu", "retrieval.cu", "moments.cu", "mmd.cu")


def source_dir() -> Path:
    for path in _CANDIDATES:
        if (path / "fastsas_common.cuh").is_file():
            return path
    raise RuntimeError(
        "fastsas: the CUDA kernel sources were not found (looked in "
        + ", ".join(str(p) for p in _CANDIDATES)
        + "); reinstall fastsas, or use backend='cpu'"
    )


def nvrtc_options(include_dir: Path | None = None) -> tuple[str, ...]:
    """The options every kernel is compiled with (the CI nvcc check uses the same ones).

    --fmad=false: the only fused multiply-adds are the explicit fma() calls, so the canonical
    similarity and the normalisation match the CPU engine operation for operation.
    """
    include = include_dir if include_dir is not None else source_dir()
    return ("-std=c++17", "--fmad=false", f"-I{include}")


@functools.lru_cache(maxsize=None)
def _module(name: str, device_id: int):
    import cupy

    folder = source_dir()
    code = (folder / name).read_text()
    # CuPy's on-disk kernel cache is keyed by this source text and the options only, never by
    # the headers it includes: name the shared header's content here so that an edit to it
    # recompiles every module instead of silently reusing stale binaries.
    header = hashlib.sha256((folder / "fastsas_common.cuh").read_bytes()).hexdigest()
    code += f"\n// fastsas_common.cuh sha256 {header}\n"
    with cupy.cuda.Device(device_id):
        return cupy.RawModule(code=code, options=nvrtc_options(folder), backend="nvrtc")


def kernel(source: str, name: str):
    """The compiled kernel `name` of cuda/`source` for the current device."""
    import cupy

    return _module(source, cupy.cuda.Device().id).get_function(name)
