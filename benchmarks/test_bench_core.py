"""pytest-benchmark suite for the moments core, each fastsas figure beside its NumPy floor.

    python -m pytest benchmarks/test_bench_core.py --benchmark-columns=min,mean,rounds
"""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from numpy_baselines import floor_alignment, sas_family_straightforward  # noqa: E402

import fastsas as fs  # noqa: E402

N, D = 50_000, 512


@pytest.fixture(scope="module")
def pair():
    return fs.synthetic.paired_embeddings(N, D, image_only_factors=8, seed=0, dtype=np.float32)


@pytest.mark.benchmark(group="alignment n=50k d=512 float32")
def test_fastsas_alignment(benchmark, pair):
    out = benchmark(fs.alignment, *pair)
    assert out["sas_i2t"] < out["sas_t2i"]


@pytest.mark.benchmark(group="alignment n=50k d=512 float32")
def test_numpy_floor(benchmark, pair):
    z = np.hstack(pair)
    benchmark(floor_alignment, z, D)


@pytest.mark.benchmark(group="alignment n=50k d=512 float32")
def test_numpy_straightforward(benchmark, pair):
    out = benchmark.pedantic(sas_family_straightforward, args=pair, rounds=1, iterations=1)
    assert out["sas_i2t"] == pytest.approx(fs.sas(*pair), rel=1e-3)


@pytest.mark.benchmark(group="moments update, float64 accumulation")
@pytest.mark.parametrize("chunk", [4096, 65536])
def test_streaming_update(benchmark, pair, chunk):
    x, y = pair

    def run():
        m = fs.Moments(D)
        for i in range(0, N, chunk):
            m.update(x[i:i + chunk], y[i:i + chunk])
        return m

    assert benchmark(run).n == N
