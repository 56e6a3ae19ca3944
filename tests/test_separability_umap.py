"""The UMAP view of fs.separability (umap-learn, the optional `view` extra): drawn on a
seeded stratified sample, it separates planted classes, "auto" takes it when umap-learn is
installed, and the same seed gives the same picture. Slow (numba compiles UMAP's kernels on
first use, ~30 s on 2 cores): .ci/run runs this file with umap-learn installed and
FASTSAS_REQUIRE_UMAP=1, which turns a missing umap-learn into a failure."""
import os

import numpy as np
import pytest

import fastsas as fs

pytestmark = pytest.mark.slow

if os.environ.get("FASTSAS_REQUIRE_UMAP") == "1":
    import umap  # noqa: F401
else:
    pytest.importorskip("umap")


def _planted(n_per_class=(250, 150, 100), d=24, seed=0):
    """Three classes of unequal size, centres far apart against the noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(n_per_class), d)) * 4.0
    labels = np.repeat(np.arange(len(n_per_class)), n_per_class)
    return (centres[labels] + rng.normal(size=(labels.size, d))).astype(np.float32), labels


def test_umap_view_is_stratified_seeded_and_separates_planted_classes():
    from sklearn.metrics import silhouette_score

    x, labels = _planted()
    r = fs.separability(x, labels, ks=(1,), probe=False, view="umap", view_rows=250, seed=3)
    v = r.view
    assert v["method"] == "umap" and v["coordinates"].shape == (250, 2) and v["sample_rows"] == 250
    # Stratified: each class keeps its share of the 500 rows (125, 75, 50).
    np.testing.assert_array_equal(np.bincount(r.codes[v["rows"]]), [125, 75, 50])
    # The planted classes stay apart in the 2-D picture.
    assert silhouette_score(v["coordinates"], r.codes[v["rows"]]) > 0.5
    # "auto" takes UMAP when it is installed; the same seed draws the same picture.
    again = fs.separability(x, labels, ks=(1,), probe=False, view="auto", view_rows=250, seed=3)
    assert again.view["method"] == "umap"
    np.testing.assert_array_equal(again.view["rows"], v["rows"])
    np.testing.assert_allclose(again.view["coordinates"], v["coordinates"], rtol=0, atol=1e-6)
    # The report carries the view's points.
    points = r.to_dict(points=True)["points"]["view"]
    assert points["method"] == "umap" and len(points["x"]) == 250
