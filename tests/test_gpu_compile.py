"""Every CUDA source compiles through NVRTC with the options the run-time loader uses, for
sm_80 and sm_90. Needs libnvrtc (the `nvidia-cuda-nvrtc` wheel or a CUDA toolkit), not a GPU,
so NVRTC-specific breakage (missing headers, host-only code) is caught on CPU machines too.
The nvcc side of the same check is .ci/nvcc_check."""
from __future__ import annotations

import ctypes
import glob
import os
import sys

import pytest

from fastsas.gpu import _kernels


def _find_nvrtc() -> str | None:
    patterns = [os.path.join(p, "nvidia", "cu13", "lib", "libnvrtc.so.*") for p in sys.path if p]
    patterns += [os.path.join(p, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so.*") for p in sys.path if p]
    patterns += ["/usr/local/cuda*/lib64/libnvrtc.so*", "/usr/local/cuda*/targets/*/lib/libnvrtc.so*"]
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            if "builtins" not in path and "alt" not in os.path.basename(path):
                return path
    return None


NVRTC = _find_nvrtc()
if NVRTC is None and os.environ.get("FASTSAS_REQUIRE_NVRTC") == "1":
    # CI installs libnvrtc, so there a missing one is a set-up error, never a silent skip.
    raise pytest.UsageError("FASTSAS_REQUIRE_NVRTC=1 but no libnvrtc was found (pip install 'nvidia-cuda-nvrtc==13.*')")
needs_nvrtc = pytest.mark.skipif(NVRTC is None, reason="no libnvrtc (pip install nvidia-cuda-nvrtc, or a CUDA toolkit)")


def _compile(source: str, name: str, options: tuple[str, ...]) -> tuple[int, str, int]:
    lib = ctypes.CDLL(NVRTC)
    prog = ctypes.c_void_p()
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None)
    assert rc == 0, f"nvrtcCreateProgram failed ({rc})"
    opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
    rc = lib.nvrtcCompileProgram(prog, len(options), opts)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    cubin = ctypes.c_size_t(0)
    if rc == 0:
        assert lib.nvrtcGetCUBINSize(prog, ctypes.byref(cubin)) == 0
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return rc, log.value.decode(errors="replace"), cubin.value


@needs_nvrtc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("source", _kernels.SOURCES)
def test_every_kernel_compiles_with_nvrtc(source, arch):
    folder = _kernels.source_dir()
    options = _kernels.nvrtc_options(folder) + (f"--gpu-architecture={arch}",)
    rc, log, cubin = _compile((folder / source).read_text(), source, options)
    assert rc == 0, f"NVRTC failed on {source} for {arch}:\n{log}"
    assert cubin > 0


def _ptx(source: str, name: str, options: tuple[str, ...]) -> str:
    lib = ctypes.CDLL(NVRTC)
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None) == 0
    opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
    try:
        assert lib.nvrtcCompileProgram(prog, len(options), opts) == 0, f"NVRTC failed on {name}"
        size = ctypes.c_size_t()
        assert lib.nvrtcGetPTXSize(prog, ctypes.byref(size)) == 0
        buf = ctypes.create_string_buffer(size.value)
        assert lib.nvrtcGetPTX(prog, buf) == 0
        return buf.value.decode()
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


@needs_nvrtc
@pytest.mark.parametrize("source", ["rows.cu", "retrieval.cu", "moments.cu"])
def test_conversions_keep_subnormals_under_cupy_ftz(source):
    # CuPy appends -ftz=true to every RawModule compile; the float <-> double conversions that
    # decide normalised rows, canonical similarities and thresholds must not become cvt.ftz
    # (a subnormal float32 read as 0 where the CPU keeps it). fastsas_common.cuh's to_f64 /
    # from_f64 are inline PTX for that reason.
    import re

    folder = _kernels.source_dir()
    options = _kernels.nvrtc_options(folder) + ("-ftz=true", "--gpu-architecture=compute_90")
    ptx = _ptx((folder / source).read_text(), source, options)
    flushed = re.findall(r"cvt(?:\.\w+)*\.ftz(?:\.\w+)*\.(?:f64\.f32|f32\.f64)", ptx)
    assert not flushed, f"{source}: {len(flushed)} flushing float/double conversions, e.g. {flushed[0]}"


@needs_nvrtc
def test_nvrtc_check_can_fail():
    # The harness reports errors: a broken kernel must not compile.
    rc, log, _ = _compile('extern "C" __global__ void k(float* a) { a[0] = undefined_name; }', "bad.cu",
                          _kernels.nvrtc_options() + ("--gpu-architecture=sm_90",))
    assert rc != 0 and "undefined_name" in log


def test_sources_list_matches_folder():
    on_disk = sorted(p.name for p in _kernels.source_dir().glob("*.cu"))
    assert on_disk == sorted(_kernels.SOURCES)
