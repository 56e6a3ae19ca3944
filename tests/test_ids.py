"""Ids are compared exactly whatever their dtypes (the one encoder, fastsas._labels): int64
image ids against uint64 text ids, integers against floats beyond 2**53, lists mixing kinds;
in fs.retrieval, fs.audit and fastsas.dask alike. Expected ranks come from the float64
reference with the ids compared as Python values."""
import numpy as np
import pytest

import fastsas as fs
from fastsas import reference as ref
from fastsas._labels import encode_ids, encode_labels

BASE = 2 ** 60  # distinct int64 ids above 2**53: equal once both sides are cast to float64


def _pairs(n=120, d=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    return x, x + 3.0 * rng.standard_normal((n, d))  # weakly aligned: R@1 far below 1


def _python_ids_reference(x, y, image_ids, text_ids):
    """The reference with ids mapped to codes by Python equality of the values themselves."""
    table = {}
    icodes = [table.setdefault(v, len(table)) for v in image_ids]
    tcodes = [table.setdefault(v, len(table)) for v in text_ids]
    return ref.retrieval(x, y, icodes, tcodes)


def test_int64_image_ids_and_uint64_text_ids_do_not_collide():
    x, y = _pairs()
    image_ids = np.arange(BASE, BASE + len(x), dtype=np.int64)
    text_ids = np.arange(BASE, BASE + len(x), dtype=np.uint64)
    assert len(np.unique(image_ids.astype(np.float64))) < len(x)  # the defect: float64 merges them
    got = fs.retrieval(x, y, image_ids=image_ids, text_ids=text_ids)
    want = _python_ids_reference(x, y, image_ids.tolist(), text_ids.tolist())
    assert got["i2t_r1"] == pytest.approx(want["i2t_r1"]) and got["t2i_r1"] == pytest.approx(want["t2i_r1"])
    assert got["i2t_r1"] == pytest.approx(fs.retrieval(x, y)["i2t_r1"])  # the same ground truth as row i <-> i
    assert got["i2t_r1"] < 0.5


@pytest.mark.parametrize("image_dtype, text_dtype", [(np.int8, np.uint64), (np.int64, np.uint32),
                                                      (np.uint16, np.int32), (np.int64, np.uint64)])
def test_integer_ids_of_any_width_and_signedness_match_as_integers(image_dtype, text_dtype):
    ii = np.array([0, 1, 2, 3, 100, 127], dtype=image_dtype)
    tt = np.array([127, 3, 2, 1, 0, 100], dtype=text_dtype)
    icodes, tcodes = encode_ids(ii, tt, 6, 6)
    assert [int(v) for v in ii] == [int(tt[list(tcodes).index(c)]) for c in icodes]


def test_extreme_integers_keep_their_identity():
    ii = np.array([-1, 2 ** 63 - 1, -2 ** 63, 0], dtype=np.int64)
    tt = np.array([2 ** 64 - 1, 2 ** 63 - 1, 2 ** 63, 0], dtype=np.uint64)
    icodes, tcodes = encode_ids(ii, tt, 4, 4)
    # -1 is not 2**64 - 1, -2**63 is not 2**63; 2**63 - 1 and 0 are on both sides
    assert icodes[1] == tcodes[1] and icodes[3] == tcodes[3]
    assert len({*icodes.tolist(), *tcodes.tolist()}) == 6


def test_integers_and_floats_compare_exactly():
    icodes, tcodes = encode_ids(np.array([2 ** 53 + 1, 3], dtype=np.int64), np.array([2.0 ** 53, 3.0]), 2, 2)
    assert icodes[0] != tcodes[0] and icodes[1] == tcodes[1]
    icodes, tcodes = encode_ids(np.array([7], dtype=np.int8), np.array([7.0], dtype=np.float16), 1, 1)
    assert icodes[0] == tcodes[0]


def test_lists_mixing_kinds_keep_each_kind():
    # np.asarray([1, "1"]) gives two equal strings; the ids stay an int and a string
    icodes, tcodes = encode_ids([1, "1"], ["1", 1], 2, 2)
    assert icodes[0] == tcodes[1] and icodes[1] == tcodes[0] and icodes[0] != icodes[1]
    big = [2 ** 60, 2 ** 60 + 1, 0.5]  # np.asarray would make floats: the two big ints collide
    icodes, _ = encode_ids(big, big, 3, 3)
    assert len(set(icodes.tolist())) == 3


def test_numbers_against_strings_are_refused_with_a_message():
    with pytest.raises(TypeError, match=r"image_ids hold numbers .* text_ids hold strings .* never match"):
        encode_ids(np.arange(3), np.array(["0", "1", "2"]), 3, 3)


def test_labels_of_one_dtype_keep_their_classes():
    classes, codes = encode_labels(np.array([True, False, True]), "groups", 3)
    assert classes == [False, True] and codes.tolist() == [1, 0, 1]
    classes, codes = encode_labels(np.array([2 ** 63 + 5, 7], dtype=np.uint64), "groups", 2)
    assert classes == [7, 2 ** 63 + 5] and codes.tolist() == [1, 0]


def test_audit_with_int64_and_uint64_ids_uses_the_exact_ground_truth():
    x, y = _pairs(200, 16, seed=3)
    image_ids = np.arange(BASE, BASE + 200, dtype=np.int64)
    text_ids = image_ids.astype(np.uint64)
    got = fs.audit(x, y, image_ids=image_ids, text_ids=text_ids, jackknife_blocks=5, retrieval="whole")
    want = ref.retrieval(x, y)
    assert got.retrieval["i2t_r1"] == pytest.approx(want["i2t_r1"]) and want["i2t_r1"] < 0.5


def test_dask_retrieval_with_int64_and_uint64_ids_uses_the_exact_ground_truth():
    pytest.importorskip("dask")
    import fastsas.dask as fd

    x, y = _pairs(150, 16, seed=4)
    image_ids = np.arange(BASE, BASE + 150, dtype=np.int64)
    got = fd.retrieval(x, y, image_ids=image_ids, text_ids=image_ids.astype(np.uint64), block_rows=40)
    want = ref.retrieval(x, y)
    assert got["i2t_r1"] == pytest.approx(want["i2t_r1"]) and got["t2i_r1"] == pytest.approx(want["t2i_r1"])
