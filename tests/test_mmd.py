"""fs.mmd against the NumPy float64 reference (docs/definitions.md "MMD"): any row counts and tilings,
float32 accuracy, thread-count independence and argument validation."""
import numpy as np
import pytest

import fastsas as fs
from fastsas import _core
from fastsas import reference as ref


def unit(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def embeddings():
    """CLIP-like unit embeddings of two slightly different distributions (small MMD, so the
    three kernel means cancel to ~1e-4 of their size)."""
    rng = np.random.default_rng(0)
    d = 128
    centre = 0.4 * rng.standard_normal(d)
    x = unit(centre + rng.standard_normal((900, d)))
    y = unit(centre + 0.15 + rng.standard_normal((700, d)))
    return x, y


@pytest.mark.parametrize("tile", [None, 1, 7, 64, 300, 1000])
def test_matches_reference_float64(embeddings, tile):
    x, y = embeddings
    x, y = x[:300], y[:250]
    want = ref.mmd(x, y)
    assert fs.mmd(x, y, tile=tile) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("n, m", [(1, 1), (1, 5), (2, 3), (37, 11), (900, 700)])
@pytest.mark.parametrize("sigma", [0.5, 10.0])
def test_row_counts_and_sigma(embeddings, n, m, sigma):
    x, y = embeddings
    x, y = 3.0 * x[:n], 3.0 * y[:m]
    want = ref.mmd(x, y, sigma=sigma)
    got = fs.mmd(x, y, sigma=sigma, tile=128)
    assert got == pytest.approx(want, rel=1e-6, abs=1e-12)


def test_raw_unnormalised_embeddings():
    rng = np.random.default_rng(1)
    x = 5.0 + 4.0 * rng.standard_normal((400, 64))
    y = 5.2 + 4.0 * rng.standard_normal((350, 64))
    assert fs.mmd(x, y) == pytest.approx(ref.mmd(x, y), rel=1e-6)


def test_float32_is_close(embeddings):
    x, y = embeddings
    want = ref.mmd(x, y)
    got = fs.mmd(x.astype(np.float32), y.astype(np.float32))
    assert got == pytest.approx(want, rel=1e-5)
    # Mixed precisions are computed in float64.
    assert fs.mmd(x.astype(np.float32), y) == pytest.approx(
        ref.mmd(x.astype(np.float32), y), rel=1e-6)


def test_kernel_means_and_identity(embeddings):
    x, y = embeddings
    parts = _core.mmd(x, y, 10.0, 100, 2)
    g = 1.0 / 200.0
    kxy = np.exp(-g * ref._sq_dists(x, y)).mean()
    assert parts["mean_kxy"] == pytest.approx(kxy, rel=1e-12)
    assert parts["mmd"] == pytest.approx(
        100 * (parts["mean_kxx"] + parts["mean_kyy"] - 2 * parts["mean_kxy"]), rel=1e-15)
    assert abs(fs.mmd(x, x)) < 1e-9
    assert fs.mmd(x, y) > 0


def test_threads_give_identical_bits(embeddings):
    x, y = embeddings
    for xx, yy in ((x, y), (x.astype(np.float32), y.astype(np.float32))):
        for tile in (64, 100, None):
            one = fs.mmd(xx, yy, threads=1, tile=tile)
            two = fs.mmd(xx, yy, threads=2, tile=tile)
            assert one == two


def test_layouts(embeddings):
    x, y = embeddings
    x, y = x[:200], y[:150]
    want = fs.mmd(x, y)
    assert fs.mmd(np.asfortranarray(x), y[::-1]) == pytest.approx(want, rel=1e-12)
    assert fs.mmd(np.repeat(x, 2, axis=1)[:, ::2], y) == pytest.approx(want, rel=1e-12)
    assert fs.mmd(x.astype(np.float16), y.astype(np.float16)) == pytest.approx(want, rel=1e-2)


@pytest.mark.parametrize("which", ["x", "y"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_rows_are_named(which, dtype):
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((10, 4)).astype(dtype), rng.standard_normal((12, 4)).astype(dtype)
    (x if which == "x" else y)[[3, 5], 1] = [np.nan, np.inf]
    with pytest.raises(ValueError, match=rf"^{which} has non-finite values.* 2 rows: 3, 5"):
        fs.mmd(x, y)
    # Zero rows are fine for MMD (no normalisation).
    (x if which == "x" else y)[[3, 5]] = 0.0
    assert np.isfinite(fs.mmd(x, y))


@pytest.mark.parametrize(
    "args, kwargs, exc, pattern",
    [
        ((np.zeros(5), np.zeros((5, 1))), {}, ValueError, "x must be 2-D"),
        ((np.zeros((5, 1)), np.zeros((5, 1, 1))), {}, ValueError, "y must be 2-D"),
        ((np.ones((5, 3)), np.ones((5, 2))), {}, ValueError, "dims 3 and 2"),
        ((np.ones((5, 3), dtype=np.int64), np.ones((5, 3))), {}, TypeError, "x must hold float"),
        ((np.ones((5, 3)), np.ones((5, 3), dtype=np.int32)), {}, TypeError, "y must hold float"),
        ((np.ones((0, 3)), np.ones((5, 3))), {}, ValueError, "x needs at least 1 row"),
        ((np.ones((5, 3)), np.ones((5, 3))), dict(sigma=0.0), ValueError, "sigma"),
        ((np.ones((5, 3)), np.ones((5, 3))), dict(sigma=-1.0), ValueError, "sigma"),
        ((np.ones((5, 3)), np.ones((5, 3))), dict(sigma=float("nan")), ValueError, "sigma"),
        ((np.ones((5, 3)), np.ones((5, 3))), dict(sigma="10"), TypeError, "sigma"),
        ((np.ones((5, 3)), np.ones((5, 3))), dict(threads=0), ValueError, "threads"),
        ((np.ones((5, 3)), np.ones((5, 3))), dict(tile=0), ValueError, "tile"),
    ],
)
def test_bad_arguments(args, kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fs.mmd(*args, **kwargs)
