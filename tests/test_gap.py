"""Modality-gap control: fs.gap.gap_vector / shift / shift_chunks / sweep (docs/definitions.md)."""
import json

import numpy as np
import pytest

import fastsas as fs
from fastsas import reference as ref

from _compare import worst_error, worst_key


def direct_shift(x, y, lam, gap=None):
    """docs/definitions.md "Modality-gap control", written straight in float64 NumPy."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    xh = x / np.linalg.norm(x, axis=1, keepdims=True)
    yh = y / np.linalg.norm(y, axis=1, keepdims=True)
    if gap is None:
        gap = xh.mean(axis=0) - yh.mean(axis=0)
    xs = xh - (lam / 2) * gap
    ys = yh + (lam / 2) * gap
    return xs / np.linalg.norm(xs, axis=1, keepdims=True), ys / np.linalg.norm(ys, axis=1, keepdims=True)


def unit(a):
    a = np.asarray(a, dtype=np.float64)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def pair64():
    return fs.synthetic.paired_embeddings(400, 24, image_only_factors=2, gap=1.0, seed=1, dtype=np.float64)


@pytest.fixture(scope="module")
def pair32():
    return fs.synthetic.paired_embeddings(400, 24, image_only_factors=2, gap=1.0, seed=1, dtype=np.float32)


# --------------------------------------------------------------------------- gap vector and shift
def test_gap_vector_matches_reference_and_moments(pair64, pair32):
    x, y = pair64
    g = fs.gap.gap_vector(x, y)
    assert g.shape == (24,) and g.dtype == np.float64
    np.testing.assert_allclose(g, ref.gap_vector(x, y), rtol=0, atol=1e-14)
    np.testing.assert_allclose(g, fs.Moments(24).update(x, y).gap_vector(), rtol=0, atol=1e-14)
    x32, y32 = pair32
    np.testing.assert_allclose(fs.gap.gap_vector(x32, y32), ref.gap_vector(x32, y32), rtol=0, atol=1e-14)
    # float16 is read as float32
    x16, y16 = x32.astype(np.float16), y32.astype(np.float16)
    np.testing.assert_allclose(fs.gap.gap_vector(x16, y16), ref.gap_vector(x16, y16), rtol=0, atol=1e-14)


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_shift_matches_direct_float64(pair64, pair32, lam):
    x, y = pair64
    want_x, want_y = direct_shift(x, y, lam)
    got_x, got_y = fs.gap.shift(x, y, lam)
    assert got_x.dtype == got_y.dtype == np.float64
    np.testing.assert_allclose(got_x, want_x, rtol=0, atol=1e-14)
    np.testing.assert_allclose(got_y, want_y, rtol=0, atol=1e-14)
    # float32 and float16 input: float32 output, rounded once from float64
    for dtype in (np.float32, np.float16):
        xd, yd = pair32[0].astype(dtype), pair32[1].astype(dtype)
        want_x, want_y = direct_shift(xd, yd, lam)
        got_x, got_y = fs.gap.shift(xd, yd, lam)
        assert got_x.dtype == got_y.dtype == np.float32
        np.testing.assert_allclose(got_x, want_x, rtol=0, atol=1e-7)
        np.testing.assert_allclose(got_y, want_y, rtol=0, atol=1e-7)
    # mixed precisions are computed in float64
    assert fs.gap.shift(pair32[0], y, lam)[0].dtype == np.float64


def test_shift_with_a_given_gap_and_inputs_untouched(pair64):
    x, y = pair64
    x0, y0 = x.copy(), y.copy()
    other = fs.gap.gap_vector(*fs.synthetic.paired_embeddings(300, 24, gap=0.5, seed=9, dtype=np.float64))
    got = fs.gap.shift(x, y, 0.7, gap=other)
    want = direct_shift(x, y, 0.7, gap=other)
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-14)
    np.testing.assert_allclose(got[1], want[1], rtol=0, atol=1e-14)
    assert np.array_equal(x, x0) and np.array_equal(y, y0)
    # Fortran-ordered and strided inputs give the same bits
    xf, yf = np.asfortranarray(x), np.hstack([y, y])[:, :24]
    assert np.array_equal(fs.gap.shift(xf, yf, 0.7, gap=other)[0], got[0])


def test_lam_zero_gives_unit_rows(pair64, pair32):
    x, y = pair64
    xs, ys = fs.gap.shift(x, y, 0)
    np.testing.assert_allclose(xs, unit(x), rtol=0, atol=1e-15)
    np.testing.assert_allclose(ys, unit(y), rtol=0, atol=1e-15)
    xs, ys = fs.gap.shift(*pair32, 0.0)
    np.testing.assert_array_equal(xs, unit(pair32[0]).astype(np.float32))


def test_lam_one_closes_the_gap(pair32):
    x, y = pair32
    before = np.linalg.norm(unit(x).mean(0) - unit(y).mean(0))
    xs, ys = fs.gap.shift(x, y, 1.0)
    after = np.linalg.norm(xs.astype(np.float64).mean(0) - ys.astype(np.float64).mean(0))
    np.testing.assert_allclose(np.linalg.norm(xs, axis=1), 1.0, atol=1e-6)
    assert before > 0.2 and after < 0.1 * before


def test_shift_chunks_equals_shift(pair64, pair32):
    for x, y in (pair64, pair32):
        g = fs.gap.gap_vector(x, y)
        whole = fs.gap.shift(x, y, 0.6, gap=g)
        cuts = [0, 1, 150, 151, 399, 400]
        parts = list(fs.gap.shift_chunks(((x[a:b], y[a:b]) for a, b in zip(cuts, cuts[1:])), g, 0.6))
        assert len(parts) == 5 and all(p[0].dtype == whole[0].dtype for p in parts)
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), whole[0])
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), whole[1])


def test_shift_chunks_is_lazy_and_checks_arguments_at_once(pair32):
    x, y = pair32
    g = fs.gap.gap_vector(x, y)
    seen = []

    def chunks():
        for i in range(0, 400, 100):
            seen.append(i)
            yield x[i:i + 100], y[i:i + 100]

    stream = fs.gap.shift_chunks(chunks(), g, 0.5)
    assert seen == []
    next(stream)
    assert seen == [0]
    with pytest.raises(ValueError, match=r"lam must be in \[0, 1\]"):
        fs.gap.shift_chunks(chunks(), g, 1.5)
    with pytest.raises(ValueError, match="gap must have shape"):
        fs.gap.shift_chunks(chunks(), np.zeros((2, 24)), 0.5)
    with pytest.raises(TypeError, match="chunks must be an iterable"):
        fs.gap.shift_chunks(5, g, 0.5)
    with pytest.raises(TypeError, match="chunks must yield .* pairs; chunk 0 is a ndarray"):
        next(fs.gap.shift_chunks([x], g, 0.5))
    with pytest.raises(ValueError, match="chunk 0 has dim 23 but gap has 24 entries"):
        next(fs.gap.shift_chunks([(x[:, :23], y[:, :23])], g, 0.5))
    bad = y[100:200].copy()
    bad[7] = np.nan
    stream = fs.gap.shift_chunks([(x[:100], y[:100]), (x[100:200], bad)], g, 0.5)
    next(stream)
    with pytest.raises(ValueError, match=r"texts has non-finite values \(NaN or Inf\) in 1 row: 107 \(row numbers"):
        next(stream)


# --------------------------------------------------------------------------- sweep
@pytest.fixture(scope="module")
def swept64(pair64):
    return fs.gap.sweep(*pair64, ks=(1, 5, 10))


def test_sweep_lam_zero_reproduces_unshifted_metrics(pair64, swept64):
    x, y = pair64
    p0 = swept64.point(0.0)
    # alignment at lam = 0 is the alignment of the unit rows x̂, ŷ ...
    want = fs.alignment(unit(x), unit(y))
    assert worst_error(p0.alignment, want, unit(x), unit(y)) <= 1e-12, worst_key(p0.alignment, want, unit(x), unit(y))
    assert worst_error(want, ref.alignment(unit(x), unit(y)), unit(x), unit(y)) <= 1e-9
    # ... which is not that of the raw rows for the norm-dependent metrics (SAS, CKA, CORAL,
    # SVCCA, centroids), while the cosine-based ones agree; the raw alignment is the baseline.
    raw = fs.alignment(x, y)
    assert swept64.baseline == raw
    for key in ("delta_cos", "rmg", "rmg_paper", "cone_images", "cone_texts", "matched_cosine"):
        assert p0.alignment[key] == pytest.approx(raw[key], rel=1e-12, abs=1e-14)
    assert abs(p0.alignment["coral"] - raw["coral"]) > 1e-3
    # retrieval normalises rows itself: lam = 0 equals retrieval of the raw data
    assert p0.retrieval == fs.retrieval(x, y, ks=(1, 5, 10))
    # each shifted point equals fs.alignment / fs.retrieval of fs.gap.shift's output
    xs, ys = fs.gap.shift(x, y, 0.75)
    p = swept64.point(0.75)
    assert worst_error(p.alignment, fs.alignment(xs, ys), xs, ys) <= 1e-12
    assert p.retrieval == fs.retrieval(xs, ys)
    np.testing.assert_array_equal(swept64.gap, fs.gap.gap_vector(x, y))


def test_sweep_float32_and_chunking(pair32):
    x, y = pair32
    one = fs.gap.sweep(x, y, lams=(0, 1), retrieval=False)
    many = fs.gap.sweep(x, y, lams=(0, 1), retrieval=False, chunk_rows=64)
    assert one.settings["dtype"] == "float32" and one.settings["ks"] is None
    for lam in (0, 1):
        a, b = one.point(lam), many.point(lam)
        assert a.retrieval is None and a.probe is None
        xs, ys = fs.gap.shift(x, y, lam)
        assert worst_error(a.alignment, fs.alignment(xs, ys), xs, ys) <= 1e-6
        assert worst_error(b.alignment, a.alignment, xs, ys) <= 1e-6
    np.testing.assert_allclose(one.gap, many.gap, rtol=0, atol=1e-14)


def test_sweep_closes_the_gap_monotonically(swept64):
    norms = swept64.series("gap_norm")
    assert list(swept64.lams) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert np.all(np.diff(norms) < 0)
    assert norms[-1] < 0.1 * norms[0]
    assert norms[0] == pytest.approx(swept64.gap_norm, rel=1e-12)
    np.testing.assert_allclose(norms, swept64.series("centroid_euclidean"), rtol=1e-9)
    assert np.all(np.diff(swept64.series("rmg")) < 0)


def test_sweep_result_is_json_ready(swept64):
    d = json.loads(json.dumps(swept64.to_dict()))
    assert d["lams"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert len(d["gap"]) == 24 and d["best_lam"] is None
    assert d["points"][1]["lam"] == 0.25 and "sas_sym" in d["points"][1]["alignment"]
    assert "rsum" in d["points"][1]["retrieval"] and d["points"][1]["probe"] is None
    assert d["settings"]["definitions_version"] == fs.DEFINITIONS_VERSION
    with pytest.raises(KeyError, match="'nope' is not a metric"):
        swept64.series("nope")
    with pytest.raises(KeyError, match="lam=0.1 is not in this sweep"):
        swept64.point(0.1)


def test_sweep_from_a_chunk_source(pair32):
    x, y = pair32
    arrays = fs.gap.sweep(x, y, lams=(0.5, 0), chunk_rows=100, ks=(1, 5))
    chunks = [(x[i:i + 100], y[i:i + 100]) for i in range(0, 400, 100)]
    for source in (chunks, lambda: iter(chunks)):
        streamed = fs.gap.sweep(source, lams=(0.5, 0), ks=(1, 5))
        assert streamed.lams == (0.5, 0.0) and streamed.settings["source"] == "chunks"
        np.testing.assert_array_equal(streamed.gap, arrays.gap)
        for a, b in zip(arrays.points, streamed.points):
            assert a.alignment == b.alignment and a.retrieval == b.retrieval
    with pytest.raises(TypeError, match="one-shot iterator"):
        fs.gap.sweep(iter(chunks))
    shrinking = [chunks, chunks[:3]]
    with pytest.raises(ValueError, match="yielded 300 rows on a later pass but 400 on the first"):
        fs.gap.sweep(lambda: shrinking.pop(0), lams=(0,), retrieval=False)
    with pytest.raises(ValueError, match="chunk 1 has dim 23 but the first chunk had dim 24"):
        fs.gap.sweep([chunks[0], (x[:5, :23], y[:5, :23])])
    with pytest.raises(ValueError, match="texts is missing"):
        fs.gap.sweep(x)


def latent_labels(n=600, seed=3):
    """Synthetic pairs and 3 classes cut from the strongest shared latent factor (the top
    principal direction of the images, which the texts share)."""
    x, y = fs.synthetic.paired_embeddings(n, 32, gap=1.0, seed=seed)
    xc = x.astype(np.float64) - x.mean(0)
    top = np.linalg.svd(xc, full_matrices=False)[2][0]
    score = xc @ top
    labels = np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))
    return x, y, np.array(["low", "mid", "high"])[labels]


def test_probe_is_reproducible_and_sensible():
    x, y, labels = latent_labels()
    one = fs.gap.sweep(x, y, lams=(0, 0.5, 1), labels=labels, retrieval=False, cv=3, seed=7)
    two = fs.gap.sweep(x, y, lams=(0, 0.5, 1), labels=labels, retrieval=False, cv=3, seed=7)
    assert one.to_dict() == two.to_dict()
    for p in one.points:
        assert len(p.probe["fold_accuracy"]) == 3 and p.probe["converged"]
        assert p.probe["accuracy"] > 0.8  # chance is 1/3
        assert p.probe["auroc"] > 0.9
    acc = one.series("accuracy")
    assert one.best_lam == min(lam for lam, a in zip(one.lams, acc) if a == acc.max())
    assert one.settings["probe"]["classes"] == ["high", "low", "mid"]
    # the probe is what its definition says: sklearn on hstack([x', y']) with those folds
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    xs, ys = fs.gap.shift(x, y, 0.5)
    want = cross_val_score(LogisticRegression(max_iter=5000), np.hstack([xs, ys]), labels,
                           cv=StratifiedKFold(3, shuffle=True, random_state=7))
    np.testing.assert_allclose(one.point(0.5).probe["fold_accuracy"], want, rtol=0, atol=1e-12)


def test_probe_binary_auroc_and_ties_pick_the_smaller_lambda():
    x, y, labels = latent_labels(300, seed=4)
    binary = (labels == "high").astype(int)
    res = fs.gap.sweep(x, y, lams=(1, 0.5), labels=binary, retrieval=False, cv=2)
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    xs, ys = fs.gap.shift(x, y, 1)
    feats = np.hstack([xs, ys])
    aucs = []
    for tr, te in StratifiedKFold(2, shuffle=True, random_state=0).split(feats, binary):
        clf = LogisticRegression(max_iter=5000).fit(feats[tr], binary[tr])
        aucs.append(roc_auc_score(binary[te], clf.predict_proba(feats[te])[:, 1]))
    assert res.point(1).probe["auroc"] == pytest.approx(np.mean(aucs), abs=1e-12)
    # identical features at two lambdas tie: the smaller lambda wins
    tie = fs.gap.sweep(x, y, lams=(1, 0.5), labels=binary, retrieval=False, cv=2,
                       gap=np.zeros(32))
    assert tie.point(1).probe == tie.point(0.5).probe and tie.best_lam == 0.5


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("lam", [-0.1, 1.01, float("nan"), 2])
def test_bad_lam(pair32, lam):
    with pytest.raises(ValueError, match=r"lam must be in \[0, 1\]"):
        fs.gap.shift(*pair32, lam)


@pytest.mark.parametrize("lam", ["0.5", None, True])
def test_lam_not_a_number(pair32, lam):
    with pytest.raises(TypeError, match=r"lam must be a number in \[0, 1\]"):
        fs.gap.shift(*pair32, lam)


def test_bad_rows_are_named(pair32):
    x, y = pair32
    x = x.copy(); x[[3, 250]] = 0.0
    with pytest.raises(ValueError, match=r"images has zero-norm rows \(no direction to normalise\) in 2 rows: 3, 250"):
        fs.gap.shift(x, y, 0.5)
    with pytest.raises(ValueError, match="images has zero-norm rows .* in 2 rows: 3, 250"):
        fs.gap.gap_vector(x, y)
    with pytest.raises(ValueError, match="images has zero-norm rows .* in 2 rows: 3, 250"):
        fs.gap.sweep(x, y, chunk_rows=100)
    y = y.copy(); y[5, 2] = np.inf
    with pytest.raises(ValueError, match=r"texts has non-finite values \(NaN or Inf\) in 1 row: 5"):
        fs.gap.shift(x, y, 0.5)
    x64 = pair32[0].astype(np.float64); x64[9] = 1e300  # squared norm overflows, as in the core
    with pytest.raises(ValueError, match="images has non-finite .* 1 row: 9"):
        fs.gap.shift(x64, pair32[1].astype(np.float64), 0.5)


def test_bad_arrays_reuse_the_common_messages(pair32):
    x, y = pair32
    with pytest.raises(ValueError, match="paired row by row: got 400 and 399 rows"):
        fs.gap.shift(x, y[:-1], 0.5)
    with pytest.raises(TypeError, match="texts must hold float16, float32 or float64 values, got integer"):
        fs.gap.sweep(x, y.astype(np.int64))
    with pytest.raises(ValueError, match="images needs at least 2 rows"):
        fs.gap.gap_vector(x[:1], y[:1])


def test_bad_gap(pair32):
    x, y = pair32
    with pytest.raises(ValueError, match=r"gap must have shape \(24,\)"):
        fs.gap.shift(x, y, 0.5, gap=np.zeros(23))
    with pytest.raises(ValueError, match="gap has NaN or Inf"):
        fs.gap.shift(x, y, 0.5, gap=np.full(24, np.nan))
    with pytest.raises(ValueError, match="gap has norm 3 > 2"):
        fs.gap.shift(x, y, 0.5, gap=np.r_[3.0, np.zeros(23)])
    with pytest.raises(TypeError, match="gap must be a 1-D array of floats"):
        fs.gap.shift(x, y, 0.5, gap=np.array(["a"] * 24))
    with pytest.raises(ValueError, match=r"gap must have shape \(24,\)"):
        fs.gap.sweep(x, y, gap=np.zeros(3), retrieval=False)
    # a row equal to (lam/2) gap has no direction left
    e = np.zeros((2, 3)); e[:, 0] = 1.0
    with pytest.raises(ValueError, match=r"images rows \[0, 1\] have no direction after the shift"):
        fs.gap.shift(e, -e, 1.0, gap=np.array([2.0, 0, 0]))


@pytest.mark.parametrize("lams,err,msg", [
    ((), ValueError, "lams is empty"),
    ((0, 1.5), ValueError, r"every lambda in lams must be in \[0, 1\], got 1.5"),
    ((-0.5,), ValueError, r"every lambda in lams must be in \[0, 1\]"),
    ((0, "1"), TypeError, "lams must hold numbers"),
    ("0.5", TypeError, "lams must be a sequence of numbers"),
    ((0.5, 0.5), ValueError, "lams has repeated values"),
])
def test_bad_lams(pair32, lams, err, msg):
    with pytest.raises(err, match=msg):
        fs.gap.sweep(*pair32, lams=lams)


def test_single_lambda_is_accepted(pair32):
    assert fs.gap.sweep(*pair32, lams=1, retrieval=False).lams == (1.0,)


def test_bad_sweep_arguments(pair32):
    x, y = pair32
    labels = np.arange(400) % 2
    with pytest.raises(ValueError, match="labels has 399 entries but there are 400 pairs"):
        fs.gap.sweep(x, y, labels=labels[:-1])
    with pytest.raises(ValueError, match=r"labels must be 1-D \(one class label per pair\)"):
        fs.gap.sweep(x, y, labels=labels[:, None])
    with pytest.raises(ValueError, match="labels has a single class"):
        fs.gap.sweep(x, y, labels=np.zeros(400))
    few = labels.copy(); few[:3] = 7
    with pytest.raises(ValueError, match=r"labels: 1 class\(es\) have fewer members than cv=5 folds: 7 \(3\); "
                                         r".* use cv=3 or fewer folds"):
        fs.gap.sweep(x, y, labels=few)
    lone = labels.copy(); lone[0] = 9
    with pytest.raises(ValueError, match="drop or merge the classes with a single member"):
        fs.gap.sweep(x, y, labels=lone)
    with pytest.raises(ValueError, match="labels has NaN or Inf"):
        fs.gap.sweep(x, y, labels=np.where(labels == 0, np.nan, 1.0))
    for cv in (1, 0, 2.5, True):
        with pytest.raises(ValueError, match=r"cv must be an integer >= 2 \(the number of cross-validation folds\)"):
            fs.gap.sweep(x, y, labels=labels, cv=cv)
    with pytest.raises(ValueError, match="seed must be an integer"):
        fs.gap.sweep(x, y, labels=labels, seed=-1)
    with pytest.raises(ValueError, match=r"topq must be in \(0, 1\]"):
        fs.gap.sweep(x, y, topq=0)
    with pytest.raises(ValueError, match=r"ks=\(1, 500\) has k larger than the gallery"):
        fs.gap.sweep(x, y, ks=(1, 500))
    with pytest.raises(ValueError, match="chunk_rows must be a positive integer"):
        fs.gap.sweep(x, y, chunk_rows=0)
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        fs.gap.sweep(x, y, threads=0)
    with pytest.raises(TypeError, match="retrieval must be True or False"):
        fs.gap.sweep(x, y, retrieval="yes")
    with pytest.raises(TypeError, match="images must be an array .* or, with texts=None, a chunk source"):
        fs.gap.sweep(5)


def test_best_lambda_is_declared_only_beyond_the_folds_spread():
    from fastsas.gap.results import GapPoint
    from fastsas.gap.run import probe_gain

    def point(lam, folds):
        return GapPoint(lam, 0.0, {}, None, {"accuracy": float(np.mean(folds)), "fold_accuracy": folds})

    zero = point(0.0, [0.80, 0.82, 0.78])
    clear = probe_gain({0.0: zero, 0.5: point(0.5, [0.85, 0.86, 0.84])}, 0.5)  # gains 0.05, 0.04, 0.06
    assert clear["declared"] and clear["mean_gain"] == pytest.approx(0.05) and clear["spread"] == pytest.approx(0.01)
    noisy = probe_gain({0.0: zero, 0.5: point(0.5, [0.86, 0.80, 0.79])}, 0.5)  # gains 0.06, -0.02, 0.01
    assert not noisy["declared"] and noisy["mean_gain"] < noisy["spread"]
    assert probe_gain({0.5: point(0.5, [0.9, 0.9, 0.9])}, 0.5)["declared"] is None  # no lambda = 0 to beat

    x, y, labels = latent_labels()
    res = fs.gap.sweep(x, y, lams=(0, 0.5, 1), labels=labels, retrieval=False, cv=3, seed=7)
    gains = np.subtract(res.point(res.best_lam).probe["fold_accuracy"], res.point(0).probe["fold_accuracy"])
    declared = res.best_lam != 0 and gains.mean() > gains.std(ddof=1)
    assert res.probe_gain["declared"] == declared and res.declared_lam == (res.best_lam if declared else None)
    d = res.to_dict()
    assert d["verdict"] == res.verdict() and "unit-normalised rows" in d["lam0_rows"]
