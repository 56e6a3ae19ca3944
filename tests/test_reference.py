"""Sanity tests of the float64 NumPy reference (fastsas.reference) itself."""

import importlib.util
import itertools
import math
import pathlib

import numpy as np
import pytest

try:
    from fastsas import reference as ref
except Exception:  # package __init__ not importable yet (extension not built)
    _path = pathlib.Path(__file__).resolve().parents[1] / "python" / "fastsas" / "reference.py"
    _spec = importlib.util.spec_from_file_location("fastsas_reference_standalone", _path)
    ref = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(ref)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _structured(n=200, d=10, seed=0):
    """Correlated data with a decaying, well-separated spectrum."""
    r = _rng(seed)
    M = r.standard_normal((d, d))
    X = r.standard_normal((n, d)) * np.geomspace(3.0, 0.3, d) @ M + 1.5
    Y = 0.7 * X @ r.standard_normal((d, d)) / math.sqrt(d) + r.standard_normal((n, d)) - 0.5
    return X, Y


def _orthogonal(d, seed=1):
    q, r = np.linalg.qr(_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


# ----------------------------------------------------------------------------- SAS
def test_covariances_match_numpy_cov():
    X, Y = _structured(50, 4)
    Cx, Cy, Cxy = ref.covariances(X, Y)
    full = np.cov(np.hstack([X, Y]).T, bias=True)
    np.testing.assert_allclose(Cx, full[:4, :4], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(Cy, full[4:, 4:], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(Cxy, full[:4, 4:], rtol=1e-12, atol=1e-12)


def test_sas_self_is_one():
    X, _ = _structured()
    # rho_k = l_k / sqrt(l_k^2 + 1e-8): 1 up to ~1e-8 / l_k^2 for O(1) eigenvalues
    for q in (0.1, 0.5, 1.0):
        assert ref.sas(X, X, q) == pytest.approx(1.0, abs=1e-8)
        assert ref.sas(X, -2.0 * X, q) == pytest.approx(1.0, abs=1e-8)


def test_sas_analytic_profile():
    """Exact diag covariances: Cx = Cy = diag(4, 2, 1), Cxy = diag(4 cos th, 2, 1)."""
    n, th = 64, 0.7
    Q, _ = np.linalg.qr(_rng(3).standard_normal((n, 4)) - 0.0)
    Q, _ = np.linalg.qr(Q - Q.mean(axis=0))     # orthonormal, centred columns
    l = np.array([4.0, 2.0, 1.0])
    X = Q[:, :3] * np.sqrt(n * l) + 7.0
    Y = X.copy()
    Y[:, 0] = math.sqrt(4 * n) * (math.cos(th) * Q[:, 0] + math.sin(th) * Q[:, 3]) - 3.0
    rho = np.array([4 * math.cos(th) / math.sqrt(16 + 1e-8), 2 / math.sqrt(4 + 1e-8), 1 / math.sqrt(1 + 1e-8)])
    prof = ref.spectral_profile(X, Y)
    np.testing.assert_allclose(prof["eigenvalues"], l, rtol=1e-12)
    np.testing.assert_allclose(np.abs(prof["rho"]), rho, rtol=1e-12)
    np.testing.assert_allclose(prof["s"], l, rtol=1e-12)
    # d = 3, q = 0.1: t = quantile(l, 0.9) lies between 2 and 4 -> top mode only
    assert ref.sas(X, Y, 0.1) == pytest.approx(rho[0], rel=1e-12)
    assert ref.sas(X, Y, 1.0) == pytest.approx(np.sum(l * rho) / 7.0, rel=1e-12)


def test_spectral_profile_definition():
    X, Y = _structured(80, 6)
    p = ref.spectral_profile(X, Y)
    l = p["eigenvalues"]
    assert l.shape == p["a"].shape == p["s"].shape == p["rho"].shape == (6,)
    assert np.all(np.diff(l) <= 0) and np.all(l >= 0)
    np.testing.assert_allclose(p["rho"], p["a"] / np.sqrt(l * p["s"] + 1e-8), rtol=1e-14)
    # rank-deficient anchor: negative round-off must be clipped
    Z = np.hstack([X[:, :2], X[:, :2] @ np.ones((2, 4))])
    assert np.all(ref.spectral_profile(Z, Y)["eigenvalues"] >= 0.0)


@pytest.mark.parametrize(
    "d,q,kept",
    [(10, 0.1, 1), (10, 0.25, 3), (10, 0.5, 5), (10, 1.0, 10), (10, 0.0, 1),
     (5, 0.25, 2),  # 0.75 * 4 = 3 exactly: t equals the 2nd-largest l, kept by >=
     (5, 0.1, 1)],
)
def test_quantile_threshold_matches_numpy_linear(d, q, kept):
    X, Y = _structured(300, d, seed=d)
    p = ref.spectral_profile(X, Y)
    l, rho = p["eigenvalues"], np.abs(p["rho"])
    t = np.quantile(l, 1 - q, method="linear")
    assert np.count_nonzero(l >= t) == kept
    expected = np.sum(l[:kept] * rho[:kept]) / np.sum(l[:kept])
    assert ref.sas(X, Y, q) == pytest.approx(expected, rel=1e-13)


def test_sas_straightforward_agrees():
    for seed in range(3):
        X, Y = _structured(150, 12, seed)
        for q in (0.1, 0.3, 1.0):
            i2t, t2i, sym = ref.sas_straightforward(X, Y, q)
            assert i2t == pytest.approx(ref.sas(X, Y, q), abs=1e-9)
            assert t2i == pytest.approx(ref.sas(Y, X, q), abs=1e-9)
            assert sym == pytest.approx(0.5 * (i2t + t2i), abs=1e-15)
            assert 0.0 <= i2t <= 1.0 and 0.0 <= t2i <= 1.0


# ----------------------------------------------------------------------------- covariance family
def test_cka_and_coral_self():
    X, Y = _structured(60, 5)
    assert ref.cka(X, X) == pytest.approx(1.0, abs=1e-12)
    assert ref.cka(X, 3.0 * X @ _orthogonal(5) + 2.0) == pytest.approx(1.0, abs=1e-12)
    assert 0.0 < ref.cka(X, Y) < 1.0
    assert ref.coral(X, X) == 0.0
    expected = np.linalg.norm(np.cov(X.T) - np.cov(Y.T), "fro")  # np.cov is unbiased
    assert ref.coral(X, Y) == pytest.approx(expected, rel=1e-12)


def test_svcca_orthogonal_full_subspace():
    X, _ = _structured(100, 6)
    # d <= cca_dim: k = d, the whole column space, so every canonical correlation is 1
    assert ref.svcca(X, X @ _orthogonal(6)) == pytest.approx(1.0, abs=1e-10)


def test_svcca_signed_permutation():
    X, _ = _structured(200, 20)
    perm = _rng(5).permutation(20)
    R = np.eye(20)[:, perm] * np.where(_rng(6).random(20) < 0.5, -1.0, 1.0)
    assert ref.svcca(X, X @ R, cca_dim=10) == pytest.approx(1.0, abs=1e-8)


def test_svcca_against_covariance_cca():
    X, Y = _structured(120, 15)
    k = 10

    def proj(A):
        Z = (A - A.mean(0)) / (A.std(0, ddof=1) + 1e-8)
        return Z @ np.linalg.svd(Z, full_matrices=False)[2][:k].T

    Px, Py = proj(X), proj(Y)
    C = np.cov(np.hstack([Px, Py]).T)
    Sxx, Syy, Sxy = C[:k, :k], C[k:, k:], C[:k, k:]
    M = np.linalg.solve(Sxx, Sxy) @ np.linalg.solve(Syy, Sxy.T)
    rho = np.sqrt(np.clip(np.linalg.eigvals(M).real, 0, 1))
    assert ref.svcca(X, Y, cca_dim=k) == pytest.approx(rho.mean(), abs=1e-9)


def test_svcca_few_rows_uses_n_minus_1_pairs():
    X, Y = _structured(4, 8)
    assert ref.svcca(X, X) == pytest.approx(1.0, abs=1e-10)      # k = min(10, 8, 3) = 3
    v = ref.svcca(X, Y)
    assert 0.0 <= v <= 1.0 + 1e-12


def test_centroids():
    X = np.array([[1.0, 0.0], [3.0, 0.0]])   # mean (2, 0)
    Y = np.array([[0.0, 1.0], [0.0, 1.0]])   # mean (0, 1)
    assert ref.centroid_euclidean(X, Y) == pytest.approx(math.sqrt(5.0))
    assert ref.centroid_cosine(X, Y) == pytest.approx(1.0)
    assert ref.centroid_cosine(X, 2 * X) == pytest.approx(0.0, abs=1e-15)


# ----------------------------------------------------------------------------- pairwise family
def test_delta_cos_hand_examples():
    s = 1 / math.sqrt(2)
    X = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    # same directions: diag = 1, off-diagonal sum = 4 s over 6 pairs
    Y = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    assert ref.delta_cos(X, Y) == pytest.approx(1 - 4 * s / 6, rel=1e-14)
    # swapped axes: diag (0, 0, 1) -> 1/3; off-diagonal (1, s, 1, s, s, s) -> (2 + 4 s) / 6
    Y2 = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    assert ref.delta_cos(X, Y2) == pytest.approx(1 / 3 - (2 + 4 * s) / 6, rel=1e-14)
    assert ref.delta_cos(X, Y2) == pytest.approx(-math.sqrt(2) / 3, rel=1e-14)


def _cos(a, b):
    return sum(p * q for p, q in zip(a, b)) / math.sqrt(sum(p * p for p in a) * sum(q * q for q in b))


def test_rmg_and_cone_against_loops():
    r = _rng(7)
    X = r.standard_normal((5, 3)) + 1.0
    Y = r.standard_normal((5, 3)) - 0.5
    n = 5
    x, y = X.tolist(), Y.tolist()
    m = sum(1 - _cos(x[i], y[i]) for i in range(n)) / n
    pairs = list(itertools.combinations(range(n), 2))
    Dx = sum(1 - _cos(x[i], x[j]) for i, j in pairs)
    Dy = sum(1 - _cos(y[i], y[j]) for i, j in pairs)
    Sx = sum(_cos(x[i], x[j]) for i, j in pairs)
    sym = m / ((Dx + Dy) / (2 * n * (n - 1)) + m)
    paper = m / ((Sx + Dy) / (2 * n * (n - 1)) + m)
    assert ref.rmg(X, Y) == pytest.approx(sym, rel=1e-13)
    assert ref.rmg(X, Y, variant="symmetric") == pytest.approx(sym, rel=1e-13)
    assert ref.rmg(X, Y, variant="paper") == pytest.approx(paper, rel=1e-13)
    cone_x = sum(_cos(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    assert ref.cone(X) == pytest.approx(cone_x, rel=1e-13)
    assert ref.cone(np.tile([[1.0, 2.0]], (4, 1)) * np.arange(1, 5)[:, None]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ref.rmg(X, Y, variant="other")


def test_gap_vector_hand():
    X = np.array([[3.0, 4.0], [0.0, 2.0]])    # unit rows (.6, .8), (0, 1)
    Y = np.array([[1.0, 0.0], [0.0, -5.0]])   # unit rows (1, 0), (0, -1)
    np.testing.assert_allclose(ref.gap_vector(X, Y), [-0.2, 1.4], rtol=1e-14)


def test_zero_norm_rows_rejected():
    X = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    Y = np.ones((3, 2))
    for f in (ref.delta_cos, ref.rmg, ref.gap_vector):
        with pytest.raises(ValueError):
            f(X, Y)
    with pytest.raises(ValueError):
        ref.cone(X)
    with pytest.raises(ValueError):
        ref.retrieval(X, Y)


def test_alignment_dict():
    X, Y = _structured(80, 8)
    out = ref.alignment(X, Y)
    keys = {"sas_i2t", "sas_t2i", "sas_sym", "sas_imbalance", "cka", "coral", "svcca",
            "delta_cos", "rmg", "rmg_paper", "centroid_euclidean", "centroid_cosine",
            "cone_images", "cone_texts"}
    assert set(out) == keys
    assert all(type(v) is float for v in out.values())
    assert out["sas_i2t"] == ref.sas(X, Y) and out["sas_t2i"] == ref.sas(Y, X)
    assert out["sas_imbalance"] == out["sas_i2t"] - out["sas_t2i"]
    assert out["rmg_paper"] == ref.rmg(X, Y, "paper")


# ----------------------------------------------------------------------------- MMD
def test_mmd():
    r = _rng(11)
    x = r.standard_normal((7, 3)) * 4
    y = r.standard_normal((4, 3)) * 4 + 2
    assert ref.mmd(x, x) == pytest.approx(0.0, abs=1e-12)
    assert ref.mmd(x, y) > 0.0

    def k(a, b, s=10.0):
        return math.exp(-sum((p - q) ** 2 for p, q in zip(a, b)) / (2 * s * s))

    xs, ys = x.tolist(), y.tolist()
    kxx = sum(k(a, b) for a in xs for b in xs) / len(xs) ** 2
    kyy = sum(k(a, b) for a in ys for b in ys) / len(ys) ** 2
    kxy = sum(k(a, b) for a in xs for b in ys) / (len(xs) * len(ys))
    assert ref.mmd(x, y) == pytest.approx(100 * (kxx + kyy - 2 * kxy), rel=1e-12)
    assert ref.mmd([[0.0]], [[1.0]]) == pytest.approx(100 * (2 - 2 * math.exp(-1 / 200)), rel=1e-12)
    assert ref.mmd([[0.0]], [[1.0]], sigma=1.0) == pytest.approx(100 * (2 - 2 * math.exp(-0.5)), rel=1e-12)


# ----------------------------------------------------------------------------- retrieval
def test_retrieval_hand_example_with_tie_and_multi_captions():
    images = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.0, -1.0]])
    image_ids = ["a", "b", "c", "z"]                       # "z": no caption
    texts = np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    text_ids = ["a", "a", "b", "q", "c", "c"]              # "q": no image; T3 == T0 (tie)
    out = ref.retrieval(images, texts, image_ids, text_ids)
    # I0: best match 1, non-match T3 ties at 1 -> rank 1 (ties favour the query)
    # I1: match .8, T5 = 1 beats it -> 2;  I2: best match .8, T1 (.96) and T2 (1) -> 3
    np.testing.assert_array_equal(out["i2t_ranks"], [1, 2, 3])
    assert out["i2t_ranks"].dtype == np.int64
    # T0 -> 1; T1: I2 (.96) > .8 -> 2; T2: I2 (1) > .8 -> 2; T4: match -.6, I1 and I3 (0) -> 3;
    # T5: match .8, I1 (1) -> 2
    np.testing.assert_array_equal(out["t2i_ranks"], [1, 2, 2, 3, 2])
    assert out["i2t_unmatched"] == 1 and out["t2i_unmatched"] == 1
    assert out["i2t_r1"] == pytest.approx(1 / 3) and out["i2t_r5"] == 1.0 and out["i2t_r10"] == 1.0
    assert out["t2i_r1"] == pytest.approx(1 / 5) and out["t2i_r5"] == 1.0
    assert out["rsum"] == pytest.approx(100 * (1 / 3 + 1 + 1 + 1 / 5 + 1 + 1))
    assert out["i2t_median_rank"] == 2.0 and out["t2i_median_rank"] == 2.0
    assert out["i2t_mean_rank"] == pytest.approx(2.0) and out["t2i_mean_rank"] == pytest.approx(2.0)
    assert out["i2t_mrr"] == pytest.approx(11 / 18) and out["t2i_mrr"] == pytest.approx(17 / 30)
    k2 = ref.retrieval(images, texts, image_ids, text_ids, ks=(2,))
    assert k2["i2t_r2"] == pytest.approx(2 / 3) and k2["t2i_r2"] == pytest.approx(4 / 5)
    assert k2["rsum"] == pytest.approx(100 * (2 / 3 + 4 / 5))


def test_retrieval_default_ids_and_brute_force():
    r = _rng(13)
    X = r.standard_normal((30, 4))
    Y = X + 0.8 * r.standard_normal((30, 4))
    out = ref.retrieval(X, Y)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    Yn = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    S = Xn @ Yn.T
    i2t = [1 + sum(S[i, j] > S[i, i] for j in range(30) if j != i) for i in range(30)]
    t2i = [1 + sum(S[j, i] > S[i, i] for j in range(30) if j != i) for i in range(30)]
    np.testing.assert_array_equal(out["i2t_ranks"], i2t)
    np.testing.assert_array_equal(out["t2i_ranks"], t2i)
    assert out["i2t_unmatched"] == 0
    for k in (1, 5, 10):
        assert out[f"i2t_r{k}"] == pytest.approx(np.mean(np.array(i2t) <= k))
    # several captions per image, by brute force
    ids = r.integers(0, 8, size=30)
    out = ref.retrieval(X[:8], Y, np.arange(8), ids)
    S = Xn[:8] @ Yn.T
    exp = []
    for i in range(8):
        mt = ids == i
        if mt.any():
            exp.append(1 + int(np.sum((S[i] > S[i, mt].max()) & ~mt)))
    np.testing.assert_array_equal(out["i2t_ranks"], exp)
    assert out["i2t_unmatched"] == 8 - len(exp)
    with pytest.raises(ValueError):
        ref.retrieval(X, Y, image_ids=np.arange(30))
