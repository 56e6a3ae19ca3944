"""fastsas metrics against the independent float64 NumPy reference (fastsas.reference)."""
import json

import numpy as np
import pytest

import fastsas as fs
from fastsas import reference as ref

from _compare import KEYS, worst_error


def _worst(got, want, x, y):
    return worst_error(got, want, x, y)


def _data(n, d, seed, dtype):
    factors = min(8, max(1, d // 4))
    if d >= factors + 2 + 2:
        return fs.synthetic.paired_embeddings(n, d, shared_factors=factors, image_only_factors=1,
                                              seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) + 1.0
    return x.astype(dtype), (x + 0.5 * rng.standard_normal((n, d))).astype(dtype)


# The reference builds n x n matrices for the pairwise family: n = 20000 takes ~45 s, so
# one such case runs by default and the others are marked slow.
SHAPES = [(3, 2), (5, 40), (17, 7), (200, 64), (1000, 2), (2049, 33), (3000, 256), (600, 1024)]
BIG = pytest.param(20000, 48, marks=pytest.mark.slow)


@pytest.mark.parametrize("n,d", SHAPES + [BIG])
@pytest.mark.parametrize("seed", [0, 1])
def test_float64_matches_reference(n, d, seed):
    x, y = _data(n, d, seed, np.float64)
    assert _worst(fs.alignment(x, y), ref.alignment(x, y), x, y) < 1e-9


@pytest.mark.parametrize("n,d", SHAPES + [BIG])
def test_float32_matches_reference(n, d):
    x, y = _data(n, d, 7, np.float32)
    # the reference computes in float64 on the same float32 values
    assert _worst(fs.alignment(x, y), ref.alignment(x, y), x, y) < 1e-5


@pytest.mark.parametrize("q", [0.05, 0.1, 0.25, 0.5, 0.999, 1.0])
def test_sas_every_q(q):
    x, y = _data(1500, 48, 3, np.float64)
    assert fs.sas(x, y, topq=q) == pytest.approx(ref.sas(x, y, q), rel=1e-10)
    assert fs.sas(y, x, topq=q) == pytest.approx(ref.sas(y, x, q), rel=1e-10)


def test_sweep_and_profile_match_reference():
    x, y = _data(2500, 96, 4, np.float64)
    m = fs.Moments(96).update(x, y)
    sweep = m.sas_sweep()
    assert np.allclose(sweep["q"], np.arange(1, 11) / 10)
    for q, a, b in zip(sweep["q"], sweep["sas_i2t"], sweep["sas_t2i"]):
        assert a == pytest.approx(ref.sas(x, y, q), rel=1e-10)
        assert b == pytest.approx(ref.sas(y, x, q), rel=1e-10)
    p, r = m.spectral_profile("i2t"), ref.spectral_profile(x, y)
    assert np.allclose(p.eigenvalues, r["eigenvalues"], rtol=1e-10, atol=1e-12)
    # mode signs are arbitrary but a, s and rho are quadratic forms: sign-free
    top = slice(0, 20)
    assert np.allclose(p.rho[top], r["rho"][top], rtol=1e-8)
    assert np.allclose(p.a[top], r["a"][top], rtol=1e-8)
    assert np.allclose(p.s[top], r["s"][top], rtol=1e-8)
    w = p.weights(0.1)
    assert w.sum() == pytest.approx(1.0)
    assert (w > 0).sum() == p.kept(0.1).sum() >= 1
    assert float(np.sum(w * np.abs(p.rho))) == pytest.approx(p.sas(0.1), rel=1e-12)


def test_single_metric_functions():
    x, y = _data(800, 40, 5, np.float64)
    assert fs.rmg(x, y) == pytest.approx(ref.rmg(x, y, "symmetric"), rel=1e-10)
    assert fs.rmg(x, y, variant="paper") == pytest.approx(ref.rmg(x, y, "paper"), rel=1e-10)
    assert fs.delta_cos(x, y) == pytest.approx(ref.delta_cos(x, y), rel=1e-10)
    assert fs.cka(x, y) == pytest.approx(ref.cka(x, y), rel=1e-10)
    assert fs.coral(x, y) == pytest.approx(ref.coral(x, y), rel=1e-10)
    assert fs.svcca(x, y) == pytest.approx(ref.svcca(x, y), rel=1e-9)
    m = fs.Moments(40).update(x, y)
    assert np.allclose(m.gap_vector(), ref.gap_vector(x, y), rtol=1e-10, atol=1e-14)


def test_svcca_is_exact_not_randomized():
    # SVCCA from the moments equals exact SVD + CCA (the reference), not a randomized SVD.
    x, y = _data(2000, 256, 11, np.float64)
    assert fs.svcca(x, y) == pytest.approx(ref.svcca(x, y), rel=1e-9)


def test_strong_cone_keeps_precision():
    # mean pairwise cosine ~0.9 inside each modality: the pilot shift must keep the digits
    x, y = fs.synthetic.paired_embeddings(6000, 64, image_only_factors=2, cone=25.0, seed=2, dtype=np.float32)
    r = ref.alignment(x, y)
    assert r["cone_images"] > 0.85 and r["cone_texts"] > 0.85
    assert _worst(fs.alignment(x, y), r, x, y) < 1e-5
    x64, y64 = x.astype(np.float64) + 100.0, y.astype(np.float64) + 100.0  # a far-off mean
    assert _worst(fs.alignment(x64, y64), ref.alignment(x64, y64), x64, y64) < 1e-9


def test_result_is_plain_json():
    x, y = _data(300, 16, 0, np.float32)
    out = fs.alignment(x, y)
    assert json.loads(json.dumps(out)) == out
    for k in ("sas_i2t", "sas_t2i", "sas_sym", "sas_imbalance", "cka", "coral", "svcca", "delta_cos",
              "rmg", "centroid_euclidean", "centroid_cosine"):
        assert isinstance(out[k], float)
    assert out["sas_sym"] == pytest.approx((out["sas_i2t"] + out["sas_t2i"]) / 2)
    assert out["sas_imbalance"] == pytest.approx(out["sas_i2t"] - out["sas_t2i"])
    assert out["n"] == 300


def test_layouts_give_the_same_answer():
    x, y = _data(700, 24, 9, np.float64)
    want = fs.alignment(x, y)
    fortran = fs.alignment(np.asfortranarray(x), np.asfortranarray(y))
    big_x = np.zeros((1400, 48)); big_x[::2, ::2] = x
    big_y = np.zeros((1400, 48)); big_y[::2, ::2] = y
    strided = fs.alignment(big_x[::2, ::2], big_y[::2, ::2])
    for k in KEYS:
        assert fortran[k] == pytest.approx(want[k], rel=1e-12, abs=1e-15)
        assert strided[k] == pytest.approx(want[k], rel=1e-12, abs=1e-15)
    flipped = fs.alignment(x[::-1], y[::-1])  # negative strides: same pairs, reversed order
    assert flipped["sas_i2t"] == pytest.approx(want["sas_i2t"], rel=1e-10)


def test_float16_is_computed_as_float32():
    x, y = _data(500, 32, 1, np.float16)
    got = fs.alignment(x, y)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    assert _worst(got, ref.alignment(x32, y32), x32, y32) < 1e-5


def test_mixed_precision_is_float64():
    x, y = _data(500, 32, 1, np.float64)
    got = fs.alignment(x.astype(np.float32), y)
    x64 = x.astype(np.float32).astype(np.float64)
    assert _worst(got, ref.alignment(x64, y), x64, y) < 1e-9


def test_memmap_input(tmp_path):
    x, y = _data(3000, 32, 2, np.float32)
    np.save(tmp_path / "x.npy", x); np.save(tmp_path / "y.npy", y)
    mx = np.load(tmp_path / "x.npy", mmap_mode="r"); my = np.load(tmp_path / "y.npy", mmap_mode="r")
    assert fs.alignment(mx, my) == fs.alignment(x, y)
