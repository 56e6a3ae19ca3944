"""Reduced-precision screening of the retrieval tiles (bfloat16 / int8 with a proven band):
ranks identical to the float32/float64 engine and to the float64 reference on random,
cone-shaped (CLIP-like) and id-grouped data, with planted near-ties inside the band, for
every precision the CPU has, threads 1 and 2, tiles that do and do not divide n; the bound
itself against the canonical values on adversarial rows; the sharded entry points."""
import numpy as np
import pytest

import fastsas as fs
from fastsas import _core
from fastsas import reference as ref
from test_retrieval import paired

SCREENS = [p for p in ("bfloat16", "int8") if _core.screen_supported(p)]
ALL = ["float32", *SCREENS, "auto"]
needs_screen = pytest.mark.skipif(not SCREENS, reason="this CPU has neither AVX512_BF16 nor AVX512_VNNI")




def ranks_of(x, y, ids=(None, None), **kw):
    r = fs.retrieval(x, y, *ids, ks=(1,), return_ranks=True, backend="cpu", **kw)
    return r["i2t_ranks"], r["t2i_ranks"], r


def assert_same_ranks(got, want):
    np.testing.assert_array_equal(got[0], want[0], err_msg="i2t")
    np.testing.assert_array_equal(got[1], want[1], err_msg="t2i")


# ------------------------------------------------------------------ the bound itself
@needs_screen
@pytest.mark.parametrize("precision", SCREENS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 2, 3, 7, 33, 256])
def test_bound_holds_for_every_pair(precision, dtype, d):
    rng = np.random.default_rng(d)
    x = rng.standard_normal((37, d))
    y = rng.standard_normal((45, d))
    # Adversarial rows: one dominant coordinate, subnormal-scale coordinates, exact copies,
    # a constant row, alternating magnitudes over 30 binades.
    x[0] = 0.0
    x[0, 0] = 1.0
    if d > 1:
        x[1, 1:] = 1e-30
        x[2, ::2] = 2.0 ** -140
    y[0] = x[3]
    y[1] = 1.0
    y[2] = np.where(np.arange(d) % 2 == 0, 1.0, 1e-9)
    c = _core.retrieval_screen_check(x.astype(dtype), y.astype(dtype), precision)
    err = np.abs(c["screened"].astype(np.float64) - c["canonical"])
    assert np.all(err <= c["bound"]), (err / c["bound"]).max()
    # ... and the canonical value is the one the engine ranks by.
    np.testing.assert_allclose(c["canonical"], ref._unit_rows(x.astype(dtype).astype(np.float64), "x")
                               @ ref._unit_rows(y.astype(dtype).astype(np.float64), "y").T, atol=1e-6)


@needs_screen
def test_bound_is_tight_enough_to_pay():
    """On ordinary rows of d = 512 the band is a few 1e-3 wide (bfloat16) and ~1.5e-2 (int8)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 512)).astype(np.float32)
    for precision, widest in (("bfloat16", 5e-3), ("int8", 2.5e-2)):
        if precision in SCREENS:
            c = _core.retrieval_screen_check(x, x, precision)
            assert c["bound"].max() < widest


# ------------------------------------------------------------------ ranks: every precision agrees
@pytest.fixture(scope="module")
def random_case():
    rng = np.random.default_rng(2)
    x, y = paired(1500, 1500, 48, rng, noise=1.1)
    return x, y, ref.retrieval(x, y)


@pytest.mark.parametrize("precision", ALL)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("tile", [None, (8, 32), (13, 100), (500, 1500)])
def test_random_data_float64_equals_reference(random_case, precision, threads, tile):
    x, y, want = random_case
    got = ranks_of(x, y, precision=precision, threads=threads, tile=tile)
    assert_same_ranks(got, (want["i2t_ranks"], want["t2i_ranks"]))
    if precision != "auto":
        assert got[2].screen["precision"] == precision
    assert got[2].screen["screened"] == 1500 * 1500


@pytest.mark.parametrize("precision", ALL)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [1, 7, 33, 257, 1001])
def test_float32_equals_float32_engine(precision, threads, n):
    rng = np.random.default_rng(n)
    x, y = paired(n, n, 24, rng, noise=1.0, dtype=np.float32)
    want = ranks_of(x, y, precision="float32", threads=1)
    for tile in (None, (16, 64), (5, 7)):
        assert_same_ranks(ranks_of(x, y, precision=precision, threads=threads, tile=tile), want)


@pytest.mark.parametrize("precision", ALL)
def test_cone_shaped_clip_like_data(precision):
    """Mean cosine ~0.27, matched pairs ~0.3 above it, R@1 ~0.5: thresholds sit where the
    similarities are dense, so many pairs fall inside the band and are re-decided."""
    x, y = fs.synthetic.paired_embeddings(3000, 128, shared_factors=16, noise=0.45, cone=8.0, gap=1.0, seed=3)
    xn, yn = ref._unit_rows(x.astype(np.float64), "x"), ref._unit_rows(y.astype(np.float64), "y")
    off = (xn[:200] @ yn.T).mean()
    assert 0.2 < off < 0.4
    want = ranks_of(x, y, precision="float32")
    got = ranks_of(x, y, precision=precision, tile=(100, 300))
    assert_same_ranks(got, want)
    if precision in SCREENS:
        assert got[2].screen["rechecked"] > 100
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    want64 = ref.retrieval(x64, y64)
    assert_same_ranks(ranks_of(x64, y64, precision=precision), (want64["i2t_ranks"], want64["t2i_ranks"]))


@pytest.mark.parametrize("precision", ALL)
@pytest.mark.parametrize("threads", [1, 2])
def test_five_captions_per_image(precision, threads):
    rng = np.random.default_rng(5)
    n_img = 300
    owners = rng.permutation(np.repeat(np.arange(n_img), 5))
    x, y = paired(n_img, 5 * n_img, 32, rng, owners=owners, noise=1.3)
    want = ref.retrieval(x, y, np.arange(n_img), owners)
    got = ranks_of(x, y, (np.arange(n_img), owners), precision=precision, threads=threads, tile=(40, 96))
    assert_same_ranks(got, (want["i2t_ranks"], want["t2i_ranks"]))


@pytest.mark.parametrize("precision", ALL)
def test_several_images_per_report_and_coarse_ids(precision):
    """Three images per report, unmatched rows on both sides; then coarse ids (5 classes of
    ~400 rows: the thresholds take GEMM tiles per class) with exact duplicates."""
    rng = np.random.default_rng(6)
    n_txt = 250
    owner = rng.permutation(np.repeat(np.arange(n_txt), 3))
    y, x = paired(n_txt, 3 * n_txt, 40, rng, owners=owner, noise=1.2)   # images: noisy copies of their report
    img_ids = owner.copy()
    img_ids[:9] = 10_000 + np.arange(9)
    txt_ids = np.arange(n_txt)
    txt_ids[-5:] = 20_000 + np.arange(5)
    want = ref.retrieval(x, y, img_ids, txt_ids)
    assert want["t2i_unmatched"] == 5 and want["i2t_unmatched"] >= 9
    assert_same_ranks(ranks_of(x, y, (img_ids, txt_ids), precision=precision), (want["i2t_ranks"], want["t2i_ranks"]))

    classes_x = rng.integers(0, 5, 2000)
    classes_y = rng.integers(0, 5, 1900)
    xc = rng.standard_normal((2000, 24)) + 0.8 * np.eye(5, 24)[classes_x] * 6
    yc = rng.standard_normal((1900, 24)) + 0.8 * np.eye(5, 24)[classes_y] * 6
    yc[100:110] = yc[:10]        # exact duplicates: ties
    want = ref.retrieval(xc, yc, classes_x, classes_y)
    assert_same_ranks(ranks_of(xc, yc, (classes_x, classes_y), precision=precision, tile=(64, 96)),
                      (want["i2t_ranks"], want["t2i_ranks"]))


@pytest.mark.parametrize("precision", ALL)
def test_negative_thresholds_with_partial_panels(precision):
    """Texts anti-aligned with their images: every threshold is negative, and the padding of
    the last screen panel (value 0) must never count against a query."""
    rng = np.random.default_rng(7)
    for n in (5, 33, 70):
        x = rng.standard_normal((n, 9))
        y = -x + 0.3 * rng.standard_normal((n, 9))
        want = ref.retrieval(x, y)
        assert want["i2t_ranks"].max() > 1
        assert_same_ranks(ranks_of(x, y, precision=precision), (want["i2t_ranks"], want["t2i_ranks"]))


# ------------------------------------------------------------------ planted near-ties inside the band
@needs_screen
@pytest.mark.parametrize("precision", SCREENS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tile", [None, (8, 32), (24, 40)])
def test_planted_near_ties_inside_the_band(precision, dtype, tile):
    """Non-matches 1e-5 more (or less) similar than the match: far inside the screen's band
    (~4e-3), so the screened value cannot decide them; the ranks must follow the exact values."""
    rng = np.random.default_rng(9)
    n, d = 96, 64
    x, y = paired(n, n, d, rng, noise=0.3, dtype=dtype)
    xn = ref._unit_rows(x.astype(np.float64), "x")
    yn = ref._unit_rows(y.astype(np.float64), "y")
    assert np.all(np.argmax(xn @ yn.T, axis=1) == np.arange(n))
    closer, farther = y.copy(), y.copy()
    queries = [0, 5, 31, 32, 63, 95]
    for i in queries:
        k = (i + 17) % n
        step = 1e-4 * (xn[i] - (xn[i] @ yn[i]) * yn[i])
        closer[k] = (yn[i] + step).astype(dtype)
        farther[k] = (yn[i] - step).astype(dtype)
    for data, expect in ((closer, 2), (farther, 1)):
        want = ref.retrieval(x.astype(np.float64), data.astype(np.float64))
        exact = ranks_of(x, data, precision="float32")
        got = ranks_of(x, data, precision=precision, tile=tile, threads=2)
        assert_same_ranks(got, exact)
        for i in queries:
            assert want["i2t_ranks"][i] == expect
            assert got[0][i] == expect
        assert got[2].screen["rechecked"] >= len(queries)


# ------------------------------------------------------------------ sharded entry points
@pytest.mark.parametrize("precision", ALL)
def test_sharded_counts_equal_in_process_ranks(precision):
    rng = np.random.default_rng(10)
    x, y = paired(400, 500, 20, rng, owners=rng.integers(0, 400, 500), noise=1.0, dtype=np.float32)
    icodes = np.arange(400, dtype=np.int32)
    tcodes = rng.integers(0, 400, 500).astype(np.int32)
    whole = _core.retrieval(x, y, icodes, tcodes, 0, 0, 2, 0, "float32")
    ithr = _core.retrieval_thresholds(x, y, icodes, tcodes, "x", "y", 2)
    tthr = _core.retrieval_thresholds(y, x, tcodes, icodes, "y", "x", 2)
    img_counts = np.zeros(400, dtype=np.int64)
    txt_counts = np.zeros(500, dtype=np.int64)
    for a in range(0, 400, 150):
        for b in range(0, 500, 170):
            r = _core.retrieval_counts(x[a:a + 150], y[b:b + 170], icodes[a:a + 150], tcodes[b:b + 170],
                                       ithr[a:a + 150], tthr[b:b + 170], threads=2, precision=precision)
            img_counts[a:a + 150] += r["image_counts"]
            txt_counts[b:b + 170] += r["text_counts"]
            assert r["screened"] == min(150, 400 - a) * min(170, 500 - b)
    np.testing.assert_array_equal(np.where(np.isfinite(ithr), img_counts + 1, 0), whole["image_ranks"])
    np.testing.assert_array_equal(np.where(np.isfinite(tthr), txt_counts + 1, 0), whole["text_ranks"])


# ------------------------------------------------------------------ the choice and its errors
def test_precision_argument_errors():
    rng = np.random.default_rng(11)
    x, y = paired(20, 20, 8, rng)
    with pytest.raises(ValueError, match="precision must be one of"):
        fs.retrieval(x, y, precision="fp16")
    with pytest.raises(ValueError, match="precision must be"):
        _core.retrieval(x, y, None, None, 0, 0, 1, 0, "half")
    for p in ("bfloat16", "int8"):
        if p in SCREENS:
            with pytest.raises(ValueError, match="top-k"):
                fs.retrieval(x, y, return_topk=3, precision=p)
        else:
            with pytest.raises(ValueError, match="needs a CPU with"):
                fs.retrieval(x, y, precision=p)
    # auto keeps top-k lists on the input's own precision.
    r = fs.retrieval(x, y, return_topk=3)
    assert r.screen["precision"] == "float32"


@needs_screen
def test_auto_prefers_a_screen_and_reports_its_band_occupancy():
    rng = np.random.default_rng(12)
    x, y = paired(2000, 2000, 64, rng, noise=1.0, dtype=np.float32)
    r = fs.retrieval(x, y)
    assert r.screen["precision"] in SCREENS
    assert r.screen["screened"] == 2000 * 2000
    assert 0 <= r.screen["rechecked"] < 0.01 * r.screen["screened"]
    # Rows with a few dominant coordinates widen the int8 band: auto measures that and
    # takes bfloat16 (or float32) where int8's re-checks would cost more than they save.
    xo, yo = x.copy(), y.copy()
    xo[:, :3] *= 60
    yo[:, :3] *= 60
    ro = fs.retrieval(xo, yo, return_ranks=True)
    if "bfloat16" in SCREENS:
        assert ro.screen["precision"] != "int8"
    assert_same_ranks((ro["i2t_ranks"], ro["t2i_ranks"]), ranks_of(xo, yo, precision="float32"))
