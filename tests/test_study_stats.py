"""The statistics of a study, each against an independent computation from its definition
(brute-force enumeration, scipy's own tests) and on constructed data where the answer is
known: corrections, the permutation tests, Spearman's exact p, the bootstrap directional
test, the cross-validated q, and the paired jackknife of the audit package."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

import fastsas as fs
from fastsas.audit import leave_one_out, paired_difference, paired_jackknife
from fastsas.study import CellTable, eigenspectrum_concentration, retrieval_predictivity
from fastsas.study.stats import (adjust_pvalues, dataset_permutation, mann_whitney, one_sample_t, sign_consistency,
                                 spearman, spearman_rows, stratified_domain_permutation,
                                 stratified_spearman_permutation)


def _holm_by_definition(p):
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def test_holm_and_bh_corrections():
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = rng.uniform(0, 0.2, size=rng.integers(1, 12))
        assert adjust_pvalues(p, "holm") == pytest.approx(_holm_by_definition(list(p)), abs=1e-15)
        assert adjust_pvalues(p, "bh") == pytest.approx(stats.false_discovery_control(p, method="bh"), abs=1e-15)
    with_nan = adjust_pvalues([0.01, np.nan, 0.02], "holm")
    assert np.isnan(with_nan[1]) and with_nan[[0, 2]].tolist() == pytest.approx([0.02, 0.02])
    with pytest.raises(ValueError, match="correction"):
        adjust_pvalues([0.1], "bonferroni")


def _brute_stratified(grid, in_a, alternative):
    """Every within-model relabelling of the domain labels, enumerated."""
    rows = []
    for r in range(grid.shape[0]):
        ok = np.isfinite(grid[r]) & (in_a | ~in_a)
        values, labels = grid[r, ok], in_a[ok]
        rows.append([values[list(c)].mean() - np.delete(values, list(c)).mean()
                     for c in itertools.combinations(range(len(values)), int(labels.sum()))])
        observed_row = values[labels].mean() - values[~labels].mean()
        rows[-1] = (rows[-1], observed_row)
    observed = np.mean([o for _, o in rows])
    null = np.array([np.mean(c) for c in itertools.product(*[r for r, _ in rows])])
    if alternative == "greater":
        return np.mean(null >= observed - 1e-12)
    return np.mean(np.abs(null) >= abs(observed) - 1e-12)


@pytest.mark.parametrize("alternative", ["two-sided", "greater"])
def test_stratified_domain_permutation_is_exact_by_enumeration(alternative):
    rng = np.random.default_rng(1)
    grid = rng.standard_normal((4, 4)) + np.array([0.8, 0.6, 0.0, 0.1])
    in_a = np.array([True, True, False, False])
    r = stratified_domain_permutation(grid, in_a, ~in_a, alternative=alternative)
    assert r["exact"] and r["permutations"] == 6 ** 4
    assert r["p_value"] == pytest.approx(_brute_stratified(grid, in_a, alternative), abs=1e-12)
    assert r["statistic"] == pytest.approx(np.mean(grid[:, :2].mean(1) - grid[:, 2:].mean(1)))
    mc = stratified_domain_permutation(grid, in_a, ~in_a, alternative=alternative, permutations=1000,
                                       rng=np.random.default_rng(5))
    assert not mc["exact"] and abs(mc["p_value"] - r["p_value"]) < 0.03


def test_stratified_domain_permutation_with_missing_cells_and_no_effect():
    rng = np.random.default_rng(2)
    grid = rng.standard_normal((12, 4))
    grid[3, 0] = np.nan
    grid[5, :2] = np.nan  # no natural cell: this model is left out
    r = stratified_domain_permutation(grid, [1, 1, 0, 0], [0, 0, 1, 1], permutations=4000)
    assert r["units"] == 11 and math.isnan(r["per_model"][5]) and r["p_value"] > 0.05


def test_dataset_permutation_and_its_smallest_p():
    two_sided = dataset_permutation([0.9, 0.8, 0.3, 0.2], [1, 1, 0, 0], [0, 0, 1, 1])
    assert two_sided["assignments"] == 6 and two_sided["p_value"] == pytest.approx(1 / 3)
    assert two_sided["min_p"] == pytest.approx(1 / 3)
    one = dataset_permutation([0.9, 0.8, 0.3, 0.2], [1, 1, 0, 0], [0, 0, 1, 1], alternative="greater")
    assert one["p_value"] == pytest.approx(1 / 6) and one["min_p"] == pytest.approx(1 / 6)
    wrong_way = dataset_permutation([0.9, 0.8, 0.3, 0.2], [1, 1, 0, 0], [0, 0, 1, 1], alternative="less")
    assert wrong_way["p_value"] == pytest.approx(1.0)
    six = dataset_permutation([5, 4, 3, 2, 1, 0], [1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1], alternative="greater")
    assert six["min_p"] == pytest.approx(1 / 20)


def test_spearman_exact_p_is_the_permutation_distribution():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal(7), rng.standard_normal(7)
    y = x + 0.8 * y
    ours = spearman(x, y)
    # Two-sided: the share of the 7! pairings with |rho*| >= |rho|, enumerated with scipy's rho.
    rho = stats.spearmanr(x, y).statistic
    extreme = sum(abs(stats.spearmanr(x, y[list(p)]).statistic) >= abs(rho) - 1e-12
                  for p in itertools.permutations(range(7)))
    assert ours["p_method"] == "exact" and ours["p_value"] == pytest.approx(extreme / math.factorial(7), abs=1e-15)
    big = spearman(rng.standard_normal(15), rng.standard_normal(15))
    assert big["p_method"] == "t approximation"
    tied = spearman([1, 1, 2, 3, 4], [1, 2, 3, 4, 5])
    assert tied["p_method"] == "t approximation"


def test_spearman_rows_equals_scipy_row_by_row_with_nan_and_ties():
    rng = np.random.default_rng(4)
    x = np.round(rng.standard_normal((30, 9)), 1)
    y = x + rng.standard_normal((30, 9))
    x[3, 2] = np.nan
    y[7, [1, 4]] = np.nan
    got = spearman_rows(x, y)
    for i in range(30):
        ok = np.isfinite(x[i]) & np.isfinite(y[i])
        assert got[i] == pytest.approx(stats.spearmanr(x[i, ok], y[i, ok]).statistic, abs=1e-12)
    assert np.isnan(spearman_rows(np.ones((1, 5)), np.arange(5.0)[None])[0])


def test_pass_through_tests_match_scipy():
    a, b = [3.1, 2.2, 5.0, 4.4, 3.3], [1.0, 2.5, 0.3, 1.7]
    ours = mann_whitney(a, b, "greater")
    ref = stats.mannwhitneyu(a, b, alternative="greater")
    assert ours["u"] == ref.statistic and ours["p_value"] == ref.pvalue
    assert ours["rank_biserial"] == pytest.approx(2 * ref.statistic / 20 - 1)
    t = one_sample_t([0.2, -0.1, 0.4, 0.3])
    assert t["p_value"] == pytest.approx(stats.ttest_1samp([0.2, -0.1, 0.4, 0.3], 0).pvalue)
    flat = one_sample_t([0.5, 0.5, 0.5], alternative="less")
    assert flat["t"] == math.inf and flat["p_value"] == 1.0
    s = sign_consistency([0.1, 0.2, -0.3, 0.4, 0.0])
    assert (s["positive"], s["negative"], s["sign"]) == (3, 1, "mixed")
    assert s["sign_test_p"] == pytest.approx(stats.binomtest(3, 4).pvalue)


def test_stratified_spearman_permutation_finds_association_within_datasets_only():
    rng = np.random.default_rng(6)
    quality = rng.standard_normal((10, 1))
    target = quality + 0.3 * rng.standard_normal((10, 3))
    tracks = stratified_spearman_permutation(quality + 0.3 * rng.standard_normal((10, 3)), target, permutations=2000)
    assert tracks["statistic"] > 0.6 and tracks["p_value"] < 0.01
    unrelated = stratified_spearman_permutation(rng.standard_normal((10, 3)), target, permutations=2000)
    assert unrelated["p_value"] > 0.05


def _table(values: dict, models: int, datasets=("d1", "d2", "d3"), domains=None) -> CellTable:
    cells = []
    for i in range(models):
        for j, d in enumerate(datasets):
            cell = {"model": f"m{i}", "dataset": d, "status": "ok", "alignment": {}, "retrieval": {}}
            for key, grid in values.items():
                if key.startswith("rsum_"):
                    cell[key] = grid[i, j]
                elif key == "rsum":
                    cell["retrieval"]["rsum"] = grid[i, j]
                elif key == "sweep":
                    cell["sas_sweep"] = grid[i][j]
                else:
                    cell["alignment"][key] = grid[i, j]
            cells.append(cell)
    return CellTable(cells, [f"m{i}" for i in range(models)], list(datasets), domains or {})


def test_the_directional_test_finds_a_planted_direction_and_not_an_absent_one():
    rng = np.random.default_rng(7)
    m = 14
    i2t, t2i = rng.standard_normal((m, 3)), rng.standard_normal((m, 3))  # the two retrieval directions, unrelated
    sas_i2t = i2t + 0.3 * rng.standard_normal((m, 3))  # tracks I->T retrieval only
    sas_t2i = rng.standard_normal((m, 3))  # tracks neither
    table = _table({"sas_i2t": sas_i2t, "sas_t2i": sas_t2i, "rsum_i2t": i2t, "rsum_t2i": t2i, "rsum": i2t + t2i}, m)
    out = retrieval_predictivity(table, ["sas_i2t"], bootstrap=1000, permutations=500, seed=1)
    planted, absent = out["directional"]
    assert planted["metric"] == "sas_i2t" and planted["stratified"]["delta"] > 0.5
    assert planted["stratified"]["p_value"] < 0.01 and planted["stratified"]["ci_low"] > 0
    assert absent["stratified"]["p_value"] > 0.05
    # The same bootstrap resamples for both correlations: delta of identical targets is 0 in every resample.
    same = _table({"sas_i2t": sas_i2t, "sas_t2i": sas_t2i, "rsum_i2t": i2t, "rsum_t2i": i2t, "rsum": i2t}, m)
    tie = retrieval_predictivity(same, ["sas_i2t"], bootstrap=200, permutations=100)["directional"][0]
    assert tie["stratified"]["delta"] == 0 and tie["stratified"]["ci_low"] == tie["stratified"]["ci_high"] == 0


def _sweeps(m: int, shift_at: int, shift: float, rng) -> list:
    qs = [round(0.1 * k, 1) for k in range(1, 11)]
    out = []
    for _ in range(m):
        row = []
        for j in range(4):
            base = 0.5 + 0.02 * rng.standard_normal(10)
            if j < 2:
                base[shift_at] += shift  # natural datasets above medical ones at one q only
            row.append({"q": qs, "sas_i2t": base.tolist(), "sas_t2i": (0.5 + 0.02 * rng.standard_normal(10)).tolist()})
        out.append(row)
    return out


def test_cross_validation_finds_the_planted_q_and_reports_held_out_separation():
    rng = np.random.default_rng(8)
    domains = {"n1": "natural", "n2": "natural", "m1": "medical", "m2": "medical"}
    table = _table({"sweep": _sweeps(8, 2, 0.3, rng)}, 8, ("n1", "n2", "m1", "m2"), domains)
    out = eigenspectrum_concentration(table)["i2t"]
    assert out["in_sample"]["q"] == pytest.approx(0.3)
    assert out["cv_models"]["chosen_q"] == {"0.3": 8} and out["cv_datasets"]["chosen_q"] == {"0.3": 4}
    for kind in ("cv_models", "cv_datasets"):
        assert out[kind]["held_out_separation"] == pytest.approx(0.3, abs=0.05) and out[kind]["ci_low"] > 0.2
        assert out[kind]["held_out_auc"] == 1.0
    # Without a planted q the in-sample separation is noise chosen for its size; held out it vanishes.
    null = _table({"sweep": _sweeps(8, 2, 0.0, np.random.default_rng(9))}, 8, ("n1", "n2", "m1", "m2"), domains)
    noise = eigenspectrum_concentration(null)["i2t"]
    in_sample = max(abs(v) for v in noise["in_sample"]["difference"])
    assert noise["cv_models"]["held_out_separation"] < in_sample
    assert noise["cv_models"]["ci_low"] < 0.005


def test_paired_jackknife_equals_the_definition_on_the_same_blocks():
    x, y = fs.synthetic.paired_embeddings(1200, 12, image_only_factors=2, dtype=np.float64, seed=1)
    y_b = y + 0.7 * np.random.default_rng(2).standard_normal(y.shape)
    blocks = 8
    rows = [np.arange(1200) % blocks == b for b in range(blocks)]

    def states(a, t):
        return [fs.Moments(12).update(a[r], t[r])._core for r in rows]

    def sas(core):
        return fs.Moments._from_core(core).alignment()["sas_i2t"]

    out = paired_jackknife(states(x, y), states(x, y_b), sas)
    # The definition, from scratch: each archive without block b, computed directly.
    loo_a = [fs.sas(x[~r], y[~r], backend="cpu") for r in rows]
    loo_b = [fs.sas(x[~r], y_b[~r], backend="cpu") for r in rows]
    d = np.array(loo_a) - np.array(loo_b)
    se = math.sqrt((blocks - 1) / blocks * np.sum((d - d.mean()) ** 2))
    assert out["value"] == pytest.approx(fs.sas(x, y, backend="cpu") - fs.sas(x, y_b, backend="cpu"), rel=1e-12)
    assert out["se"] == pytest.approx(se, rel=1e-9)
    assert out["df"] == blocks - 1 and out["p_value"] == pytest.approx(2 * stats.t.sf(abs(out["value"] / se), 7),
                                                                        rel=1e-9)
    # From the leave-one-out values directly, and per key with a dict-valued statistic.
    again = paired_difference(out["value"] + 0.0, 0.0, [sas(c) for c in leave_one_out(states(x, y))],
                              [sas(c) for c in leave_one_out(states(x, y_b))])
    assert again["se"] == pytest.approx(out["se"], rel=1e-12)
    both = paired_jackknife(states(x, y), states(x, y_b), lambda c: fs.Moments._from_core(c).alignment())
    assert both["sas_i2t"]["se"] == pytest.approx(out["se"], rel=1e-12) and "cka" in both
    with pytest.raises(ValueError, match="same blocks"):
        paired_jackknife(states(x, y), states(x, y_b)[:-1], sas)
