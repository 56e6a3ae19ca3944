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
    ref = fs.knn(x, topk, tile=tile, threads=2, precision="float32")
    got = fs.knn(x, topk, tile=tile, threads=2, precision=precision)
    assert got.precision == precision and ref.precision == "float32"
    np.testing.assert_array_equal(got.index, ref.index)
    np.testing.assert_array_equal(got.similarity, ref.similarity)
    # float64 rows: the screen of the float64 rows gives the float64 GEMM's lists.
    x64 = x.astype(np.float64) + 1e-9
    np.testing.assert_array_equal(fs.knn(x64, topk, precision=precision).index,
                                  fs.knn(x64, topk, precision="float32").index)


@pytest.mark.skipif(not SCREENS, reason="this CPU has neither AVX512_VNNI nor AVX512_BF16")
def test_auto_takes_a_screen_and_separability_is_unchanged():
    x = _classes(900, 48, seed=3)
    labels = np.arange(900) % 4
    assert fs.knn(x, 5, precision="auto").precision in SCREENS
    a = fs.separability(x, labels, ks=(1, 5), probe=False, precision="auto")
    b = fs.separability(x, labels, ks=(1, 5), probe=False, precision="float32")
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
    np.testing.assert_array_equal(nb.index, fs.knn(x, 3, precision="float32").index)
    with pytest.raises(ValueError, match="precision must be one of 'auto', 'float32', 'bfloat16', 'int8'"):
        fs.knn(x, 3, precision="fp16")


def _tight_classes(n, d, seed):
    """Classes whose rows share a cosine of ~0.8: hundreds of rows lie within int8's band of
    each row's 10th neighbour, few within bfloat16's."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, d)) / np.sqrt(d) * 8.0
    return (centres[rng.integers(0, 20, n)] + rng.standard_normal((n, d)) / np.sqrt(d) * 4.0).astype(np.float32)


@pytest.mark.skipif(not {"int8", "bfloat16"} <= set(SCREENS), reason="needs both AVX512_VNNI and AVX512_BF16")
def test_auto_measures_the_bands_and_takes_the_cheapest_path():
    tight = _tight_classes(8192, 256, seed=4)
    raw = {p: _core.knn(tight, 10, 0, 2, "x", p) for p in ("int8", "bfloat16", "float32", "auto")}
    choice = raw["auto"]["choice"]
    assert choice["queries"] == 8192 // 64
    # The estimated bands are those of the run (taken over a sample: at most the run's).
    for p in ("int8", "bfloat16"):
        assert 0.8 * raw[p]["band"] <= choice["band"][p] <= raw[p]["band"]
    # Tight classes: int8's ~5x wider band holds several times bfloat16's re-checks, in the
    # estimate and in the runs (the runs add the re-checks of their first, looser thresholds).
    assert choice["rechecks"]["int8"] > 4 * choice["rechecks"]["bfloat16"]
    assert raw["int8"]["rechecked"] > 2 * raw["bfloat16"]["rechecked"]
    for p in ("int8", "bfloat16"):
        assert 1 / 3 <= choice["rechecks"][p] * 8192 / raw[p]["rechecked"] <= 3.0, p
    costs = choice["cost"]
    assert raw["auto"]["precision"] == {"gemm": "float32"}.get(min(costs, key=costs.get), min(costs, key=costs.get))
    assert raw["auto"]["precision"] == "bfloat16"
    np.testing.assert_array_equal(raw["auto"]["index"], raw["float32"]["index"])
    # Below 4,096 rows nothing is measured.
    assert "choice" not in _core.knn(tight[:4000], 10, 0, 2, "x", "auto")
    assert "choice" not in raw["bfloat16"]


@pytest.mark.skipif(not SCREENS, reason="this CPU has neither AVX512_VNNI nor AVX512_BF16")
def test_neighbourhood_takes_a_precision_and_its_metrics_do_not_depend_on_it():
    rng = np.random.default_rng(6)
    images, texts = _classes(600, 24, seed=7), rng.normal(size=(600, 16))
    a = fs.neighbourhood(images, texts, topk=5, precision=SCREENS[0], return_neighbours=True)
    b = fs.neighbourhood(images, texts, topk=5, precision="float32", return_neighbours=True)
    assert a.to_dict() == b.to_dict()
    assert a.image_neighbours.precision == SCREENS[0] and b.image_neighbours.precision == "float32"
    with pytest.raises(ValueError, match="precision must be one of"):
        fs.neighbourhood(images, texts, topk=5, precision="half")
