"""Exact ties of integer-valued rows: retrieval ranks on sign-quantised, int8-quantised and
small-integer embeddings equal ranks computed in exact integer arithmetic (Python ints and
fractions, written from the definition), for float32, float64 and integer input, every tile
precision, threads 1 and 2, tiles that do and do not divide n, several captions per image;
the sharded entry points carry the exact thresholds; ordinary float embeddings unchanged."""
from fractions import Fraction

import numpy as np
import pytest

import fastsas as fs
from fastsas import _core
from fastsas.retrieval import quantisation_cost, quantise

PRECISIONS = ["float32", *[p for p in ("bfloat16", "int8") if _core.screen_supported(p)], "auto"]


def exact_ranks(x, y, image_ids, text_ids):
    """Ranks from exact rational cosines: key(x, y) = sign(x.y) (x.y)^2 / |y|^2 orders the
    candidates of query x as cos(x, y) does; rank = 1 + non-matches with a key strictly above
    the best match's (0: no match)."""
    X = np.asarray(x, dtype=np.int64)
    Y = np.asarray(y, dtype=np.int64)
    P = X @ Y.T                         # exact: |x.y| < 2^40
    nx, ny = (X * X).sum(1), (Y * Y).sum(1)

    def ranks(dots, norms, own, other):
        out = []
        norms_obj = norms.astype(object)
        for q in range(dots.shape[0]):
            p = dots[q].astype(object)          # Python ints: no overflow anywhere below
            signed = np.sign(dots[q]).astype(object) * p * p
            match = own[q] == other
            if not match.any():
                out.append(0)
                continue
            best = max(Fraction(int(v), int(nm)) for v, nm in zip(signed[match], norms[match]))
            above = signed * best.denominator > norms_obj * best.numerator   # key > best, exactly
            out.append(1 + int(np.sum(above & ~match)))
        return np.array(out, dtype=np.int64)

    image_ids, text_ids = np.asarray(image_ids), np.asarray(text_ids)
    return ranks(P, ny, image_ids, text_ids), ranks(P.T, nx, text_ids, image_ids)


def engine_ranks(x, y, image_ids, text_ids, **kw):
    r = _core.retrieval(x, y, *ids_as_codes(image_ids, text_ids), kw.get("tile_rows", 0), kw.get("tile_cols", 0),
                        kw.get("threads", 1), 0, kw.get("precision", "auto"))
    return r["image_ranks"], r["text_ranks"], r


def ids_as_codes(image_ids, text_ids):
    _, inv = np.unique(np.concatenate([image_ids, text_ids]), return_inverse=True)
    inv = inv.astype(np.int32)
    return inv[:len(image_ids)], inv[len(image_ids):]


def sign_quantised(n, d, rng, owners, zeros=True):
    """Coordinates -1, 0, 1 (rows of different support: unequal norms, many exactly equal
    cosines); texts are noisy copies of their image."""
    z = rng.standard_normal((owners.max() + 1, d))
    t = z[owners] + 0.8 * rng.standard_normal((len(owners), d))
    cut = 0.6 if zeros else 0.0
    q = lambda a: np.sign(a) * (np.abs(a) > cut)  # noqa: E731
    x, y = q(z + 0.3 * rng.standard_normal(z.shape)), q(t)
    x[np.abs(x).sum(1) == 0, 0] = 1
    y[np.abs(y).sum(1) == 0, 0] = 1
    return x, y


CASES = {
    "sign": lambda n, d, rng, owners: sign_quantised(n, d, rng, owners),
    "int8": lambda n, d, rng, owners: tuple(
        quantise(a, "int8") for a in (lambda z: (z, z[owners] + rng.standard_normal((len(owners), d))))(
            rng.standard_normal((n, d)))),
    "small": lambda n, d, rng, owners: (lambda z: (z, np.clip(z[owners] + rng.integers(-1, 2, (len(owners), d)),
                                                              -3, 3)))(rng.integers(-3, 4, (n, d))),
}


def fix_zero_rows(a):
    a = np.array(a, dtype=np.int64)
    a[np.abs(a).sum(1) == 0, 0] = 1
    return a


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("n, d, per_image", [(300, 16, 1), (120, 7, 5), (257, 33, 2)])
def test_ranks_equal_exact_integer_arithmetic(case, n, d, per_image):
    rng = np.random.default_rng(n + d)
    owners = rng.permutation(np.repeat(np.arange(n), per_image))
    x, y = (fix_zero_rows(a) for a in CASES[case](n, d, rng, owners))
    image_ids, text_ids = np.arange(n), owners
    want = exact_ranks(x, y, image_ids, text_ids)
    for dtype in (np.float64, np.float32):
        for precision in PRECISIONS:
            for threads, tile in ((1, (0, 0)), (2, (7, 45)), (2, (64, 96))):
                got = engine_ranks(x.astype(dtype), y.astype(dtype), image_ids, text_ids, threads=threads,
                                   tile_rows=tile[0], tile_cols=tile[1], precision=precision)
                np.testing.assert_array_equal(got[0], want[0], err_msg=f"i2t {dtype.__name__} {precision} {tile}")
                np.testing.assert_array_equal(got[1], want[1], err_msg=f"t2i {dtype.__name__} {precision} {tile}")


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.bool_])
def test_integer_dtypes_are_accepted_and_exact(dtype):
    rng = np.random.default_rng(3)
    n, d = 400, 12
    if dtype == np.bool_:
        x = rng.random((n, d)) < 0.4
        y = x ^ (rng.random((n, d)) < 0.2)
        x[~x.any(1), 0] = True
        y[~y.any(1), 0] = True
    else:
        lo = -5 if dtype == np.int8 else 0
        x = rng.integers(lo, 6, (n, d))
        y = np.clip(x + rng.integers(-2, 3, (n, d)), lo, 9)
        x, y = fix_zero_rows(x), fix_zero_rows(y)
        x, y = np.abs(x) if lo == 0 else x, np.abs(y) if lo == 0 else y
    want = exact_ranks(x.astype(np.int64), y.astype(np.int64), np.arange(n), np.arange(n))
    got = fs.retrieval(x.astype(dtype), y.astype(dtype), return_ranks=True, backend="cpu")
    np.testing.assert_array_equal(got["i2t_ranks"], want[0])
    np.testing.assert_array_equal(got["t2i_ranks"], want[1])
    # Mixed with float input: computed in float32 / float64, the same ranks.
    mixed = fs.retrieval(x.astype(dtype), y.astype(np.float64), return_ranks=True, backend="cpu")
    np.testing.assert_array_equal(mixed["i2t_ranks"], want[0])


def test_the_reported_case_float64_sign_vectors():
    """1,000 sign-quantised pairs (coordinates -1, 0, 1) of dimension 16 as float64 input:
    normalising rows of different support in float64 makes equal cosines unequal; the ranks
    must still be the exact ones (R@1 included)."""
    rng = np.random.default_rng(0)
    owners = np.arange(1000)
    x, y = sign_quantised(1000, 16, rng, owners)
    want = exact_ranks(x, y, owners, owners)
    got = fs.retrieval(x, y, return_ranks=True, backend="cpu")
    np.testing.assert_array_equal(got["i2t_ranks"], want[0])
    np.testing.assert_array_equal(got["t2i_ranks"], want[1])
    assert got["i2t_r1"] == np.mean(want[0] == 1)
    # ... which a plain float64 computation of unit rows does not give.
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    yn = y / np.linalg.norm(y, axis=1, keepdims=True)
    S = xn @ yn.T
    naive = 1 + (S > np.diag(S)[:, None]).sum(1)
    assert (naive != want[0]).sum() > 0


def test_sharded_counts_carry_the_exact_thresholds():
    rng = np.random.default_rng(4)
    n = 300
    owners = rng.integers(0, n, 450)
    x, y = (fix_zero_rows(a).astype(np.float64) for a in sign_quantised(n, 12, rng, owners))
    icodes, tcodes = ids_as_codes(np.arange(n), owners)
    want = exact_ranks(x, y, np.arange(n), owners)
    ithr, iex = _core.retrieval_thresholds(x, y, icodes, tcodes, "x", "y", 2, exact=True)
    tthr, tex = _core.retrieval_thresholds(y, x, tcodes, icodes, "y", "x", 2, exact=True)
    assert iex.shape == (n, 2) and (iex[np.isfinite(ithr), 1] > 0).all()
    ic = np.zeros(n, dtype=np.int64)
    tc = np.zeros(450, dtype=np.int64)
    for a in range(0, n, 110):
        for b in range(0, 450, 130):
            r = _core.retrieval_counts(x[a:a + 110], y[b:b + 130], icodes[a:a + 110], tcodes[b:b + 130],
                                       ithr[a:a + 110], tthr[b:b + 130], threads=2, image_exact=iex[a:a + 110],
                                       text_exact=tex[b:b + 130])
            ic[a:a + 110] += r["image_counts"]
            tc[b:b + 130] += r["text_counts"]
    np.testing.assert_array_equal(np.where(np.isfinite(ithr), ic + 1, 0), want[0])
    np.testing.assert_array_equal(np.where(np.isfinite(tthr), tc + 1, 0), want[1])
    with pytest.raises(ValueError, match="image_exact"):
        _core.retrieval_counts(x, y, icodes, tcodes, ithr, tthr, image_exact=iex[:5])


def test_ordinary_float_rows_have_no_exact_thresholds():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((200, 16))
    codes = np.arange(200, dtype=np.int32)
    thr, ex = _core.retrieval_thresholds(x, x + 0.1, codes, codes, "x", "y", 1, exact=True)
    assert (ex == 0).all()
    np.testing.assert_array_equal(thr, _core.retrieval_thresholds(x, x + 0.1, codes, codes, "x", "y", 1))


def test_quantisation_cost_measures_what_quantising_loses():
    x, y = fs.synthetic.paired_embeddings(800, 48, shared_factors=8, noise=0.6, seed=2)
    cost = quantisation_cost(x, y, ks=(1, 5))
    assert sorted(cost) == ["binary", "float", "int8"]
    want_bin = exact_ranks(quantise(x, "binary"), quantise(y, "binary"), np.arange(800), np.arange(800))
    assert cost["binary"]["i2t_r1"] == np.mean(want_bin[0] == 1)
    assert cost["binary"]["t2i_mrr"] == pytest.approx(np.mean(1.0 / want_bin[1]), rel=1e-12)
    float_r = fs.retrieval(x, y, ks=(1, 5), return_ranks=True)
    assert cost["float"]["i2t_r1"] == float_r["i2t_r1"]
    q8 = fs.retrieval(quantise(x, "int8"), quantise(y, "int8"), ks=(1, 5), return_ranks=True)
    assert cost["int8"]["i2t_ranks_changed"] == np.mean(q8["i2t_ranks"] != float_r["i2t_ranks"])
    assert 0 < cost["binary"]["i2t_ranks_changed"] <= 1
    np.testing.assert_array_equal(quantise(np.array([[0.5, -0.25, 0.0]]), "int8"), [[127, -64, 0]])
    with pytest.raises(ValueError, match="scheme"):
        quantise(x, "int4")


@pytest.mark.parametrize("d", [1, 16, 768, 4096])
def test_tie_band_and_integer_row_limit_are_the_definitions(d):
    """The tie band tau_T(d) and the integer rows' squared-norm limit as docs/definitions.md
    states them (the GPU engine takes both from the core)."""
    for float64, u in ((False, 2.0 ** -24), (True, 2.0 ** -53)):
        e = u + 5 * 2.0 ** -53
        gamma = (d + 3) * 2.0 ** -53 / (1 - (d + 3) * 2.0 ** -53)
        want = 2 * 1.01 * (2.01 * e + 1.01 * gamma)
        assert _core.retrieval_tie_band(dim=d, float64=float64) == pytest.approx(want, rel=1e-14)
    assert _core.RETRIEVAL_INTEGER_NORM2_MAX == 2.0 ** 40
