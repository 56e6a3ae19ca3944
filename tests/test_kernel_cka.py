"""fs.cka_rbf against the float64 reference with full kernel matrices (explicit differences):
both estimators, any sigma (small ones: kernels near the identity; large ones: kernels near 1),
per-modality sigmas and dims, float32, thread- and tile-independence, validation."""
import numpy as np
import pytest

import fastsas as fs
from fastsas import reference_neighbourhood as ref


def paired(n, dx, dy, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dx)) + 2.0
    y = np.tanh(x[:, :dy] if dy <= dx else np.pad(x, ((0, 0), (0, dy - dx)))) + 0.5 * rng.standard_normal((n, dy))
    return x.astype(dtype), y.astype(dtype)


@pytest.mark.parametrize("sigma", [0.4, 1.0, 3.0, 30.0, 3000.0])
@pytest.mark.parametrize("unbiased", [True, False])
def test_matches_reference(sigma, unbiased):
    x, y = paired(150, 6, 6, seed=1)
    want = ref.cka_rbf(x, y, sigma, unbiased=unbiased)
    assert fs.cka_rbf(x, y, sigma, unbiased=unbiased) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("n", [4, 5, 33, 257])
def test_row_counts_and_tiles(n):
    x, y = paired(n, 5, 3, seed=n)
    want_u = ref.cka_rbf(x, y, 1.5, 0.8)
    want_b = ref.cka_rbf(x, y, 1.5, 0.8, unbiased=False)
    for tile in (None, 1, 4, 16, 100, 1000):
        r = fs.cka_rbf(x, y, sigma=(1.5, 0.8), tile=tile, return_terms=True)
        assert r.unbiased.value == pytest.approx(want_u, rel=1e-9, abs=1e-13)
        assert r.biased.value == pytest.approx(want_b, rel=1e-9)


def test_hsic_terms_match_reference():
    x, y = paired(120, 4, 4, seed=2)
    r = fs.cka_rbf(x, y, 2.0, return_terms=True)
    K, L = ref.rbf_kernel(x, 2.0), ref.rbf_kernel(y, 2.0)
    for got, fn in ((r.unbiased, ref.hsic_unbiased), (r.biased, ref.hsic_biased)):
        assert got.kl == pytest.approx(fn(K, L), rel=1e-9)
        assert got.kk == pytest.approx(fn(K, K), rel=1e-9)
        assert got.ll == pytest.approx(fn(L, L), rel=1e-9)


def test_float32_is_close():
    x, y = paired(600, 32, 32, seed=3, dtype=np.float32)
    for sigma in (4.0, 40.0, 4000.0):
        want = ref.cka_rbf(x, y, sigma)
        assert fs.cka_rbf(x, y, sigma) == pytest.approx(want, rel=1e-5)
    # mixed precisions are computed in float64
    assert fs.cka_rbf(x, y.astype(np.float64), 4.0) == pytest.approx(ref.cka_rbf(x, y, 4.0), rel=1e-9)


def test_identical_bits_for_any_threads_and_tile():
    x, y = paired(900, 16, 8, seed=4, dtype=np.float32)
    base = fs.cka_rbf(x, y, 3.0, threads=1, tile=300, return_terms=True)
    for threads, tile in ((2, 300), (2, 300), (1, 300)):
        assert fs.cka_rbf(x, y, 3.0, threads=threads, tile=tile, return_terms=True) == base
    for tile in (64, 301, 1024):  # another tiling changes only the rounding
        r = fs.cka_rbf(x, y, 3.0, tile=tile, return_terms=True)
        assert r.unbiased.value == pytest.approx(base.unbiased.value, rel=1e-6)


def test_scaled_copy_aligns_perfectly_and_independent_data_near_zero():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 8))
    assert fs.cka_rbf(x, 3.0 * x, sigma=(1.0, 3.0)) == pytest.approx(1.0, rel=1e-12)
    values = [fs.cka_rbf(rng.standard_normal((40, 3)), rng.standard_normal((40, 3)), 1.0) for _ in range(12)]
    assert min(values) < 0 < max(values)  # honest negative estimates, no NaN


def test_kernel_underflowed_to_identity_gives_zero():
    x, y = paired(50, 4, 4, seed=6, dtype=np.float32)
    # sigma so small that every off-diagonal float32 kernel entry underflows
    r = fs.cka_rbf(1e3 * x, y, 1e-3, return_terms=True)
    assert r.unbiased.kk == 0.0 and r.unbiased.value == 0.0


def test_bad_input():
    x, y = paired(20, 3, 3, seed=7)
    for sigma in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
            fs.cka_rbf(x, y, sigma)
    with pytest.raises(TypeError, match="sigma must be a positive number"):
        fs.cka_rbf(x, y, "1")
    with pytest.raises(ValueError, match="a number or a pair"):
        fs.cka_rbf(x, y, (1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="paired row by row"):
        fs.cka_rbf(x, y[:10])
    with pytest.raises(ValueError, match="needs at least 4 rows"):
        fs.cka_rbf(x[:3], y[:3])
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"images has non-finite values .* in 1 row: 2"):
        fs.cka_rbf(x, y)
