"""The built-in generator has the structure it claims, and SAS reads its direction."""
import numpy as np
import pytest

import fastsas as fs
from fastsas import reference as ref


def test_image_only_structure_lowers_sas_i2t():
    x, y = fs.synthetic.paired_embeddings(20000, 64, image_only_factors=6, seed=0)
    r = fs.alignment(x, y)
    # images carry factors the texts lack: the image eigenbasis is poorly mirrored by texts
    assert r["sas_i2t"] < r["sas_t2i"] - 0.3
    assert r["sas_imbalance"] < -0.3


def test_text_only_structure_lowers_sas_t2i():
    x, y = fs.synthetic.paired_embeddings(20000, 64, text_only_factors=6, seed=1)
    r = fs.alignment(x, y)
    assert r["sas_t2i"] < r["sas_i2t"] - 0.3
    assert r["sas_imbalance"] > 0.3


def test_balanced_structure_is_balanced():
    x, y = fs.synthetic.paired_embeddings(20000, 64, seed=2)
    r = fs.alignment(x, y)
    assert abs(r["sas_imbalance"]) < 0.02
    assert r["sas_i2t"] > 0.9


def test_cone_and_gap_are_present():
    x, y = fs.synthetic.paired_embeddings(5000, 64, seed=3, cone=4.0, gap=1.0)
    r = fs.alignment(x, y)
    assert r["cone_images"] > 0.3 and r["cone_texts"] > 0.3
    assert r["centroid_euclidean"] == pytest.approx(2.0, rel=0.05)
    assert np.linalg.norm(ref.gap_vector(x, y)) > 0.1
    flat = fs.alignment(*fs.synthetic.paired_embeddings(5000, 64, seed=3, cone=0.0, gap=0.0))
    assert flat["cone_images"] < 0.1 and flat["centroid_euclidean"] < 0.1


def test_generator_is_reproducible_and_checked():
    a = fs.synthetic.paired_embeddings(100, 16, seed=5)
    b = fs.synthetic.paired_embeddings(100, 16, seed=5)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert a[0].dtype == np.float32
    with pytest.raises(ValueError, match="dim=8 is too small"):
        fs.synthetic.paired_embeddings(10, 8, shared_factors=8)
