"""Property-based tests of the public API (hypothesis): random shapes, dtypes, layouts
(Fortran, negative strides, strided, read-only, memory-mapped, big-endian), magnitudes, NaN
and Inf patterns, zero rows and id types. Every accepted input gives the float64
reference's value (fastsas.reference) within the documented tolerance (docs/definitions.md,
"Inputs, byte forms and the store": 1e-9 for float64 input, 1e-5 for float32 and float16,
on each metric's scale as tests/_compare.py measures it, and at least 1 for scores bounded
by 1); every other input raises
ValueError or TypeError with a message naming the argument.

Fixed seed (derandomize=True, no example database) and a bounded number of examples per
property: the same cases every run, inside the default suite's time (about 15 s on two
cores). Magnitudes range over 1e-30..1e30 (1e-2..1e2 where float16 is involved) and
inputs are full rank: rank-deficient input and the limits of float32/float64 are covered
where the engine defines them (test_alignment, test_validation).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastsas as fs
from fastsas import reference as ref
from fastsas.store import EmbeddingStore

from _compare import KEYS, scales

# Scores bounded by 1 (correlations, cosines) are compared on the scale of 1 at least: a
# score near 0 has no relative precision to keep.
BOUNDED = {"sas_i2t", "sas_t2i", "sas_sym", "sas_imbalance", "cka", "svcca", "delta_cos", "centroid_cosine",
           "cone_images", "cone_texts"}


def worst_error(got, want, x, y):
    s = scales(want, x, y)
    return max(abs(got[k] - want[k]) / max(s[k], 1.0 if k in BOUNDED else 1e-300) for k in KEYS)

PROPERTY = settings(max_examples=60, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(PROPERTY, max_examples=20)

TOLERANCE = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 1e-5}
LAYOUTS = ("C", "fortran", "reversed", "strided", "read-only", "memmap", "big-endian")
_TMP = Path(tempfile.mkdtemp(prefix="fastsas-properties-"))


def computed(dtype_x: np.dtype, dtype_y: np.dtype) -> np.dtype:
    """The dtype fastsas computes a pair in, written out from the documented policy."""
    one = [np.dtype(np.float32) if np.dtype(d).itemsize == 2 else np.dtype(d).newbyteorder("=")
           for d in (dtype_x, dtype_y)]
    return one[0] if one[0] == one[1] else np.dtype(np.float64)


def lay_out(a: np.ndarray, layout: str, tag: str) -> np.ndarray:
    """The same values in another memory layout (or byte order)."""
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "reversed":
        return np.ascontiguousarray(a[::-1])[::-1]  # negative strides, same row order
    if layout == "strided":
        big = np.zeros((2 * a.shape[0], 3 * a.shape[1]), dtype=a.dtype)
        big[::2, ::3] = a
        return big[::2, ::3]
    if layout == "read-only":
        out = a.copy()
        out.flags.writeable = False
        return out
    if layout == "memmap":
        path = _TMP / f"{tag}.npy"
        np.save(path, a)
        return np.load(path, mmap_mode="r")
    if layout == "big-endian":
        return a.astype(a.dtype.newbyteorder(">"))
    return a


@st.composite
def pairs(draw, dtypes=(np.float64, np.float32, np.float16), min_dim=1, max_dim=24, magnitudes=(-30, 30)):
    """(images, texts, float64 values of what fastsas computes on): paired rows of a
    shared signal plus noise, full rank (n > 2 d), at a random scale and offset, each side
    in a random dtype and layout."""
    d = draw(st.integers(min_dim, max_dim))
    n = draw(st.integers(2 * d + 3, 2 * d + 160))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    scale = 10.0 ** draw(st.floats(*magnitudes))
    offset = draw(st.floats(-2, 2))
    noise = draw(st.floats(0.1, 2.0))
    dx, dy = draw(st.sampled_from(dtypes)), draw(st.sampled_from(dtypes))
    lx, ly = draw(st.sampled_from(LAYOUTS)), draw(st.sampled_from(LAYOUTS))
    if np.float16 in (dx, dy):  # float16 holds 6e-5..65504 only
        scale = float(np.clip(scale, 1e-2, 1e2))
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal((n, d))
    x = (shared + noise * rng.standard_normal((n, d)) + offset) * scale
    y = (shared @ np.linalg.qr(rng.standard_normal((d, d)))[0] + noise * rng.standard_normal((n, d))) * scale
    x, y = x.astype(dx), y.astype(dy)
    target = computed(x.dtype, y.dtype)
    values = (x.astype(target).astype(np.float64), y.astype(target).astype(np.float64))
    return lay_out(x, lx, f"x{seed}"), lay_out(y, ly, f"y{seed}"), values, target


def _tolerance(target: np.dtype) -> float:
    return TOLERANCE[np.dtype(target)]


# -- metrics equal the reference ------------------------------------------------------------------------
@PROPERTY
@given(pairs())
def test_alignment_equals_the_float64_reference(case):
    x, y, (xv, yv), target = case
    want = ref.alignment(xv, yv)
    got = fs.alignment(x, y)
    assert worst_error(got, want, xv, yv) < _tolerance(target)
    tol = _tolerance(target)
    assert fs.sas(x, y) == pytest.approx(got["sas_i2t"], rel=tol, abs=tol)
    assert fs.sas(y, x) == pytest.approx(got["sas_t2i"], rel=tol, abs=tol)
    assert fs.cka(x, y) == pytest.approx(got["cka"], rel=tol, abs=tol)


@PROPERTY
@given(pairs(dtypes=(np.float64,)), st.lists(st.floats(0.05, 0.95), min_size=1, max_size=4))
def test_streamed_merged_and_shipped_moments_equal_one_pass(case, cuts):
    x, y, (xv, yv), _ = case
    n = len(xv)
    bounds = sorted({0, n, *(int(c * n) for c in cuts)})
    parts = [fs.Moments(xv.shape[1]).update(x[a:b], y[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    merged = fs.Moments.from_bytes(parts[0].to_bytes())
    for p in parts[1:]:
        merged.merge(fs.Moments.from_bytes(p.to_bytes()))
    assert merged.n == n
    assert worst_error(merged.alignment(), ref.alignment(xv, yv), xv, yv) < 1e-9


@st.composite
def id_pairs(draw, n):
    """Image and text ids of a random kind, with their Python values (the ground truth)."""
    kind = draw(st.sampled_from(["int8", "int64", "uint64-large", "int64-vs-uint64", "float", "str", "mixed",
                                 "many-to-one"]))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    base = rng.permutation(n)
    if kind == "int8":
        return (base % 100).astype(np.int8), (base % 100).astype(np.int8)
    if kind == "int64":
        return base.astype(np.int64) - n // 2, base.astype(np.int64) - n // 2
    if kind == "uint64-large":
        ids = (base.astype(np.uint64) + np.uint64(2 ** 63))
        return ids, ids.copy()
    if kind == "int64-vs-uint64":
        ids = base.astype(np.int64) + 2 ** 60
        return ids, ids.astype(np.uint64)
    if kind == "float":
        return base.astype(np.float64) * 0.5, (base.astype(np.float32) * 0.5)
    if kind == "str":
        return np.array([f"s{i}" for i in base]), np.array([f"s{i}" for i in base])
    if kind == "mixed":
        values = [int(i) if i % 2 else f"{i}" for i in base]
        return list(values), list(values)
    studies = base % max(2, n // 3)  # several images share one report
    return studies.astype(np.int32), studies.astype(np.int64)


def _python_codes(image_ids, text_ids):
    table: dict = {}
    items = lambda ids: ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
    icodes = [table.setdefault(v, len(table)) for v in items(image_ids)]
    tcodes = [table.setdefault(v, len(table)) for v in items(text_ids)]
    return icodes, tcodes


@PROPERTY
@given(pairs(dtypes=(np.float64,), min_dim=2), st.data())
def test_retrieval_ranks_equal_the_reference_for_any_id_type(case, data):
    x, y, (xv, yv), _ = case
    image_ids, text_ids = data.draw(id_pairs(len(xv)))
    got = fs.retrieval(x, y, image_ids=image_ids, text_ids=text_ids, ks=(1, 5), return_ranks=True)
    want = ref.retrieval(xv, yv, *_python_codes(image_ids, text_ids), ks=(1, 5))
    assert np.array_equal(got["i2t_ranks"], want["i2t_ranks"])
    assert np.array_equal(got["t2i_ranks"], want["t2i_ranks"])
    assert got["rsum"] == pytest.approx(want["rsum"], rel=1e-12)


@PROPERTY
@given(pairs(max_dim=12), st.floats(0.3, 3.0))
def test_mmd_equals_the_reference(case, relative_sigma):
    x, y, (xv, yv), target = case
    spread = float(np.sqrt(np.mean(np.sum((xv - xv.mean(0)) ** 2, axis=1)))) or 1.0
    sigma = relative_sigma * spread
    want = ref.mmd(xv, yv, sigma)
    got = fs.mmd(x, y, sigma=sigma)
    # a difference of kernel means: compared on the scale of the means (100 times a mean of kernel values <= 1)
    assert abs(got - want) <= 100 * _tolerance(target)


# -- everything else raises with a message ----------------------------------------------------------------
CALLS = {
    "alignment": lambda x, y: fs.alignment(x, y),
    "sas": lambda x, y: fs.sas(x, y),
    "cka": lambda x, y: fs.cka(x, y),
    "svcca": lambda x, y: fs.svcca(x, y),
    "coral": lambda x, y: fs.coral(x, y),
    "rmg": lambda x, y: fs.rmg(x, y),
    "delta_cos": lambda x, y: fs.delta_cos(x, y),
    "retrieval": lambda x, y: fs.retrieval(x, y, ks=1),
    "mmd": lambda x, y: fs.mmd(x, y),
    "Moments": lambda x, y: fs.Moments(np.shape(y)[1]).update(x, y),
    "audit": lambda x, y: fs.audit(x, y, jackknife_blocks=2, retrieval="none"),
}
# the names each function gives its two arguments in messages
NAMES = {"mmd": ("x", "y"), "sas": ("anchor", "other")}
NEEDS_UNIT_ROWS = {"alignment", "rmg", "delta_cos", "retrieval", "Moments", "audit"}


@PROPERTY
@given(pairs(dtypes=(np.float64, np.float32)), st.sampled_from(sorted(CALLS)), st.sampled_from(["x", "y"]),
       st.sampled_from([np.nan, np.inf, -np.inf, 0.0]), st.lists(st.integers(0, 10 ** 6), min_size=1, max_size=5))
def test_bad_rows_are_refused_and_named(case, call, side, value, rows):
    x, y, (xv, yv), _ = case
    bad_x, bad_y = np.array(xv), np.array(yv)
    target = bad_x if side == "x" else bad_y
    rows = sorted({r % len(target) for r in rows})
    if value == 0.0:
        if call not in NEEDS_UNIT_ROWS:
            return  # an all-zero row is a valid row where nothing is normalised
        target[rows] = 0.0
    else:
        target[rows, rows[0] % target.shape[1]] = value
    name = NAMES.get(call, ("images", "texts"))[0 if side == "x" else 1]
    with pytest.raises(ValueError) as info:
        CALLS[call](bad_x, bad_y)
    message = str(info.value)
    assert name in message and str(rows[0]) in message, message


@PROPERTY
@given(st.sampled_from(sorted(CALLS)), st.sampled_from(["int32", "int64", "int8", "uint8", "bool", "complex128",
                                                        "object", "U3", "datetime64[s]"]), st.sampled_from(["x", "y"]))
def test_non_float_dtypes_are_refused_with_the_fix(call, dtype, side):
    rng = np.random.default_rng(0)
    good = rng.standard_normal((30, 4))
    bad = (np.arange(120).reshape(30, 4) % 7 + 1).astype(dtype) if dtype not in ("U3",) else \
        np.full((30, 4), "abc")
    args = (bad, good) if side == "x" else (good, bad)
    if call == "retrieval" and dtype in ("int8", "uint8", "bool"):
        # quantised and binary embeddings: retrieval computes them exactly as float32
        exact = tuple(a.astype(np.float32) if a is bad else a for a in args)
        got, want = (fs.retrieval(*a, ks=1, return_ranks=True) for a in (args, exact))
        assert np.array_equal(got["i2t_ranks"], want["i2t_ranks"])
        assert np.array_equal(got["t2i_ranks"], want["t2i_ranks"])
        return
    with pytest.raises((TypeError, ValueError)) as info:
        CALLS[call](*args)
    assert str(info.value), dtype


@PROPERTY
@given(st.sampled_from(sorted(CALLS)), st.sampled_from(["1-D", "3-D", "rows differ", "dims differ", "one row",
                                                        "no columns", "nested list"]))
def test_bad_shapes_are_refused_with_a_message(call, problem):
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((20, 5)), rng.standard_normal((20, 5))
    if problem == "1-D":
        x = x[:, 0]
    elif problem == "3-D":
        x = x.reshape(20, 5, 1)
    elif problem == "rows differ":
        if call in ("mmd", "retrieval"):
            return  # two sets / galleries of any sizes are valid there
        y = y[:15]
    elif problem == "dims differ":
        y = y[:, :4]
    elif problem == "one row":
        x, y = x[:1], y[:1]
        if call in ("mmd", "Moments", "retrieval"):
            return  # MMD and R@1 of one row each are defined; moments accumulate any number of rows
    elif problem == "no columns":
        x, y = x[:, :0], y[:, :0]
    else:
        x = [[1.0, 2.0], [3.0]]
    if call == "Moments" and problem == "nested list":
        y = np.ones((2, 2))
    with pytest.raises((ValueError, TypeError)) as info:
        CALLS[call](x, y)
    assert len(str(info.value)) > 10


# -- ids, byte forms and the store ----------------------------------------------------------------------------------
@PROPERTY
@given(st.integers(1, 6), st.integers(0, 2 ** 32 - 1), st.data())
def test_any_flip_of_a_byte_form_is_refused(dim, seed, data):
    rng = np.random.default_rng(seed)
    m = fs.Moments(dim).update(rng.standard_normal((3 * dim + 3, dim)), rng.standard_normal((3 * dim + 3, dim)))
    blob = m.to_bytes()
    assert fs.Moments.from_bytes(blob).to_bytes() == blob
    position = data.draw(st.integers(0, len(blob) - 1))
    bit = data.draw(st.integers(0, 7))
    damaged = bytearray(blob)
    damaged[position] ^= 1 << bit
    with pytest.raises(ValueError) as info:
        fs.Moments.from_bytes(bytes(damaged))
    assert "Moments byte form" in str(info.value) or "bad magic" in str(info.value)
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(ValueError):
        fs.Moments.from_bytes(blob[:cut])


@FEW
@given(pairs(dtypes=(np.float64, np.float32), min_dim=2, max_dim=12), st.integers(1, 64),
       st.lists(st.integers(1, 80), min_size=1, max_size=6), st.sampled_from([None, np.nan, np.inf, 1e300]))
def test_store_round_trip_and_refusals(case, chunk_rows, steps, poison):
    x, y, (xv, yv), _ = case
    path = Path(tempfile.mkdtemp(dir=_TMP)) / "s"
    store = EmbeddingStore.create(path, xv.shape[1], chunk_rows=chunk_rows)
    start, k = 0, 0
    while start < len(xv):
        stop = min(len(xv), start + steps[k % len(steps)])
        if poison is not None and k == 1:
            bad = np.array(xv[start:stop])
            bad[-1, 0] = poison
            with pytest.raises(ValueError, match=f"images has .* row.*: {stop - start - 1} \\(rows of this append\\)"):
                store.append(bad, yv[start:stop])
        store.append(xv[start:stop], yv[start:stop])
        start, k = stop, k + 1
    store.close()
    back = EmbeddingStore.open(path)
    a, b = (np.asarray(v) for v in back.arrays())
    assert np.array_equal(a, xv.astype(np.float32)) and np.array_equal(b, yv.astype(np.float32))
    streamed = fs.Moments.from_chunks(back.iter_chunks(max(1, chunk_rows // 2)), dim=xv.shape[1])
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    assert worst_error(streamed.alignment(), ref.alignment(a64, b64), a64, b64) < 1e-5


@FEW
@given(pairs(dtypes=(np.float64, np.float32), min_dim=2, max_dim=10), st.data())
def test_audit_of_any_layout_equals_the_audit_of_its_values(case, data):
    x, y, (xv, yv), target = case
    ids = data.draw(id_pairs(len(xv)))
    groups = np.arange(len(xv)) % data.draw(st.integers(1, 3))
    got = fs.audit(x, y, groups=groups, image_ids=ids[0], text_ids=ids[1], jackknife_blocks=4, chunk_rows=37, ks=1)
    want = fs.audit(xv.astype(target), yv.astype(target), groups=groups, image_ids=_python_codes(*ids)[0],
                    text_ids=_python_codes(*ids)[1], jackknife_blocks=4, chunk_rows=37, ks=1)
    tol = _tolerance(target)
    for key in KEYS:
        assert got.alignment[key] == pytest.approx(want.alignment[key], rel=tol, abs=tol), key
    assert got.retrieval["rsum"] == pytest.approx(want.retrieval["rsum"], rel=1e-12)
    ranks = ref.retrieval(xv, yv, *_python_codes(*ids))
    assert got.retrieval["i2t_r1"] == pytest.approx(ranks["i2t_r1"], abs=2 / len(xv) if target == np.float32 else 1e-12)

