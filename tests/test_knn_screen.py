"""fs.knn with reduced-precision tiles: the same lists as the float32 GEMM path, bit for bit
(the screen's bound decides which pairs are re-decided canonically), on data with duplicated
rows, tiles that do not divide n, and float64 rows; a screen this CPU lacks is refused."""
import numpy as np
import pytest

import fastsas as fs
from fastsas import _core

SCREENS = [p for p in ("int8", "bfloat16") if _core.screen_supported(p)]


def _classes(n, d, seed, noise=0.8):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(7, d))
    x = (centres[rng.integers(0, 7, n)] + noise * rng.normal(size=(n, d))).astype(np.float32)
    x[5] = x[6]              # a duplicated pair: an exact tie
    x[100:110] = x[99]       # eleven equal rows: ties beyond topk
    return x


@pytest.mark.skipif(not SCREENS, reason="this CPU has neither AVX512_VNNI nor AVX512_BF16")
@pytest.mark.parametrize("precision", SCREENS)
@pytest.mark.parametrize("n,d,topk,tile", [(1500, 64, 10, None), (1100, 768, 5, 100), (777, 33, 7, 50)])
def test_screened_lists_equal_the_gemm_lists(precision, n, d, topk, tile):
    x = _classes(n, d, seed=n + d)
    ref = fs.knn(x, topk, tile=tile, threads=2)
    got = fs.knn(x, topk, tile=tile, threads=2, precision=precision)
    assert got.precision == precision and ref.precision == "float32"
    np.testing.assert_array_equal(got.index, ref.index)
    np.testing.assert_array_equal(got.similarity, ref.similarity)
    # float64 rows: the screen of the float64 rows gives the float64 GEMM's lists.
    x64 = x.astype(np.float64) + 1e-9
    np.testing.assert_array_equal(fs.knn(x64, topk, precision=precision).index, fs.knn(x64, topk).index)


@pytest.mark.skipif(not SCREENS, reason="this CPU has neither AVX512_VNNI nor AVX512_BF16")
def test_auto_takes_a_screen_and_separability_is_unchanged():
    x = _classes(900, 48, seed=3)
    labels = np.arange(900) % 4
    assert fs.knn(x, 5, precision="auto").precision in SCREENS
    a = fs.separability(x, labels, ks=(1, 5), probe=False, precision="auto")
    b = fs.separability(x, labels, ks=(1, 5), probe=False)
    assert a["knn"] == b["knn"] and a["knn_precision"] in SCREENS and b["knn_precision"] == "float32"


@pytest.mark.parametrize("precision", [p for p in ("int8", "bfloat16") if p not in SCREENS])
def test_a_screen_this_cpu_lacks_is_refused_by_name(precision):
    x = _classes(200, 16, seed=1)
    needs = "AVX512_VNNI" if precision == "int8" else "AVX512_BF16"
    with pytest.raises(ValueError, match=f"precision '{precision}' needs a CPU with {needs}"):
        fs.knn(x, 3, precision=precision)


def test_auto_without_a_screen_falls_back_to_the_gemm_and_unknown_names_are_refused():
    x = _classes(300, 16, seed=2)
    nb = fs.knn(x, 3, precision="auto")
    assert nb.precision in ("int8", "bfloat16", "float32")
    if not SCREENS:
        assert nb.precision == "float32"
    np.testing.assert_array_equal(nb.index, fs.knn(x, 3).index)
    with pytest.raises(ValueError, match="precision must be one of 'auto', 'float32', 'bfloat16', 'int8'"):
        fs.knn(x, 3, precision="fp16")
