"""The unbiased HSIC estimators and the Procrustes distances against the float64 reference
written from the definitions (fastsas.reference_neighbourhood): the textbook U-statistic on
explicit Gram matrices, unbiased linear CKA from the moments (streamed, merged, shifted, in
the byte form), RBF CKA on tiles, Procrustes by explicit minimisation."""
import itertools
import struct

import numpy as np
import pytest

import fastsas as fs
from fastsas import reference_neighbourhood as ref


def paired(n, d, seed, noise=1.0, offset=0.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    y = x @ rng.standard_normal((d, d)) / np.sqrt(d) + noise * rng.standard_normal((n, d))
    return (x + offset).astype(dtype), (y - offset).astype(dtype)


# -- the HSIC formulas themselves ---------------------------------------------------------------
@pytest.mark.parametrize("n", [4, 5, 7])
def test_unbiased_hsic_formula_is_the_u_statistic(n):
    rng = np.random.default_rng(n)
    x, y = rng.standard_normal((n, 3)), rng.standard_normal((n, 2))
    for K, L in ((x @ x.T, y @ y.T), (ref.rbf_kernel(x, 1.3), ref.rbf_kernel(y, 0.7))):
        assert ref.hsic_unbiased(K, L) == pytest.approx(ref.hsic_u_statistic(K, L), rel=1e-12)
        # ... which is a mean of products of 4-point contrasts (the definitions' form).
        contrast = lambda M, s, t, u, v: M[s, u] - M[s, v] - M[t, u] + M[t, v]  # noqa: E731
        tuples = list(itertools.permutations(range(n), 4))
        mean = np.mean([contrast(K, *t) * contrast(L, *t) / 4 for t in tuples])
        assert ref.hsic_unbiased(K, L) == pytest.approx(mean, rel=1e-12)


def test_unbiased_hsic_ignores_a_constant_kernel_offset():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((30, 4)), rng.standard_normal((30, 4))
    K, L = ref.rbf_kernel(x, 2.0), ref.rbf_kernel(y, 2.0)
    assert ref.hsic_unbiased(K - 0.7, L + 3.0) == pytest.approx(ref.hsic_unbiased(K, L), rel=1e-10)
    assert ref.hsic_biased(K - 0.7, L + 3.0) == pytest.approx(ref.hsic_biased(K, L), rel=1e-10)


# -- unbiased linear CKA from the moments -------------------------------------------------------
@pytest.mark.parametrize("n, d", [(4, 3), (5, 2), (9, 4), (60, 8), (2000, 32)])
def test_cka_unbiased_matches_gram_matrices(n, d):
    x, y = paired(n, d, seed=n)
    want = ref.cka_unbiased(x, y)
    assert fs.cka_unbiased(x, y) == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert fs.alignment(x, y)["cka_unbiased"] == pytest.approx(want, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("n", [4, 6])
def test_cka_unbiased_equals_the_u_statistic(n):
    x, y = paired(n, 3, seed=100 + n)
    K, L = x @ x.T, y @ y.T
    want = ref.hsic_u_statistic(K, L) / np.sqrt(ref.hsic_u_statistic(K, K) * ref.hsic_u_statistic(L, L))
    assert fs.cka_unbiased(x, y) == pytest.approx(want, rel=1e-9)


def test_cka_unbiased_is_negative_when_honest_and_never_nan():
    rng = np.random.default_rng(2)
    values = []
    for _ in range(20):
        x, y = rng.standard_normal((12, 3)), rng.standard_normal((12, 3))
        got = fs.cka_unbiased(x, y)
        assert got == pytest.approx(ref.cka_unbiased(x, y), rel=1e-9, abs=1e-12)
        assert -1.0 <= got <= 1.0
        values.append(got)
    assert min(values) < 0 < max(values)


def test_unbiased_linear_hsic_ignores_a_common_shift():
    x, y = paired(40, 5, seed=15)
    assert ref.cka_unbiased(x + 0.5, y - 0.3, centre=False) == pytest.approx(ref.cka_unbiased(x, y, centre=False),
                                                                            rel=1e-10)
    assert ref.cka_unbiased(x, y, centre=False) == pytest.approx(ref.cka_unbiased(x, y), rel=1e-10)


def test_cka_unbiased_without_spread_is_zero():
    x = np.ones((10, 3))
    x[4] = [2.0, 0.5, 1.0]  # every row but one identical: no 4-point contrast
    y = np.random.default_rng(3).standard_normal((10, 3))
    assert fs.cka_unbiased(x, y) == 0.0
    assert ref.cka_unbiased(x, y) == 0.0


def test_cka_unbiased_with_a_strong_common_offset():
    # CLIP-like: a common offset 1e3 times the spread. The estimator ignores the offset, and the
    # moments keep their digits by working about a pilot shift.
    x, y = paired(3000, 16, seed=4)
    want = ref.cka_unbiased(x, y)
    for offset in (1e3, 1e5):
        got = fs.cka_unbiased(x + offset, y - offset)
        assert got == pytest.approx(want, rel=1e-8)
    assert fs.cka_unbiased((x + 1e3).astype(np.float32), (y - 1e3).astype(np.float32)) == pytest.approx(
        want, rel=2e-4)


def test_cka_unbiased_float32_close_to_float64():
    x, y = paired(3000, 48, seed=5)
    want = ref.cka_unbiased(x, y)
    assert fs.cka_unbiased(x.astype(np.float32), y.astype(np.float32)) == pytest.approx(want, rel=1e-5)


def test_cka_unbiased_streamed_and_merged_equals_one_pass():
    x, y = paired(3000, 12, seed=6, offset=50.0)
    one = fs.Moments(12).update(x, y).estimators()["cka_unbiased"]
    assert one == pytest.approx(ref.cka_unbiased(x, y), rel=1e-9)
    streamed = fs.Moments(12)
    for a, b in ((0, 13), (13, 2500), (2500, 2999), (2999, 3000)):
        streamed.update(x[a:b], y[a:b])
    assert streamed.estimators()["cka_unbiased"] == pytest.approx(one, rel=1e-11)
    # Parts with very different means (so very different pilots), merged in a tree.
    order = np.argsort(x[:, 0])
    parts = np.array_split(order, 5)
    states = [fs.Moments(12).update(x[p], y[p]) for p in parts]
    left = states[0].copy().merge(states[1]).merge(states[2])
    right = states[3].copy().merge(states[4])
    merged = left.merge(right)
    assert merged.estimators()["cka_unbiased"] == pytest.approx(one, rel=1e-11)
    # ... also through the byte form and pickling.
    back = fs.Moments.from_bytes(merged.to_bytes())
    assert back.estimators()["cka_unbiased"] == merged.estimators()["cka_unbiased"]
    assert back.alignment() == merged.alignment()


def test_groups_and_subsets_carry_the_fourth_order_sums():
    from fastsas import _core

    x, y = paired(900, 6, seed=7)
    codes = (np.arange(900) % 3).astype(np.int32)
    groups = _core.MomentsGroups(3, 6)
    groups.update(x, y, codes, 2)
    for g in range(3):
        m = fs.Moments._from_core(groups.group(g))
        rows = codes == g
        assert m.estimators()["cka_unbiased"] == pytest.approx(ref.cka_unbiased(x[rows], y[rows]), rel=1e-9)


def test_first_byte_form_is_still_read():
    x, y = paired(300, 5, seed=8)
    m = fs.Moments(5).update(x, y)
    data = m.to_bytes()
    header = struct.Struct("<7sBqqBBd")
    fields = list(header.unpack_from(data))
    fields[1] = 1
    d2 = 10
    body = data[header.size + 1:header.size + 1 + 8 * (3 * d2 + d2 * (d2 + 1) // 2)]
    old = fs.Moments.from_bytes(header.pack(*fields) + body)
    a, b = old.alignment(), m.alignment()
    # Undefined without the fourth-order sums: absent from the alignment dict, NaN with its reason.
    assert "cka_unbiased" not in a and np.isfinite(b.pop("cka_unbiased"))
    assert a == b
    assert np.isnan(old.estimators()["cka_unbiased"])
    assert "byte form 1" in old.estimator_reasons()["cka_unbiased"]
    # Updating it further keeps the fourth-order sums unavailable (they would be partial).
    old.update(x[:10], y[:10])
    assert np.isnan(old.estimators()["cka_unbiased"])
    fields[1] = 4
    with pytest.raises(ValueError, match="version 4 is not supported .* upgrade"):
        fs.Moments.from_bytes(header.pack(*fields) + body)


def test_cka_unbiased_refuses_too_few_rows():
    x, y = paired(3, 2, seed=9)
    with pytest.raises(ValueError, match="needs at least 4 pairs, this Moments has 3"):
        fs.cka_unbiased(x, y)
    assert "cka_unbiased" not in fs.alignment(x, y)
    assert "at least 4 pairs" in fs.Moments(2).update(x, y).estimator_reasons()["cka_unbiased"]


# -- Procrustes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n, d", [(50, 3), (400, 10), (3000, 24)])
def test_procrustes_matches_explicit_minimisation(n, d):
    x, y = paired(n, d, seed=n + d, offset=2.0)
    want = ref.procrustes(x, y)
    got = fs.alignment(x, y)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key
    assert fs.procrustes(x, y) == pytest.approx(want["procrustes"], rel=1e-9)
    assert fs.procrustes(x, y, "angular") == pytest.approx(want["procrustes_angular"], rel=1e-9)
    assert fs.procrustes(x, y, "angular_whitened") == pytest.approx(want["procrustes_angular_whitened"], rel=1e-9)


def test_procrustes_of_a_rotation_is_zero():
    x, _ = paired(500, 6, seed=10)
    q, _ = np.linalg.qr(np.random.default_rng(10).standard_normal((6, 6)))
    e = fs.Moments(6).update(x, x @ q + 5.0).estimators()
    assert e["procrustes"] == pytest.approx(0.0, abs=1e-12)
    assert e["procrustes_angular"] == pytest.approx(0.0, abs=1e-7)
    assert e["procrustes_angular_whitened"] == pytest.approx(0.0, abs=1e-7)
    # Whitening removes any invertible linear map, not only rotations.
    a = np.random.default_rng(11).standard_normal((6, 6))
    e = fs.Moments(6).update(x, x @ a).estimators()
    assert e["procrustes_angular_whitened"] == pytest.approx(0.0, abs=1e-7)
    assert e["procrustes_angular"] > 0.05


def test_procrustes_whitened_drops_null_directions():
    rng = np.random.default_rng(12)
    x = np.zeros((400, 5))
    x[:, :3] = rng.standard_normal((400, 3))  # two directions without variance
    y = rng.standard_normal((400, 5))
    want = ref.procrustes(x, y)
    got = fs.Moments(5).update(x, y).estimators()
    assert got["procrustes_angular_whitened"] == pytest.approx(want["procrustes_angular_whitened"], rel=1e-9)


def test_procrustes_bad_variant():
    x, y = paired(20, 2, seed=13)
    with pytest.raises(ValueError, match="variant must be one of 'distance', 'angular', 'angular_whitened'"):
        fs.procrustes(x, y, "whitened")


def test_alignment_dict_has_the_estimators():
    x, y = paired(300, 6, seed=14)
    a = fs.alignment(x, y)
    for key in fs.moments.ESTIMATOR_KEYS:
        assert isinstance(a[key], float) and np.isfinite(a[key])
    m = fs.Moments(6).update(x, y)
    assert m.alignment() == dict(a)


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_cka_unbiased_does_not_depend_on_a_representable_scale(scale):
    x, y = paired(2000, 8, seed=12)
    assert fs.cka_unbiased(x * scale, y * scale) == pytest.approx(fs.cka_unbiased(x, y), rel=1e-9)


@pytest.mark.parametrize("scale", [1e-100, 1e90])
def test_cka_unbiased_beyond_float64_fourth_powers_is_refused_not_nan(scale):
    x, y = paired(2000, 8, seed=12)
    got = fs.alignment(x * scale, y * scale)
    assert "cka_unbiased" not in got
    assert all(np.isfinite(v) for k, v in got.items() if isinstance(v, float)), got
    with pytest.raises(ValueError, match="cka_unbiased is undefined .* multiply both modalities by a constant"):
        fs.cka_unbiased(x * scale, y * scale)
