"""Class separability against scikit-learn and float64 NumPy references written from
docs/definitions.md ("Class separability"), streaming/merging, and the planted order."""
from __future__ import annotations

import numpy as np
import pytest

import fastsas as fs
from fastsas.separability import ClassMoments, euclidean_silhouette

sklearn = pytest.importorskip("sklearn")
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis  # noqa: E402
from sklearn.metrics import silhouette_score  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return x.astype(np.float64), y


def _blobs(n, d, classes, separation, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, d))
    codes = rng.integers(0, classes, n)
    return centres[codes] * separation + rng.normal(size=(n, d)), codes


def _fisher_reference(x, y, alpha):
    """trace(S_a^-1 S_b) straight from the definition, float64 NumPy."""
    n, d = x.shape
    mu = x.mean(axis=0)
    sw = np.zeros((d, d))
    sb = np.zeros((d, d))
    for c in np.unique(y):
        xc = x[y == c]
        mc = xc.mean(axis=0)
        sw += (xc - mc).T @ (xc - mc)
        sb += xc.shape[0] * np.outer(mc - mu, mc - mu)
    sw, sb = sw / n, sb / n
    reg = (1 - alpha) * sw + alpha * np.trace(sw) / d * np.eye(d)
    return float(np.trace(np.linalg.solve(reg, sb)))


@pytest.mark.parametrize("alpha", [1e-2, 0.3])
def test_fisher_ratio_equals_numpy(digits, alpha):
    x, y = digits
    r = fs.separability(x, y, shrinkage=alpha, probe=False, euclidean=False, ks=(1,))
    assert r["fisher_ratio"] == pytest.approx(_fisher_reference(x, y, alpha), rel=1e-9)
    xs, ys = _blobs(500, 12, 4, 1.0, 3)
    rs = fs.separability(xs + 50.0, ys, shrinkage=alpha, probe=False, euclidean=False, ks=(1,))
    assert rs["fisher_ratio"] == pytest.approx(_fisher_reference(xs + 50.0, ys, alpha), rel=1e-9)


def _sklearn_lda_predictions(x, y, alpha, blocks):
    fold = np.arange(x.shape[0]) % blocks
    out = np.empty(x.shape[0], dtype=np.int64)
    for b in range(blocks):
        lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=alpha).fit(x[fold != b], y[fold != b])
        out[fold == b] = lda.predict(x[fold == b])
    return out


@pytest.mark.parametrize("alpha,blocks", [(1e-2, 5), (0.2, 3)])
def test_lda_accuracy_equals_sklearn(digits, alpha, blocks):
    for x, y in (digits, _blobs(600, 10, 3, 0.6, 1)):
        r = fs.separability(x, y, shrinkage=alpha, blocks=blocks, probe=False, euclidean=False, ks=(1,))
        expected = _sklearn_lda_predictions(x, y, alpha, blocks)
        assert np.array_equal(r.lda_predicted, expected)
        assert r["lda"]["accuracy"] == np.mean(expected == y)


def test_silhouettes_equal_sklearn(digits):
    x, y = digits
    r = fs.separability(x, y, probe=False, ks=(1,))
    assert r["silhouette"]["cosine"] == pytest.approx(silhouette_score(x, y, metric="cosine"), abs=1e-9)
    assert r["silhouette"]["euclidean"] == pytest.approx(silhouette_score(x, y, metric="euclidean"), abs=1e-9)
    # float32 rows, a far-off mean, a class of one row (its silhouette is 0)
    xs, ys = _blobs(300, 7, 4, 0.8, 5)
    ys[0] = 4
    xs = (xs + 5.0).astype(np.float32)
    r = fs.separability(xs, ys, probe=False, ks=(1,), chunk_rows=37)
    x64 = xs.astype(np.float64)
    assert r["silhouette"]["cosine"] == pytest.approx(silhouette_score(x64, ys, metric="cosine"), abs=1e-9)
    assert r["silhouette"]["euclidean"] == pytest.approx(silhouette_score(x64, ys, metric="euclidean"), abs=1e-9)
    assert r.cosine_silhouettes[0] == 0.0 and r.euclidean_silhouettes[0] == 0.0


def test_euclidean_sums_independent_of_tile_and_threads():
    from fastsas import _core
    x, y = _blobs(700, 9, 5, 1.0, 2)
    ref = np.zeros((700, 5))
    for i in range(700):
        dist = np.sqrt(((x - x[i]) ** 2).sum(axis=1))
        dist[i] = 0.0
        ref[i] = np.bincount(y, weights=dist, minlength=5)
    base = _core.class_distance_sums(x, y.astype(np.int32), 5)
    np.testing.assert_allclose(base, ref, rtol=1e-11, atol=1e-9)
    for threads in (2, 3):  # bit-identical for any thread count
        assert np.array_equal(_core.class_distance_sums(x, y.astype(np.int32), 5, threads=threads), base)
    for tile in (7, 64, 1000):  # another tile: another GEMM rounding and summation grouping only
        np.testing.assert_allclose(_core.class_distance_sums(x, y.astype(np.int32), 5, tile=tile, threads=2), base,
                                   rtol=1e-12)
    with pytest.raises(ValueError, match="outside"):
        _core.class_distance_sums(x, np.full(700, 9, dtype=np.int32), 5)
    assert euclidean_silhouette(x, y, 5).shape == (700,)


def _sklearn_knn_loo(x, y, k):
    out = np.empty(x.shape[0], dtype=np.int64)
    for i in range(x.shape[0]):
        keep = np.arange(x.shape[0]) != i
        clf = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(x[keep], y[keep])
        out[i] = clf.predict(x[i:i + 1])[0]
    return out


def test_knn_leave_one_out_equals_sklearn():
    x, y = _blobs(400, 6, 4, 0.5, 7)
    r = fs.separability(x, y, ks=(1, 4, 7), probe=False, euclidean=False)
    for k in (1, 4, 7):
        expected = _sklearn_knn_loo(x, y, k)
        assert np.array_equal(r.knn_predicted[k], expected), k
        assert r["knn"][str(k)]["accuracy"] == np.mean(expected == y)


@pytest.mark.slow
def test_knn_leave_one_out_equals_sklearn_on_digits(digits):
    x, y = digits
    r = fs.separability(x, y, ks=(1, 5), probe=False, euclidean=False)
    for k in (1, 5):
        assert r["knn"][str(k)]["accuracy"] == np.mean(_sklearn_knn_loo(x, y, k) == y)


def test_knn_vote_ties_go_to_the_smallest_class_and_duplicates_count():
    # row 0's neighbours: a duplicate of itself (class 2) and one row of class 1 at the same
    # similarity: with k=2 the votes tie (1 each) and class 1 wins; the duplicate is a neighbour.
    x = np.array([[1.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.1, 1.0]])
    y = np.array([0, 2, 1, 3, 3, 3])
    r = fs.separability(x, y, ks=(1, 2), probe=False, euclidean=False, blocks=2)
    assert r.knn_predicted[1][0] == 2          # first neighbour: row 1 (ties by smaller index)
    assert r.knn_predicted[2][0] == 1          # votes {2: 1, 1: 1}: the smaller class code


def test_streaming_and_merging_equal_one_pass():
    x, y = _blobs(1000, 8, 3, 1.0, 11)
    x = x + 100.0
    one = ClassMoments(8, 3).update(x, y)
    chunked = ClassMoments.from_chunks(((x[s:s + 97], y[s:s + 97]) for s in range(0, 1000, 97)), 8, 3)
    left = ClassMoments(8, 3).update(x[:400], y[:400])
    right = ClassMoments(8, 3, start=400).update(x[400:] * 1.0, y[400:])  # its own shift
    merged = ClassMoments.from_bytes(left.to_bytes()).merge(ClassMoments.from_bytes(right.to_bytes()))
    for state in (chunked, merged):
        assert np.array_equal(state.counts, one.counts)
        np.testing.assert_allclose(state.class_means(), one.class_means(), rtol=1e-12)
        np.testing.assert_allclose(state.within_scatter(), one.within_scatter(), rtol=1e-9, atol=1e-8)
        np.testing.assert_allclose(state.class_spreads(), one.class_spreads(), rtol=1e-9)
        assert fs.separability.fisher_ratio(state) == pytest.approx(fs.separability.fisher_ratio(one), rel=1e-10)
    a = fs.separability(x, y, probe=False, ks=(3,), chunk_rows=1000)
    b = fs.separability(x, y, probe=False, ks=(3,), chunk_rows=61)
    assert a["fisher_ratio"] == pytest.approx(b["fisher_ratio"], rel=1e-10)
    assert np.array_equal(a.lda_predicted, b.lda_predicted)
    assert a["silhouette"]["cosine"] == pytest.approx(b["silhouette"]["cosine"], abs=1e-12)


def test_measures_rank_three_models_in_planted_order():
    results = {}
    for name, separation in (("weak", 0.15), ("middling", 0.35), ("strong", 0.8)):
        x, y = _blobs(900, 16, 5, separation, 21)
        results[name] = fs.separability(x, y, ks=(5,), cv=3, probe_rows=900)
    order = ["weak", "middling", "strong"]
    def ranks(f):
        vals = [f(results[m]) for m in order]
        return all(a < b for a, b in zip(vals, vals[1:]))
    assert ranks(lambda r: r["fisher_ratio"])
    assert ranks(lambda r: r["lda"]["accuracy"])
    assert ranks(lambda r: r["knn"]["5"]["accuracy"])
    assert ranks(lambda r: r["silhouette"]["cosine"])
    assert ranks(lambda r: r["silhouette"]["euclidean"])
    assert ranks(lambda r: r["probe"]["scores"]["balanced_accuracy"])
    assert ranks(lambda r: r["probe"]["scores"]["auroc"])
    table = fs.separability.separability_table({m: {"blobs": results[m]} for m in order})
    assert [row["model"] for row in table] == order
    lo, hi = table[2]["probe_balanced_accuracy_interval"]
    assert lo <= table[2]["probe_balanced_accuracy"] <= hi


def test_probe_scores_equal_direct_computation():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.metrics import roc_auc_score
    x, y = _blobs(300, 5, 3, 0.4, 4)
    r = fs.separability(x, y, ks=(1,), cv=4, seed=3, euclidean=False)
    proba = cross_val_predict(LogisticRegression(max_iter=5000), x, y,
                              cv=StratifiedKFold(4, shuffle=True, random_state=3), method="predict_proba")
    pred = np.argmax(proba, axis=1)
    per_class = [np.mean(pred[y == c] == c) for c in range(3)]
    p = r["probe"]
    assert p["scores"]["accuracy"] == pytest.approx(np.mean(pred == y), abs=1e-12)
    assert p["scores"]["balanced_accuracy"] == pytest.approx(np.mean(per_class), abs=1e-12)
    assert p["scores"]["auroc"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr"), abs=1e-9)
    assert p["intervals"]["accuracy"][0] <= p["scores"]["accuracy"] <= p["intervals"]["accuracy"][1]


def test_groups_and_json(digits):
    import json
    x, y = digits
    groups = np.where(np.arange(x.shape[0]) % 2 == 0, "site-a", "site-b")
    r = fs.separability(x, y, ks=(1,), probe=False, euclidean=False, groups=groups)
    assert set(r.groups) == {"site-a", "site-b"}
    alone = fs.separability(x[1::2], y[1::2], ks=(1,), probe=False, euclidean=False)
    assert r.groups["site-b"]["fisher_ratio"] == pytest.approx(alone["fisher_ratio"], rel=1e-12)
    json.dumps(r.to_dict(), allow_nan=True)


def test_bad_input_is_refused():
    x, y = _blobs(50, 4, 2, 1.0, 0)
    with pytest.raises(ValueError, match="single class"):
        fs.separability(x, np.zeros(50), probe=False)
    with pytest.raises(ValueError, match="labels"):
        fs.separability(x, y[:10], probe=False)
    bad = x.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        fs.separability(bad, y, probe=False)
    bad[3] = 0.0
    with pytest.raises(ValueError, match="zero rows"):
        fs.separability(bad, y, probe=False)
    with pytest.raises(ValueError, match="shrinkage"):
        fs.separability(x, y, shrinkage=2.0, probe=False)
    with pytest.raises(ValueError, match="ks"):
        fs.separability(x, y, ks=(50,), probe=False)


def test_cli_separability_writes_the_library_result(digits, tmp_path, capsys):
    import json
    from fastsas.cli import main
    from fastsas.store import EmbeddingStore
    x, y = digits
    x, y = x[:600], y[:600]
    site = np.where(np.arange(600) % 3 == 0, "A", "B")
    EmbeddingStore.build(tmp_path / "store", x, x[:, ::-1].copy(), metadata={"digit": y.astype(np.int64), "site": site})
    out = tmp_path / "out"
    assert main(["separability", str(tmp_path / "store"), "--labels", "digit", "--modality", "both", "--group-by",
                 "site", "--ks", "1,3", "--no-probe", "--out", str(out), "--quiet"]) == 0
    assert "Fisher ratio" in capsys.readouterr().out
    doc = json.loads((out / "separability.json").read_text())
    x32 = x.astype(np.float32)  # the store keeps float32
    expected = fs.separability(x32, y, ks=(1, 3), probe=False, groups=site)
    got = doc["modalities"]["images"]
    assert got["fisher_ratio"] == pytest.approx(expected["fisher_ratio"], rel=1e-12)
    assert got["knn"]["3"]["accuracy"] == expected["knn"]["3"]["accuracy"]
    assert got["groups"]["A"]["lda"]["accuracy"] == expected.groups["A"]["lda"]["accuracy"]
    assert set(doc["modalities"]) == {"images", "texts"}
    assert main(["separability", str(tmp_path / "store"), "--labels", "nope", "--quiet", "--out", str(out)]) == 2
    assert "no such metadata column" in capsys.readouterr().err
    assert main(["separability", str(tmp_path / "store"), "--labels", "digit", "--precision", "fp16", "--quiet",
                 "--out", str(out)]) == 2
    assert "--precision must be one of 'auto', 'float32', 'bfloat16', 'int8'" in capsys.readouterr().err


def test_cli_overlay_bias_writes_the_library_result_and_a_report(digits, tmp_path, capsys):
    import json
    from fastsas.cli import main
    from fastsas.store import EmbeddingStore
    x, y = digits
    x, y = x[:400].astype(np.float32), y[:400]
    # "overlaid": every image moved toward one direction (the overlay's pull), the texts kept
    pull = np.random.default_rng(5).normal(size=x.shape[1]).astype(np.float32)
    z = x + 0.6 * np.linalg.norm(x, axis=1, keepdims=True) * pull / np.linalg.norm(pull)
    EmbeddingStore.build(tmp_path / "clean", x, x[:, ::-1].copy(), metadata={"digit": y.astype(np.int64)})
    EmbeddingStore.build(tmp_path / "over", z, x[:, ::-1].copy(), metadata={"digit": y.astype(np.int64)})
    out = tmp_path / "out"
    assert main(["overlay-bias", str(tmp_path / "clean"), str(tmp_path / "over"), "--labels", "digit", "--ks", "1,3",
                 "--no-probe", "--out", str(out), "--format", "json,md,html", "--quiet"]) == 0
    printed = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "cosine shift mean" in printed and "k-NN flips" in printed
    doc = json.loads((out / "separability.json").read_text())
    expected = fs.overlay_bias(x, z, y, ks=(1, 3), probe=False)
    assert doc["overlay"]["shift"]["mean"] == pytest.approx(expected["shift"]["mean"], rel=1e-12)
    assert doc["overlay"]["shift"]["mean"] > 0.05
    assert doc["overlay"]["knn_flips"] == expected["knn_flips"]
    md, html = (out / "separability.md").read_text(), (out / "separability.html").read_text()
    for text in (md, html):
        assert "Overlaid-text bias (400 images)" in text and "k-NN predictions flipped (k=3)" in text
    assert main(["overlay-bias", str(tmp_path / "clean"), str(tmp_path / "over"), "--labels", "nope", "--quiet",
                 "--out", str(out)]) == 2
    assert "no such metadata column" in capsys.readouterr().err


def test_report_section_with_views(tmp_path):
    import json
    from fastsas.report.separability import write_separability
    x, y = _blobs(400, 10, 3, 1.0, 9)
    r = fs.separability(x, y, ks=(1, 5), cv=3, view="tsne", view_rows=150)
    assert r.view["method"] == "tsne" and r.view["coordinates"].shape == (150, 2)
    # PCA from the moments equals NumPy's PCA of the rows (up to the sign of each axis)
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    ref = centred @ vt[:2].T
    np.testing.assert_allclose(np.abs(r.pca), np.abs(ref), rtol=1e-5, atol=1e-5)
    table = fs.separability.separability_table({"m": {"blobs": r}})
    doc = {"labels": "finding", "modalities": {"images": r.to_dict(points=True)}, "table": table}
    paths = write_separability(doc, tmp_path, "html,json,md")
    page = paths["html"].read_text()
    assert page.count('data-figure="separability-images"') == 1 and "Models x datasets" in page
    assert "<script" not in page and 'src="http' not in page
    data = json.loads(paths["json"].read_text())
    assert data["modalities"]["images"]["fisher_ratio"] == pytest.approx(r["fisher_ratio"])
    assert len(data["modalities"]["images"]["points"]["view"]["x"]) == 150
    assert data["modalities"]["images"]["points"]["view"]["method"] == "tsne"
    assert "| Fisher ratio" in paths["md"].read_text()


def test_pairwise_separations_equal_numpy():
    x, y = _blobs(500, 6, 4, 0.7, 13)
    x = x + 20.0
    alpha = 0.05
    r = fs.separability(x, y, shrinkage=alpha, ks=(1,), probe=False, euclidean=False)
    n, d = x.shape
    means = np.stack([x[y == c].mean(axis=0) for c in range(4)])
    sw = sum((x[y == c] - means[c]).T @ (x[y == c] - means[c]) for c in range(4)) / n
    reg = (1 - alpha) * sw + alpha * np.trace(sw) / d * np.eye(d)
    pw = r["pairwise"]
    for a in range(4):
        spread = np.sqrt(np.mean(((x[y == a] - means[a]) ** 2).sum(axis=1)))
        assert pw["spread"][a] == pytest.approx(spread, rel=1e-9)
        for b in range(4):
            diff = means[a] - means[b]
            assert pw["mahalanobis_squared"][a][b] == pytest.approx(diff @ np.linalg.solve(reg, diff), rel=1e-9, abs=1e-9)
            assert pw["euclidean"][a][b] == pytest.approx(np.linalg.norm(diff), rel=1e-9, abs=1e-9)
            cos = means[a] @ means[b] / np.linalg.norm(means[a]) / np.linalg.norm(means[b])
            assert pw["cosine"][a][b] == pytest.approx(1 - cos, abs=1e-9)
        others = [b for b in range(4) if b != a]
        nearest = others[int(np.argmin([pw["mahalanobis_squared"][a][b] for b in others]))]
        assert pw["nearest_class"][a] == nearest


def test_report_reads_each_measure_against_its_no_signal_reference(tmp_path):
    from fastsas.report.separability import write_separability
    rng = np.random.default_rng(21)
    # Labels that have nothing to do with the rows, with a commonest class of 50%.
    noise = rng.normal(size=(900, 8))
    labels = np.array(["a"] * 450 + ["b"] * 270 + ["c"] * 180)
    none = fs.separability(noise, labels, ks=(1, 5), cv=3).to_dict()
    x, y = _blobs(600, 8, 3, 3.0, 22)
    planted = fs.separability(x, y, ks=(1, 5), cv=3).to_dict()
    paths = write_separability({"labels": "finding", "modalities": {"images": none, "texts": planted}}, tmp_path,
                               "html,md")
    md, page = paths["md"].read_text(), paths["html"].read_text()
    for text in (md, page):
        assert "Reference, what ignoring the embedding reaches: accuracy 0.5000 by always answering the commonest" in text
        assert "balanced accuracy 1/3" in text
        assert "no evidence that the embedding separates these classes better than ignoring it" in text  # shuffled
        assert ("Above their reference: LDA accuracy (5 held-out blocks), LDA balanced accuracy, silhouette (cosine)"
                in text)  # planted
    # The reference column: the commonest share beside every accuracy, 0 beside silhouettes.
    assert "| 1-NN accuracy (leave-one-out) | 0.3922 | 0.3603 to 0.4241 | 0.5000 |" in md
    assert "| silhouette (cosine) | -0.0110 | -0.0126 to -0.0094 | 0 |" in md


def test_balanced_accuracy_interval_and_a_reloaded_null_interval():
    from scipy.stats import norm
    from sklearn.metrics import balanced_accuracy_score, recall_score

    from fastsas.report.separability import separability_markdown
    x, y = _blobs(500, 6, 4, 1.2, 31)
    r = fs.separability(x, y, ks=(1,), probe=False)
    lda = r["lda"]
    assert lda["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, r.lda_predicted), abs=1e-12)
    recall, counts = recall_score(y, r.lda_predicted, average=None), np.bincount(y)
    half = norm.ppf(0.975) * np.sqrt(np.sum(recall * (1 - recall) / counts)) / 4
    np.testing.assert_allclose(lda["balanced_interval"], [lda["balanced_accuracy"] - half,
                                                          lda["balanced_accuracy"] + half], rtol=0, atol=1e-12)
    # A NaN interval comes back from strict JSON as null: the report reads past it.
    d = r.to_dict()
    d["lda"]["interval"] = [None, None]
    md = separability_markdown({"labels": "finding", "modalities": {"images": d}})
    assert "Above their reference: LDA balanced accuracy" in md
