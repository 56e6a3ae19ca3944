import os
import shutil

import numpy as np
import pytest


def pytest_configure(config):
    # CI sets FASTSAS_REQUIRE_BROWSER=1 after installing Chromium, so the browser test can
    # never silently skip there.
    if os.environ.get("FASTSAS_REQUIRE_BROWSER") == "1" and not (
        shutil.which("chromium") or shutil.which("chromium-browser")
    ):
        raise pytest.UsageError("FASTSAS_REQUIRE_BROWSER=1 but no chromium on PATH: apt-get install -y chromium")


def pytest_collection_modifyitems(config, items):
    # GPU tests are skipped, never passed, when no GPU is visible.
    try:
        import cupy  # noqa: F401

        has_gpu = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - any failure means no usable GPU
        has_gpu = False
    if not has_gpu:
        # The GPU CI job sets FASTSAS_REQUIRE_GPU=1: there a missing GPU is an error, so GPU
        # tests can never silently skip.
        if os.environ.get("FASTSAS_REQUIRE_GPU") == "1" and any("gpu" in item.keywords for item in items):
            raise pytest.UsageError("FASTSAS_REQUIRE_GPU=1 but CuPy sees no CUDA GPU: GPU tests would be skipped")
        skip = pytest.mark.skip(reason="no CUDA GPU visible to CuPy")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
