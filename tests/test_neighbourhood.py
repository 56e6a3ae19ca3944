"""fs.knn, fs.neighbourhood and fs.neighbourhood_scores against the float64 NumPy reference
written from the definitions with full n x n matrices (fastsas.reference_neighbourhood):
several n and topk, ties, duplicated rows, float32; identical results for any thread count and
tile size; bad input refused with clear messages."""
import numpy as np
import pytest

import fastsas as fs
from fastsas import reference_neighbourhood as ref


def paired(n, d, seed, noise=0.7, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) + 0.3
    y = x + noise * rng.standard_normal((n, d))
    return x.astype(dtype), y.astype(dtype)


def with_duplicates(x, y, seed):
    """Rows copied to other positions (exact ties in both modalities)."""
    rng = np.random.default_rng(seed)
    n = len(x)
    src = rng.choice(n, size=n // 4, replace=False)
    dst = rng.choice(np.setdiff1d(np.arange(n), src), size=n // 4, replace=False)
    x, y = x.copy(), y.copy()
    x[dst], y[dst] = x[src], y[src]
    return x, y


def stored(x):
    """The rows as the engine stores them: normalised in float64, rounded to their dtype."""
    return ref.unit_rows(x).astype(x.dtype)


# -- neighbours ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n, topk", [(5, 1), (5, 4), (37, 3), (37, 36), (300, 10), (300, 1)])
def test_knn_matches_reference(n, topk):
    x, _ = paired(n, 12, seed=n + topk)
    got = fs.knn(x, topk)
    want = ref.knn(x, topk)
    np.testing.assert_array_equal(got.index, want)
    s = ref.unit_rows(x) @ ref.unit_rows(x).T
    np.testing.assert_allclose(got.similarity, np.take_along_axis(s, want, 1), rtol=0, atol=1e-14)
    assert got.index.dtype == np.int64 and got.similarity.dtype == np.float64


@pytest.mark.parametrize("seed", [0, 1])
def test_knn_duplicated_rows_break_ties_by_index(seed):
    x, _ = with_duplicates(*paired(120, 6, seed), seed)
    got = fs.knn(x, 7)
    np.testing.assert_array_equal(got.index, ref.knn(x, 7, decimals=12))
    # A duplicate is a neighbour at the top similarity; among equal similarities the order is
    # by index, so the similarities never increase and equal ones have increasing indices.
    sim, idx = got.similarity, got.index
    assert np.all(np.diff(sim, axis=1) <= 0)
    tied = np.diff(sim, axis=1) == 0
    assert np.all(np.diff(idx, axis=1)[tied] > 0)
    assert tied.any()


def test_knn_exact_ties_of_a_symmetric_configuration():
    # +-e_k: every other axis is at cosine 0 exactly, the opposite vector at -1.
    d = 5
    x = np.concatenate([np.eye(d), -np.eye(d)]).astype(np.float32)
    got = fs.knn(x, 9)
    for i in range(2 * d):
        opposite = (i + d) % (2 * d)
        others = [j for j in range(2 * d) if j not in (i, opposite)]
        assert got.index[i].tolist() == others + [opposite]
        assert got.similarity[i].tolist() == [0.0] * 8 + [-1.0]


def test_knn_float32_is_exact_on_its_stored_rows():
    x, _ = paired(400, 24, seed=3, dtype=np.float32)
    got = fs.knn(x, 10)
    np.testing.assert_array_equal(got.index, ref.knn(stored(x), 10))
    u = stored(x).astype(np.float64)
    np.testing.assert_allclose(got.similarity, np.take_along_axis(u @ u.T, got.index, 1), atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_knn_identical_for_any_threads_and_tile(dtype):
    x, _ = with_duplicates(*paired(1000, 32, seed=4, dtype=dtype), 4)
    base = fs.knn(x, 15, threads=1, tile=1000)
    for threads in (1, 2):
        for tile in (1, 64, 250, 333, 999, 4096):  # 250 divides 1000, the others do not
            if tile == 1 and threads == 2:
                continue  # one row per block: slow, and threads=1 covers it
            got = fs.knn(x, 15, threads=threads, tile=tile)
            np.testing.assert_array_equal(got.index, base.index)
            np.testing.assert_array_equal(got.similarity, base.similarity)


def test_knn_head_is_the_smaller_topk():
    x, _ = paired(200, 8, seed=5)
    a = fs.knn(x, 20)
    b = fs.knn(x, 6)
    np.testing.assert_array_equal(a.head(6).index, b.index)
    np.testing.assert_array_equal(a.head(6).similarity, b.similarity)


def test_knn_strided_input_and_float16():
    x, _ = paired(150, 10, seed=6)
    np.testing.assert_array_equal(fs.knn(np.asfortranarray(x), 5).index, ref.knn(x, 5))
    big = np.zeros((150, 20))
    big[:, ::2] = x
    np.testing.assert_array_equal(fs.knn(big[:, ::2], 5).index, ref.knn(x, 5))
    h = x.astype(np.float16)
    np.testing.assert_array_equal(fs.knn(h, 5).index, fs.knn(h.astype(np.float32), 5).index)


# -- metrics ------------------------------------------------------------------------------------
def _reference_scores(x, y, topk, decimals=None):
    ia, ib = ref.knn(x, topk, decimals), ref.knn(y, topk, decimals)
    return {
        "mutual_knn": ref.mutual_knn(ia, ib),
        "cycle_knn": ref.cycle_knn(ia, ib),
        "lcs_knn": ref.lcs_knn(ia, ib),
        "edit_distance_knn": ref.edit_distance_knn(ia, ib),
        "cknna": ref.cknna(x, y, topk, True, decimals),
        "cknna_biased": ref.cknna(x, y, topk, False, decimals),
    }


def _check(got, want):
    for key in ("mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn"):
        assert getattr(got, key) == pytest.approx(want[key], rel=1e-12, abs=1e-15), key
    for key, terms in (("cknna", got.cknna_terms), ("cknna_biased", got.cknna_biased_terms)):
        value, kl, kk, ll = want[key]
        scale = max(abs(kk), abs(ll))
        for a, b in ((terms.kl, kl), (terms.kk, kk), (terms.ll, ll)):
            assert a == pytest.approx(b, rel=1e-9, abs=1e-12 * scale), key
        assert getattr(got, key) == pytest.approx(value, rel=1e-9, abs=1e-12), key
        assert terms.value == getattr(got, key)


@pytest.mark.parametrize("n, topk", [(6, 1), (6, 2), (6, 5), (50, 3), (50, 49), (300, 10)])
def test_neighbourhood_matches_reference(n, topk):
    x, y = paired(n, 9, seed=10 * n + topk)
    got = fs.neighbourhood(x, y, topk)
    _check(got, _reference_scores(x, y, topk))
    assert (got.n, got.topk) == (n, topk)
    assert got.image_neighbours is None and got.text_neighbours is None


def test_neighbourhood_with_duplicated_rows():
    x, y = with_duplicates(*paired(160, 7, seed=11), 11)
    got = fs.neighbourhood(x, y, 8)
    _check(got, _reference_scores(x, y, 8, decimals=12))


def test_neighbourhood_different_dims_and_dtypes():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((200, 16))
    y = np.concatenate([x[:, :5], rng.standard_normal((200, 3))], axis=1).astype(np.float32)
    got = fs.neighbourhood(x, y, 6)
    want = _reference_scores(x, stored(y), 6)
    _check(got, want)


def test_identical_modalities_align_perfectly():
    x, _ = paired(100, 10, seed=13)
    r = fs.neighbourhood(x, 3.0 * x, 5)
    assert (r.mutual_knn, r.cycle_knn, r.lcs_knn, r.edit_distance_knn) == (1.0, 1.0, 5.0, 1.0)
    assert r.cknna == pytest.approx(1.0, rel=1e-12)
    assert r.cknna_biased == pytest.approx(1.0, rel=1e-12)


def test_neighbourhood_returns_the_lists_and_scores_reuse_them():
    x, y = paired(250, 8, seed=14)
    full = fs.neighbourhood(x, y, 12, return_neighbours=True)
    np.testing.assert_array_equal(full.image_neighbours.index, fs.knn(x, 12).index)
    np.testing.assert_array_equal(full.text_neighbours.index, fs.knn(y, 12).index)
    again = fs.neighbourhood_scores(full.image_neighbours, full.text_neighbours)
    assert again.to_dict() == full.to_dict()
    for k in (1, 4):
        small = fs.neighbourhood_scores(full.image_neighbours, full.text_neighbours, topk=k)
        assert small.to_dict() == fs.neighbourhood(x, y, k).to_dict()
    d = full.to_dict()
    assert set(d) == {"mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn", "cknna", "cknna_biased", "n",
                      "topk"}


def test_neighbourhood_identical_for_any_threads_and_tile():
    x, y = with_duplicates(*paired(700, 20, seed=15, dtype=np.float32), 15)
    base = fs.neighbourhood(x, y, 10, threads=1, tile=700).to_dict()
    for threads, tile in ((2, 700), (1, 96), (2, 96), (2, 350), (2, 1024)):
        assert fs.neighbourhood(x, y, 10, threads=threads, tile=tile).to_dict() == base


def test_reference_cknna_agrees_with_the_published_form_on_clean_data():
    # The published code divides by sqrt(kk ll) + 1e-6; on data without ties its neighbours
    # equal these, so the two differ only by that epsilon.
    x, y = paired(80, 6, seed=16)
    value, kl, kk, ll = ref.cknna(x, y, 5)
    assert fs.neighbourhood(x, y, 5).cknna == pytest.approx(value, rel=1e-10)
    assert kl / (np.sqrt(kk * ll) + 1e-6) == pytest.approx(value, rel=1e-3)


# -- bad input ----------------------------------------------------------------------------------
def test_bad_topk_is_refused():
    x, y = paired(20, 4, seed=17)
    for bad in (0, -1, 20, 25):
        with pytest.raises(ValueError, match=r"topk must be in \[1, n - 1\] = \[1, 19\]"):
            fs.knn(x, bad)
        with pytest.raises(ValueError, match=r"topk must be in \[1, n - 1\]"):
            fs.neighbourhood(x, y, bad)
    for bad in (2.0, "3", True, None):
        with pytest.raises(TypeError, match="topk must be a positive integer"):
            fs.knn(x, bad)


def test_bad_rows_are_named():
    x, y = paired(30, 4, seed=18)
    x[[3, 7]] = np.nan
    with pytest.raises(ValueError, match=r"images has non-finite values \(NaN or Inf\) in 2 rows: 3, 7"):
        fs.neighbourhood(x, y, 3)
    x, y = paired(30, 4, seed=18)
    y[5] = 0.0
    with pytest.raises(ValueError, match=r"texts has zero-norm rows .* in 1 row: 5"):
        fs.neighbourhood(x, y, 3)
    with pytest.raises(ValueError, match=r"x has zero-norm rows"):
        fs.knn(y, 3)
    y[5] = np.inf
    with pytest.raises(ValueError, match=r"x has non-finite values"):
        fs.knn(y, 3)


def test_bad_shapes_are_refused():
    x, y = paired(30, 4, seed=19)
    with pytest.raises(ValueError, match="paired row by row: got 30 and 29 rows"):
        fs.neighbourhood(x, y[:29], 3)
    with pytest.raises(ValueError, match="images needs at least 4 rows, got 3"):
        fs.neighbourhood(x[:3], y[:3], 1)
    with pytest.raises(ValueError, match="x needs at least 2 rows"):
        fs.knn(x[:1], 1)
    with pytest.raises(TypeError, match="float16, float32 or float64"):
        fs.knn(x.astype(np.int64), 2)
    with pytest.raises(ValueError, match="must be 2-D"):
        fs.knn(x[0], 2)
    with pytest.raises(ValueError, match="tile must be None or a positive integer"):
        fs.knn(x, 2, tile=0)


def test_bad_neighbour_lists_are_refused():
    x, y = paired(30, 4, seed=20)
    a, b = fs.knn(x, 5), fs.knn(y, 4)
    with pytest.raises(ValueError, match="same shape"):
        fs.neighbourhood_scores(a, b)
    with pytest.raises(TypeError, match="must be a fastsas Neighbours"):
        fs.neighbourhood_scores(a.index, b)
    with pytest.raises(ValueError, match=r"topk must be in \[1, n - 1\] = \[1, 4\]"):
        fs.neighbourhood_scores(a.head(4), b, topk=5)
    self_listed = fs.Neighbours(np.tile(np.arange(30)[:, None], (1, 4)), b.similarity)
    with pytest.raises(ValueError, match="row 0 lists neighbour 0"):
        fs.neighbourhood_scores(self_listed, b)
