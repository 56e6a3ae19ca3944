"""fs.retrieval against the NumPy float64 reference (docs/definitions.md "Retrieval"): exact ranks in
both directions for every ground-truth shape, tilings that do and do not divide n, ties,
rounding-level near-ties, thread-count independence, and argument validation."""
import numpy as np
import pytest

import fastsas as fs
from fastsas import _core
from fastsas import reference as ref

RANK_KEYS = ("i2t_ranks", "t2i_ranks")


def paired(n_img, n_txt, d, rng, owners=None, noise=1.0, dtype=np.float64):
    """Images, and texts that are noisy copies of the image that owns them (owners[j])."""
    x = rng.standard_normal((n_img, d))
    if owners is None:
        owners = np.arange(n_txt) % n_img
    y = x[owners] + noise * rng.standard_normal((n_txt, d))
    return x.astype(dtype), y.astype(dtype)


def assert_matches_reference(got, want, ks=(1, 5, 10)):
    for key in RANK_KEYS:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    for name in ("i2t", "t2i"):
        for k in ks:
            assert got[f"{name}_r{k}"] == want[f"{name}_r{k}"]
        for stat in ("median_rank", "mean_rank", "mrr", "unmatched"):
            assert got[f"{name}_{stat}"] == pytest.approx(want[f"{name}_{stat}"], rel=1e-12), stat
    assert got["rsum"] == pytest.approx(want["rsum"], rel=1e-12)


# ------------------------------------------------------------------ one-to-one, any n, any tile
@pytest.fixture(scope="module")
def big_case():
    rng = np.random.default_rng(1)
    x, y = paired(5000, 5000, 48, rng, noise=1.2)
    return x, y, ref.retrieval(x, y)


@pytest.mark.parametrize("tile", [None, 1000, 333, (7, 640), (2048, 4096)])
def test_one_to_one_n5000_tilings(big_case, tile):
    x, y, want = big_case
    got = fs.retrieval(x, y, return_ranks=True, tile=tile)
    assert_matches_reference(got, want)
    assert 0 < got["i2t_r1"] < 1 and got["n_images"] == got["n_texts"] == 5000
    assert got["i2t_unmatched"] == got["t2i_unmatched"] == 0


@pytest.mark.parametrize("n", [1, 2, 3, 17, 64, 257, 1000])
@pytest.mark.parametrize("tile", [None, 1, 5, 64, (3, 100)])
def test_one_to_one_small_n(n, tile):
    rng = np.random.default_rng(n)
    x, y = paired(n, n, 16, rng, noise=1.0)
    ks = tuple(k for k in (1, 5, 10) if k <= n)
    got = fs.retrieval(x, y, ks=ks, return_ranks=True, tile=tile)
    assert_matches_reference(got, ref.retrieval(x, y, ks=ks), ks)
    np.testing.assert_array_equal(got["i2t_queries"], np.arange(n))


# ------------------------------------------------------------------ other ground truths
@pytest.mark.parametrize("tile", [None, (50, 333)])
def test_five_texts_per_image(tile):
    rng = np.random.default_rng(5)
    n_img = 400
    owners = rng.permutation(np.repeat(np.arange(n_img), 5))
    x, y = paired(n_img, 5 * n_img, 32, rng, owners=owners, noise=1.3)
    want = ref.retrieval(x, y, np.arange(n_img), owners)
    got = fs.retrieval(x, y, np.arange(n_img), owners, return_ranks=True, tile=tile)
    assert_matches_reference(got, want)
    # Arbitrary hashable ids (strings) give the same ground truth.
    got_s = fs.retrieval(x, y, [f"img{i}" for i in range(n_img)], [f"img{o}" for o in owners], tile=tile)
    assert got_s["rsum"] == want["rsum"]


@pytest.mark.parametrize("tile", [None, (37, 64)])
def test_several_images_per_text_with_unmatched(tile):
    rng = np.random.default_rng(6)
    n_txt = 300
    img_owner = rng.permutation(np.repeat(np.arange(n_txt), 3))      # 900 images, 3 per report
    x = rng.standard_normal((900, 40))
    y = np.zeros((n_txt, 40))
    np.add.at(y, img_owner, x)
    y += 2.0 * rng.standard_normal(y.shape)
    # 11 images whose study has no report, and 7 reports with no image.
    img_ids = img_owner.copy()
    img_ids[:11] = 10_000 + np.arange(11)
    txt_ids = np.arange(n_txt)
    txt_ids[-7:] = 20_000 + np.arange(7)
    want = ref.retrieval(x, y, img_ids, txt_ids)
    got = fs.retrieval(x, y, img_ids, txt_ids, return_ranks=True, tile=tile)
    assert_matches_reference(got, want)
    assert got["i2t_unmatched"] == want["i2t_unmatched"] > 11
    assert got["t2i_unmatched"] == 7
    assert len(got["i2t_ranks"]) == 900 - got["i2t_unmatched"]
    matched = np.isin(img_ids, txt_ids)
    np.testing.assert_array_equal(got["i2t_queries"], np.flatnonzero(matched))


def test_float32_matches_reference_away_from_near_ties():
    """float32 input: ranks equal the float64 reference wherever no candidate is within
    float32 rounding of the query's threshold (and those queries are almost all)."""
    rng = np.random.default_rng(7)
    n = 1500
    x, y = paired(n, n, 64, rng, noise=1.1, dtype=np.float32)
    want = ref.retrieval(x, y)
    got = fs.retrieval(x, y, return_ranks=True)
    S = ref._unit_rows(x.astype(np.float64), "x") @ ref._unit_rows(y.astype(np.float64), "y").T
    thr = np.diag(S)
    margin = 1e-5
    near_i = (np.abs(S - thr[:, None]) < margin).sum(axis=1) > 1       # the match itself is at 0
    near_t = (np.abs(S - thr[None, :]) < margin).sum(axis=0) > 1
    assert near_i.sum() < 0.01 * n and near_t.sum() < 0.01 * n
    np.testing.assert_array_equal(got["i2t_ranks"][~near_i], want["i2t_ranks"][~near_i])
    np.testing.assert_array_equal(got["t2i_ranks"][~near_t], want["t2i_ranks"][~near_t])
    assert np.abs(got["i2t_ranks"] - want["i2t_ranks"]).max() <= 1


# ------------------------------------------------------------------ ties and rounding
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tile", [None, (3, 5), (64, 7)])
def test_duplicated_candidate_is_a_tie_in_the_querys_favour(dtype, tile):
    """A non-matching text that duplicates (or is a positive multiple of) a query's match is
    exactly as similar as the match: ties count in the query's favour, whatever the tiling."""
    rng = np.random.default_rng(8)
    n, d = 200, 24
    x, y = paired(n, n, d, rng, noise=1.5, dtype=dtype)
    far = y.copy()
    dup = y.copy()
    pairs = [(3, 150), (10, 11), (199, 0), (50, 51)]   # (query i, slot k) across tile edges
    for i, k in pairs:
        far[k] = -y[i]                    # never beats the match: a neutral reference point
        dup[k] = y[i] if k % 2 else 2 * y[i]
    base = fs.retrieval(x, far, return_ranks=True, tile=tile)
    got = fs.retrieval(x, dup, return_ranks=True, tile=tile)
    for i, _ in pairs:
        assert got["i2t_ranks"][i] == base["i2t_ranks"][i]
    # Same on the text side: an image duplicating a text query's match.
    xfar, xdup = x.copy(), x.copy()
    for j, k in pairs:
        xfar[k] = -x[j]
        xdup[k] = 4 * x[j] if k % 2 else x[j]   # powers of two: exact multiples
    base = fs.retrieval(xfar, y, return_ranks=True, tile=tile)
    got = fs.retrieval(xdup, y, return_ranks=True, tile=tile)
    for j, _ in pairs:
        assert got["t2i_ranks"][j] == base["t2i_ranks"][j]


def test_exact_tie_with_the_match_gives_rank_one():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    y = np.array([[1.0, 0.0], [2.0, 0.0], [0.5, 0.5]], dtype=np.float32)   # text 1 ties text 0
    r = fs.retrieval(x, y, ks=(1,), return_ranks=True)
    assert r["i2t_ranks"][0] == 1
    assert ref.retrieval(x, y, ks=(1,))["i2t_ranks"][0] == 1


@pytest.mark.parametrize("tile", [(0, 0), (4, 9)])
def test_rounding_level_near_ties_are_decided_exactly(tile):
    """float32: a non-match a few ulps more (or less) similar than the match. Tile values
    cannot tell them apart reliably; the result must follow the exact similarities."""
    rng = np.random.default_rng(9)
    n, d = 64, 64
    x, y = paired(n, n, d, rng, noise=0.3, dtype=np.float32)    # every match ranks first
    xn = ref._unit_rows(x.astype(np.float64), "x")
    yn = ref._unit_rows(y.astype(np.float64), "y")
    assert np.all(np.argmax(xn @ yn.T, axis=1) == np.arange(n))
    closer, farther = y.copy(), y.copy()
    queries = [0, 5, 31, 63]
    for i in queries:
        k = (i + 17) % n
        # A copy of the match, moved so its similarity to the query changes by ~2e-6 (tens of
        # float32 ulps, inside the GEMM rounding band) towards / away from the query.
        step = 3e-5 * (xn[i] - (xn[i] @ yn[i]) * yn[i])
        closer[k] = (yn[i] + step).astype(np.float32)
        farther[k] = (yn[i] - step).astype(np.float32)
    for data, expect in ((closer, 2), (farther, 1)):
        dn = ref._unit_rows(data.astype(np.float64), "y")
        got = _core.retrieval(x, data.astype(np.float32), None, None, tile[0], tile[1], 2, 0)
        want = ref.retrieval(x.astype(np.float64), dn)
        for i in queries:
            assert want["i2t_ranks"][i] == expect
            assert got["image_ranks"][i] == expect, (i, expect)
        assert got["rechecked"] > 0


def test_a_match_never_counts_against_its_query():
    """A query with two matches, one a positive multiple of the other: neither is a rival."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((30, 8)).astype(np.float32)
    y = np.concatenate([x + 0.1 * rng.standard_normal(x.shape).astype(np.float32), 3 * x[:5]])
    text_ids = np.concatenate([np.arange(30), np.arange(5)])
    r = fs.retrieval(x, y, np.arange(30), text_ids, ks=(1,), return_ranks=True)
    want = ref.retrieval(x, y, np.arange(30), text_ids, ks=(1,))
    np.testing.assert_array_equal(r["i2t_ranks"], want["i2t_ranks"])
    np.testing.assert_array_equal(r["t2i_ranks"], want["t2i_ranks"])
    assert np.all(r["i2t_ranks"][:5] == 1)


# ------------------------------------------------------------------ determinism, top-k, layouts
def test_threads_do_not_change_anything():
    rng = np.random.default_rng(11)
    x, y = paired(700, 700, 32, rng, noise=1.5, dtype=np.float32)
    one = fs.retrieval(x, y, return_ranks=True, return_topk=5, threads=1, tile=(64, 128))
    two = fs.retrieval(x, y, return_ranks=True, return_topk=5, threads=2, tile=(64, 128))
    for key in one:
        np.testing.assert_array_equal(one[key], two[key], err_msg=key)
    other_tile = fs.retrieval(x, y, return_ranks=True, threads=2, tile=(100, 333))
    for key in RANK_KEYS:
        np.testing.assert_array_equal(one[key], other_tile[key])


def test_topk_lists_the_best_candidates():
    rng = np.random.default_rng(12)
    x, y = paired(300, 250, 16, rng, owners=rng.integers(0, 300, 250), noise=1.0)
    r = fs.retrieval(x, y, np.arange(300), rng.integers(0, 300, 250), return_topk=7, tile=(32, 50))
    S = ref._unit_rows(x, "x") @ ref._unit_rows(y, "y").T
    np.testing.assert_array_equal(r["i2t_topk"], np.argsort(-S, axis=1, kind="stable")[:, :7])
    np.testing.assert_array_equal(r["t2i_topk"], np.argsort(-S.T, axis=1, kind="stable")[:, :7])
    np.testing.assert_allclose(r["i2t_topk_sim"], np.take_along_axis(S, r["i2t_topk"], 1), atol=1e-12)
    # A gallery smaller than k is padded.
    small = fs.retrieval(x[:3], y[:3], ks=(1,), return_topk=5)
    assert (small["i2t_topk"][:, 3:] == -1).all() and np.isnan(small["i2t_topk_sim"][:, 3:]).all()


def test_layouts_and_dtypes():
    rng = np.random.default_rng(13)
    x, y = paired(120, 120, 20, rng, noise=1.0)
    want = ref.retrieval(x, y)
    for xx, yy in ((np.asfortranarray(x), y), (x[::-1][::-1], np.ascontiguousarray(y)),
                   (np.repeat(x, 2, axis=1)[:, ::2], y), (x.astype(np.float32), y)):
        got = fs.retrieval(xx, yy, return_ranks=True)
        np.testing.assert_array_equal(got["i2t_ranks"], want["i2t_ranks"])
    got16 = fs.retrieval(x.astype(np.float16), y.astype(np.float16))
    assert 0 <= got16["i2t_r1"] <= 1
    # Default keys of the public contract.
    for key in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum"):
        assert key in got16


# ------------------------------------------------------------------ bad inputs
@pytest.fixture(scope="module")
def xy():
    rng = np.random.default_rng(14)
    return paired(20, 20, 8, rng)


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (dict(image_ids=np.arange(19), text_ids=np.arange(20)), ValueError, "image_ids"),
        (dict(image_ids=np.arange(20), text_ids=np.arange(21)), ValueError, "text_ids"),
        (dict(image_ids=np.arange(20).reshape(4, 5), text_ids=np.arange(20)), ValueError, "image_ids"),
        (dict(image_ids=np.arange(20)), ValueError, "text_ids"),
        (dict(text_ids=np.arange(20)), ValueError, "image_ids"),
        (dict(image_ids=np.arange(20), text_ids=np.arange(20) + 100), ValueError, "image_ids"),
        (dict(image_ids=[[1]] * 20, text_ids=[[1]] * 20), ValueError, "image_ids"),
        (dict(ks=()), ValueError, "ks"),
        (dict(ks=(1, 0)), ValueError, "ks"),
        (dict(ks=(-5,)), ValueError, "ks"),
        (dict(ks=(1, 2.5)), TypeError, "ks"),
        (dict(ks=(1, 1)), ValueError, "ks"),
        (dict(ks=(1, 21)), ValueError, "ks.*gallery"),
        (dict(ks="abc"), TypeError, "ks"),
        (dict(threads=0), ValueError, "threads"),
        (dict(tile=0), ValueError, "tile"),
        (dict(return_topk=-1), ValueError, "return_topk"),
    ],
)
def test_bad_arguments(xy, kwargs, exc, pattern):
    x, y = xy
    with pytest.raises(exc, match=pattern):
        fs.retrieval(x, y, **kwargs)


def test_k_larger_than_either_gallery(xy):
    x, y = xy
    with pytest.raises(ValueError, match="gallery"):
        fs.retrieval(x, y[:6], np.arange(20), np.arange(6), ks=(1, 10))


def test_unhashable_ids(xy):
    x, y = xy
    ids = np.empty(20, dtype=object)
    for i in range(20):
        ids[i] = [i]
    with pytest.raises(TypeError, match="image_ids"):
        fs.retrieval(x, y, ids, np.arange(20))


@pytest.mark.parametrize("side", ["images", "texts"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bad_rows_are_named(xy, side, dtype):
    x, y = (a.astype(dtype) for a in xy)
    a = x if side == "images" else y
    a[4, 2] = np.nan
    with pytest.raises(ValueError, match=rf"{side} has non-finite values.* 1 row: 4"):
        fs.retrieval(x, y)
    a[4, 2] = 1.0
    a[[7, 9]] = 0.0
    with pytest.raises(ValueError, match=rf"{side} has zero-norm rows.* in 2 rows: 7, 9") as info:
        fs.retrieval(x, y)
    assert info.value.rows == [7, 9]


def test_shape_and_dtype_errors(xy):
    x, y = xy
    with pytest.raises(ValueError, match="images must be 2-D"):
        fs.retrieval(x[0], y)
    with pytest.raises(ValueError, match="texts must be 2-D"):
        fs.retrieval(x, y[None])
    with pytest.raises(ValueError, match="dims 8 and 7"):
        fs.retrieval(x, y[:, :7])
    with pytest.raises(TypeError, match="images must hold float"):
        fs.retrieval(x.astype(np.int64), y)
    with pytest.raises(TypeError, match="texts must hold float"):
        fs.retrieval(x, y.astype(np.int32))
    with pytest.raises(ValueError, match="image_ids / text_ids"):
        fs.retrieval(x, y[:10])
    with pytest.raises(ValueError, match="images needs at least 1 row"):
        fs.retrieval(x[:0], y)
