"""What an audit concludes: the suspected-mismatch test (calibration, power, exactness against a
float64 brute force), the unit of uncertainty, SAS's conditioning and the companion score, the
chance level, subgroups against the rest, the drift trend, adapted options, progress."""
import math

import numpy as np
import pytest
from scipy import stats

import fastsas as fs
from fastsas._multiple_tests import adjust_pvalues
from fastsas.audit import AuditPlan, interval
from fastsas.audit.chance import chance_alignment, chance_recall, pairing_permutation
from fastsas.audit.conditioning import companion_score, conditioning, eigen_blocks
from fastsas.audit.mismatch import jf_skew_t_cdf, jf_skew_t_logpdf, select_by_lfdr, unit_statistics
from fastsas.audit.rows import ArchiveRows
from fastsas.report.findings import findings


# ------------------------------------------------------------------------- mismatch statistic
def _brute_statistic(x, y, image_ids, text_ids, pairs=None):
    """T per unit from the full float64 similarity matrix, straight from the definition."""
    xh = x / np.linalg.norm(x, axis=1, keepdims=True)
    yh = y / np.linalg.norm(y, axis=1, keepdims=True)
    s = xh @ yh.T
    units = sorted(set(image_ids.tolist()) & set(text_ids.tolist()))
    pairs = pairs or [(u, u) for u in units]
    out = []
    for u, v in pairs:
        rows_i, rows_t = np.flatnonzero(image_ids == u), np.flatnonzero(text_ids == v)
        zi = []
        for i in rows_i:
            match = np.isin(np.arange(len(y)), rows_t)
            zi.append((s[i, match].max() - s[i, ~match].mean()) / s[i, ~match].std())
        zt = []
        for j in rows_t:
            match = np.isin(np.arange(len(x)), rows_i)
            zt.append((s[match, j].max() - s[~match, j].mean()) / s[~match, j].std())
        out.append((np.mean(zi) + np.mean(zt)) / math.sqrt(2))
    return np.array(out), units


def _unit_state(plan, x, y):
    state = plan.new_state()
    state.accumulate(x, y, plan.codes(0, len(x)), threads=1)
    return state.states("unit")[0]


@pytest.mark.parametrize("dtype, rel", [(np.float64, 1e-9), (np.float32, 2e-4)])
def test_statistic_of_pairs_equals_the_brute_force(dtype, rel):
    x, y = fs.synthetic.paired_embeddings(400, 16, image_only_factors=2, seed=1, dtype=dtype)
    plan = AuditPlan(400, 16)
    got = unit_statistics(plan, _unit_state(plan, x, y), ArchiveRows(x, y), chunk_rows=128)
    ids = np.arange(400)
    want, _ = _brute_statistic(x.astype(np.float64), y.astype(np.float64), ids, ids)
    np.testing.assert_allclose(got["statistic"], want, rtol=rel)
    # the mismatch law: a unit's images with another unit's text, exactly as a swap would score
    pairs = [(3, 17), (250, 9), (399, 0)]
    swapped = unit_statistics(plan, _unit_state(plan, x, y), ArchiveRows(x, y),
                              pairs=(np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])))
    np.testing.assert_allclose(swapped["statistic"], _brute_statistic(x.astype(np.float64), y.astype(np.float64),
                                                                       ids, ids, pairs)[0], rtol=rel)


def test_statistic_of_studies_with_several_rows_equals_the_brute_force():
    rng = np.random.default_rng(3)
    x, y = fs.synthetic.paired_embeddings(120, 16, seed=2, dtype=np.float64)
    frames = rng.integers(1, 4, 120)
    ids = np.repeat(np.arange(120), frames)
    images = x[ids] + 0.05 * rng.standard_normal((ids.size, 16))
    texts = y[ids]  # one report per study, on every frame's row
    sid = np.array([f"S{i:03d}" for i in ids])
    plan = AuditPlan(ids.size, 16, image_ids=sid, text_ids=sid)
    got = unit_statistics(plan, _unit_state(plan, images, texts), ArchiveRows(images, texts))
    want, units = _brute_statistic(images, texts, sid, sid)
    assert len(got["statistic"]) == len(units) == 120
    np.testing.assert_allclose(got["statistic"], want, rtol=1e-9)


def test_jones_faddy_skew_t_and_the_selection_rule():
    x = np.linspace(-30, 30, 61)
    for a, b, loc, scale in ((3.0, 5.0, 0.5, 2.0), (7.1, 5.7, 4.8, 0.34), (200.0, 150.0, -1.0, 0.1)):
        got, want = jf_skew_t_logpdf(x, a, b, loc, scale), stats.jf_skew_t.logpdf(x, a, b, loc, scale)
        finite = np.isfinite(want)  # scipy's density underflows far in the tails, the log form does not
        np.testing.assert_allclose(got[finite], want[finite], rtol=1e-8, atol=1e-9)
        assert np.all(np.isfinite(got)) and finite.sum() > 10
        np.testing.assert_allclose(jf_skew_t_cdf(x, a, b, loc, scale), stats.jf_skew_t.cdf(x, a, b, loc, scale),
                                   rtol=1e-9, atol=1e-14)
    lfdr = np.array([0.0, 0.01, 0.3, 0.04, 0.6, 0.0])
    assert select_by_lfdr(lfdr, 0.05).tolist() == [0, 5, 1, 3]  # mean 0.0125; with 0.3 it would be 0.07
    assert select_by_lfdr(lfdr, 0.2).tolist() == [0, 5, 1, 3, 2]  # never the unit of lfdr 0.6 > 1/2
    assert select_by_lfdr(np.array([0.3, 0.4]), 0.05).size == 0


def _audit(x, y, **kw):
    return fs.audit(x, y, retrieval="none", chance_repeats=0, **kw)


@pytest.mark.parametrize("kw", [dict(dim=128), dict(dim=64, image_only_factors=3), dict(dim=64, text_only_factors=4),
                                dict(dim=32, noise=1.0)], ids=["plain", "image-only", "text-only", "noisy"])
def test_clean_archives_flag_nothing(kw):
    x, y = fs.synthetic.paired_embeddings(20000, seed=11, **kw)
    test = _audit(x, y).mismatch_test
    assert test["units_tested"] == 20000 and test["flagged"] == 0, test


def test_the_demo_finds_the_planted_swaps():
    demo = fs.synthetic.demo_archive(20000, 128)
    ids = demo["metadata"]["study_id"]
    r = _audit(demo["images"], demo["texts"], image_ids=ids, text_ids=ids, mismatches=10_000)
    planted = set(ids[demo["planted"]].tolist())
    found = {m["id"] for m in r.mismatches}
    assert len(planted) == 100 and r.mismatch_test["flagged"] == len(found)  # nothing capped at 10,000
    assert len(found & planted) >= 95 and len(found - planted) <= 0.05 * len(found), (len(found & planted), found - planted)
    assert r.mismatch_test["has_power"] and r.mismatch_test["power"] > 0.9
    shown = _audit(demo["images"], demo["texts"], image_ids=ids, text_ids=ids)
    assert len(shown.mismatches) == 20 and shown.mismatch_test["flagged"] == len(found)  # listed: capped; count: not
    assert [m["lfdr"] for m in shown.mismatches] == sorted(m["lfdr"] for m in shown.mismatches)


@pytest.mark.parametrize("seed", [0, 1])
def test_near_chance_archive_flags_nothing_and_says_it_has_no_power(seed):
    x, y = fs.synthetic.paired_embeddings(20000, 128, noise=3.0, seed=seed)
    r = fs.audit(x, y, retrieval="whole", chance_repeats=0)
    assert r.retrieval["i2t_r1"] < 0.01  # retrieval near chance (1 / 20000)
    test = r.mismatch_test
    assert test["flagged"] == 0 and not test["has_power"] and test["power"] < 0.5 and r.mismatches == []
    first = findings(r.to_dict())[0]
    assert first["kind"] == "mismatches" and "no power" in first["text"]


# ------------------------------------------------------------------------- the unit
def test_store_records_its_id_column_and_the_audit_uses_it(tmp_path):
    from fastsas.store import EmbeddingStore

    rng = np.random.default_rng(0)
    x, y = fs.synthetic.paired_embeddings(300, 16, image_only_factors=2, seed=5)
    frames = np.repeat(np.arange(300), 4)  # four rows per study, as embed --frames all writes them
    images = x[frames] + 0.2 * rng.standard_normal((1200, 16)).astype(np.float32)
    study = np.array([f"S{i:03d}" for i in frames])
    store = EmbeddingStore.build(tmp_path / "s", images, y[frames], metadata={"study": study}, chunk_rows=256,
                                 id_column="study")
    assert store.id_column == "study" and EmbeddingStore.open(tmp_path / "s").manifest["id_column"] == "study"
    by_study = fs.audit(store, retrieval="none", chance_repeats=0)
    given = fs.audit(store, image_ids=study, text_ids=study, unit_name="study", retrieval="none", chance_repeats=0)
    by_row = fs.audit(store, recorded_ids=False, retrieval="none", chance_repeats=0)
    assert by_study.unit == given.unit == {"name": "study", "count": 300, "by": "id", "blocks": 20}
    assert by_study.uncertainty == given.uncertainty
    assert by_row.unit["name"] == "pair" and by_row.unit["count"] == 1200
    # frames of one study are not independent: counting them as rows understates the error
    assert by_row.uncertainty["sas_i2t"]["se"] < 0.8 * by_study.uncertainty["sas_i2t"]["se"]
    with pytest.raises(ValueError, match="id_column 'nope' is not a metadata column"):
        EmbeddingStore.build(tmp_path / "t", images, y[frames], metadata={"study": study}, id_column="nope")


def test_small_archives_adapt_blocks_and_cutoffs_and_say_so():
    x, y = fs.synthetic.paired_embeddings(8, 6, shared_factors=2)
    r = fs.audit(x, y, chance_repeats=1)
    assert r.uncertainty["blocks"] == 8 and r.unit["blocks"] == 8
    assert r.notes == ["jackknife blocks: 8 (20 asked; the archive has 8 units)",
                       "retrieval cutoffs: (1, 5) (k above the gallery of 8 dropped from (1, 5, 10))"]
    assert set(r.retrieval) >= {"i2t_r1", "i2t_r5"} and "i2t_r10" not in r.retrieval
    ids = np.array(["a", "a", "b", "b", "b", "c", "c", "c"])
    assert fs.audit(x, y, image_ids=ids, text_ids=ids).unit == {"name": "id", "count": 3, "by": "id", "blocks": 3}
    with pytest.raises(ValueError, match="single unit"):
        fs.audit(x, y, image_ids=np.zeros(8), text_ids=np.zeros(8))


def test_missing_labels_form_one_group_sorted_last():
    from fastsas.audit.plan import MISSING_LABEL, fill_missing

    x, y = fs.synthetic.paired_embeddings(900, 16, seed=3)
    years = np.where(np.arange(900) % 9 == 0, np.nan, 2020 + np.arange(900) % 3)
    modality = np.array(["CT", "", None, "MR"] * 225, dtype=object)
    r = fs.audit(x, y, groups=fill_missing(modality), periods=fill_missing(years), retrieval="none",
                 chance_repeats=0, mismatch_fdr=None)
    assert [g["group"] for g in r.groups] == ["CT", "MR", MISSING_LABEL]
    assert r.group(MISSING_LABEL)["n"] == 450
    assert [p["group"] for p in r.drift] == [2020.0, 2021.0, 2022.0, MISSING_LABEL]


# ------------------------------------------------------------------------- conditioning
def _planted_block(rng, n=20000, d=8):
    """Anchor with modes 1-3 of exactly equal variance; the other modality mirrors one
    direction inside the block, not the others."""
    x = rng.standard_normal((n, d)) * np.array([3.0, 3.0, 3.0, 2.0, 1.5, 1.0, 0.5, 0.3])
    y = np.c_[x[:, 0], 0.2 * x[:, 1] + rng.standard_normal(n), rng.standard_normal(n), x[:, 3:]]
    cov = np.cov(np.c_[x, y].T, bias=True)
    return cov[:d, :d], cov[d:, d:], cov[:d, d:]


def test_companion_is_invariant_to_rotations_inside_a_degenerate_block():
    rng = np.random.default_rng(7)
    ca, cb, cab = _planted_block(rng)
    lam = np.array([9.0, 9.0, 9.0, 4.0, 2.25, 1.0, 0.25, 0.09])
    ca = np.diag(lam)  # exactly equal eigenvalues: any rotation of modes 1-3 is an eigenbasis
    v = np.eye(8)
    blocks = eigen_blocks(lam, lam * math.sqrt(2 / 20000), kept=4)
    assert blocks == [(0, 3), (3, 4)]

    def sas_of(vectors):  # SAS with these eigenvectors (its per-mode rho)
        a = np.einsum("ik,ij,jk->k", vectors, cab, vectors)
        s = np.einsum("ik,ij,jk->k", vectors, cb, vectors)
        rho = np.abs(a) / np.sqrt(lam * s + 1e-8)
        return float(np.sum(lam[:4] * rho[:4]) / np.sum(lam[:4]))

    base = companion_score(ca, cb, cab, lam, v, blocks, kept=4)
    sas_values = []
    for seed in range(5):
        q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((3, 3)))
        rotated = v.copy()
        rotated[:, :3] = v[:, :3] @ q
        assert companion_score(ca, cb, cab, lam, rotated, blocks, kept=4) == pytest.approx(base, abs=1e-9)
        sas_values.append(sas_of(rotated))
    assert max(sas_values) - min(sas_values) > 0.05  # per-mode SAS is not determined here


def test_companion_equals_sas_on_a_well_separated_spectrum():
    x, y = fs.synthetic.paired_embeddings(20000, 16, seed=4)
    m = fs.Moments(16).update(x, y)
    cond = conditioning(m._core, 0.25)
    for direction in ("i2t", "t2i"):
        c = cond[direction]
        assert not c["degenerate"] and all(stop - start == 1 for start, stop in c["mode_blocks"])
        assert c["companion"] == pytest.approx(c["sas"], abs=1e-9)
    r = fs.audit(x, y, retrieval="none", chance_repeats=0, mismatch_fdr=None)
    assert r.uncertainty["sas_companion_i2t"]["value"] == pytest.approx(r.alignment["sas_i2t"], abs=1e-9)
    assert not [f for f in findings(r.to_dict()) if f["kind"] == "conditioning"]


def test_the_warning_fires_on_the_readme_generator():
    images, texts = fs.synthetic.paired_embeddings(50_000, 256, image_only_factors=6)  # as the README uses it
    r = fs.audit(images, texts, retrieval="none", chance_repeats=0, mismatch_fdr=None)
    c = r.conditioning["i2t"]
    assert c["degenerate"] and c["blocks"][0]["modes"] == [1, 7]  # the shared factor and the six image-only ones
    assert c["blocks"][0]["eigenvalues"][0] - c["blocks"][0]["eigenvalues"][-1] < 0.5
    warned = [f for f in findings(r.to_dict()) if f["kind"] == "conditioning" and f["values"]["direction"] == "i2t"]
    assert warned and warned[0]["severity"] == "warning" and "modes 1–7" in warned[0]["text"]
    # the companion is far better determined than SAS here
    assert r.uncertainty["sas_companion_i2t"]["se"] < 0.3 * r.uncertainty["sas_i2t"]["se"]


# ------------------------------------------------------------------------- chance
def test_chance_level_is_the_alignment_of_the_permuted_pairing():
    x, y = fs.synthetic.paired_embeddings(3000, 16, seed=8, dtype=np.float64)
    out = chance_alignment(ArchiveRows(x, y), 16, 0.1, repeats=1, seed=5, threads=1, chunk_rows=1024)
    _, perm = pairing_permutation(3000, 1024, np.random.default_rng(5))
    assert sorted(perm.tolist()) == list(range(3000))
    want = fs.alignment(x, y[perm])
    for key in ("sas_i2t", "sas_t2i", "cka", "svcca", "delta_cos", "matched_cosine"):
        assert out["metrics"][key]["mean"] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key
    assert out["metrics"]["sas_i2t"]["mean"] < 0.1 < fs.alignment(x, y)["sas_i2t"]


def test_chance_recall_is_the_hypergeometric_probability():
    ids_i = np.array([0, 1, 2, 3, 4, 5])
    ids_t = np.array([0, 0, 1, 2, 2, 2, 3, 4, 5, 6])  # one to three captions per image, one caption of no image
    out = chance_recall(ids_i, ids_t, 10, (1, 3))
    m = np.array([2, 1, 3, 1, 1, 1])
    for k in (1, 3):
        want = np.mean([1 - stats.hypergeom.pmf(0, 10, mi, k) for mi in m])
        assert out[f"i2t_r{k}"] == pytest.approx(want, rel=1e-12)
    assert chance_recall(None, None, 500, (1, 5))["t2i_r5"] == pytest.approx(0.01, rel=1e-12)


# ------------------------------------------------------------------------- contrasts and drift
def test_the_contrasts_holm_against_its_definition():
    p = np.array([0.01, 0.04, 0.03, 0.5])
    order = np.argsort(p)
    want = np.empty(4)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (4 - rank) * p[i])
        want[i] = min(1.0, running)
    assert adjust_pvalues(p, "holm").tolist() == pytest.approx(want.tolist())


def test_subgroup_against_the_rest_is_a_paired_jackknife():
    x, y = fs.synthetic.paired_embeddings(6000, 16, image_only_factors=2, seed=9, dtype=np.float64)
    groups = np.arange(6000) % 3
    y = y.copy()
    y[groups == 2] += 1.5 * np.random.default_rng(0).standard_normal((2000, 16))  # group 2 aligns worse
    r = fs.audit(x, y, groups=groups, jackknife_blocks=10, retrieval="whole", chance_repeats=0, mismatch_fdr=None)
    row = next(c for c in r.contrasts if c["group"] == 2)
    t = row["tests"]["cka"]
    # brute force: the cells' blocks by position within the group, left out of both sides
    position = np.empty(6000, dtype=int)
    for g in range(3):
        members = np.flatnonzero(groups == g)
        position[members] = np.arange(members.size)
    block = position % 10
    mine, rest = groups == 2, groups != 2
    reps = [fs.alignment(x[mine & (block != b)], y[mine & (block != b)])["cka"]
            - fs.alignment(x[rest & (block != b)], y[rest & (block != b)])["cka"] for b in range(10)]
    want = interval(fs.alignment(x[mine], y[mine])["cka"] - fs.alignment(x[rest], y[rest])["cka"], reps)
    assert t["difference"] == pytest.approx(want["value"], rel=1e-9)
    assert t["se"] == pytest.approx(want["se"], rel=1e-6)
    assert t["difference"] < 0 and t["significant"] and t["p_holm"] >= t["p_value"]
    assert row["tests"]["i2t_r1"]["difference"] < 0


def test_drift_trend_is_the_jackknife_of_the_slope():
    x, y = fs.synthetic.paired_embeddings(5000, 16, seed=10, dtype=np.float64)
    years = 2018 + np.arange(5000) % 5
    y = y + (years[:, None] - 2018) * 0.25 * np.random.default_rng(1).standard_normal((5000, 16))  # drifts
    r = fs.audit(x, y, periods=years, jackknife_blocks=8, retrieval="none", chance_repeats=0, mismatch_fdr=None)
    tr = r.drift_trend
    values = [p["alignment"]["cka"] for p in r.drift]
    assert tr["x"] == "period value" and tr["cka"]["slope"] == pytest.approx(np.polyfit(np.arange(2018, 2023), values, 1)[0],
                                                                             rel=1e-9)
    assert tr["cka"]["slope"] < 0 and tr["cka"]["p_value"] < 0.05
    assert all("uncertainty" in p for p in r.drift)
    assert [f for f in findings(r.to_dict()) if f["kind"] == "drift"][0]["severity"] == "warning"


def test_intervals_of_bounded_metrics_stay_in_range():
    x, y = fs.synthetic.paired_embeddings(3000, 16, noise=0.2, seed=12)
    r = fs.audit(x, y, chance_repeats=0)
    for key in ("sas_i2t", "sas_t2i", "cka", "sas_companion_i2t"):
        u = r.uncertainty[key]
        assert 0.0 <= u["ci_low"] <= u["value"] <= u["ci_high"] <= 1.0, key
    for key, u in r.uncertainty["retrieval"].items():
        assert 0.0 <= u["ci_low"] <= u["ci_high"] <= 1.0, key
    assert any(u["clipped"] for u in r.uncertainty["retrieval"].values())  # R@k ~ 1: clipped at 1


# ------------------------------------------------------------------------- progress
@pytest.mark.parametrize("rows", ["float", "sign-quantised"])
def test_whole_gallery_retrieval_with_progress_in_rows_equals_fs_retrieval(rows):
    x, y = fs.synthetic.paired_embeddings(20000, 16, seed=13)
    if rows == "sign-quantised":  # coordinates -1, 0, 1 of unequal supports: exact ties of integer rows
        x, y = (np.sign(a) * (np.abs(a) > 0.6 * a.std()) for a in (x.astype(np.float64), y.astype(np.float64)))
        x[:, 0] += np.abs(x).sum(1) == 0
        y[:, 0] += np.abs(y).sum(1) == 0
    seen = []

    def hook(iterable, description, total):
        items = list(iterable)
        seen.append((description, total, items))
        return iter(items)

    ids = np.arange(20000) // 2
    r = fs.audit(x, y, image_ids=ids, text_ids=ids, retrieval="whole", progress=hook, backend="cpu",
                 chance_repeats=0, mismatch_fdr=None)
    want = fs.retrieval(x, y, image_ids=ids, text_ids=ids, backend="cpu")
    assert r.retrieval == dict(want)
    step = [s for s in seen if s[0].startswith("retrieval, whole gallery")]
    assert step and step[0][1] == 20000 and sum(len(rows) for rows in step[0][2]) == 20000
    assert all(isinstance(rows, range) for rows in step[0][2]) and len(step[0][2]) > 1
