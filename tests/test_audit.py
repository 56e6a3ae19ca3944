"""fs.audit: subgroups, jackknife uncertainty, suspected mismatches and drift."""
import json
import math

import numpy as np
import pytest
from scipy import stats

import fastsas as fs
from fastsas.audit import JACKKNIFE_METRICS

N, D = 3000, 24


@pytest.fixture(scope="module")
def data():
    return fs.synthetic.paired_embeddings(N, D, image_only_factors=2, seed=0, dtype=np.float64)


def test_subgroups_equal_alignment_alone(data):
    x, y = data
    groups = np.array(["CT", "MR", "US", "CR"])[np.random.default_rng(1).integers(0, 4, N)]
    r = fs.audit(x, y, groups=groups, chunk_rows=700)
    assert [g["group"] for g in r.groups] == ["CR", "CT", "MR", "US"]
    for g in r.groups:
        rows = groups == g["group"]
        assert g["n"] == rows.sum() and g["status"] == "ok"
        alone = fs.alignment(x[rows], y[rows])
        for k in ("sas_i2t", "sas_t2i", "cka", "svcca", "delta_cos", "rmg", "coral"):
            assert g["alignment"][k] == pytest.approx(alone[k], rel=1e-10, abs=1e-12), (g["group"], k)
        within = fs.retrieval(x[rows], y[rows])
        assert g["retrieval_within"]["i2t_r1"] == within["i2t_r1"]
        whole = fs.retrieval(x, y, return_ranks=True)
        assert g["retrieval_whole"]["i2t_r5"] == pytest.approx(np.mean(whole["i2t_ranks"][rows] <= 5))
        assert g["retrieval_whole"]["t2i_r1"] == pytest.approx(np.mean(whole["t2i_ranks"][rows] <= 1))
    whole_alignment = fs.alignment(x, y)
    for k in whole_alignment:
        assert r.alignment[k] == pytest.approx(whole_alignment[k], rel=1e-10, abs=1e-12), k


def test_jackknife_matches_brute_force(data):
    x, y = data
    blocks = 8
    r = fs.audit(x, y, jackknife_blocks=blocks, retrieval=False)
    block_of = np.arange(N) % blocks
    loo = [fs.alignment(x[block_of != b], y[block_of != b]) for b in range(blocks)]
    loo = [{**a, "sas_imbalance": a["sas_i2t"] - a["sas_t2i"]} for a in loo]
    for key in JACKKNIFE_METRICS:
        v = np.array([a[key] for a in loo])
        se = math.sqrt((blocks - 1) / blocks * np.sum((v - v.mean()) ** 2))
        got = r.uncertainty[key]
        assert got["se"] == pytest.approx(se, rel=1e-7), key
        half = stats.t.ppf(0.975, blocks - 1) * se
        assert got["ci_low"] == pytest.approx(r.alignment[key if key != "sas_imbalance" else "sas_imbalance"] - half,
                                              rel=1e-7, abs=1e-12)
    test = r.uncertainty["imbalance_test"]
    t_stat = r.alignment["sas_imbalance"] / r.uncertainty["sas_imbalance"]["se"]
    assert test["t"] == pytest.approx(t_stat, rel=1e-9)
    assert test["p_value"] == pytest.approx(2 * stats.t.sf(abs(t_stat), blocks - 1), rel=1e-9)
    assert test["p_value"] < 0.01  # the images do carry extra factors here


def test_balanced_data_has_no_significant_imbalance():
    x, y = fs.synthetic.paired_embeddings(4000, 24, seed=3, dtype=np.float64)
    r = fs.audit(x, y, retrieval=False)
    assert r.uncertainty["imbalance_test"]["p_value"] > 0.01


def test_interval_coverage_over_seeds():
    # The 95% interval from n pairs should cover the value a 20x larger sample gives in
    # at least 90 of 100 seeds.
    common = dict(shared_factors=4, image_only_factors=1, extra_scale=1.5, noise=0.8)
    big_x, big_y = fs.synthetic.paired_embeddings(20 * 2000, 16, seed=10_000, **common)
    truth = fs.alignment(big_x, big_y)
    covered = {k: 0 for k in JACKKNIFE_METRICS}
    for seed in range(100):
        x, y = fs.synthetic.paired_embeddings(2000, 16, seed=seed, **common)
        u = fs.audit(x, y, retrieval=False, mismatch_fdr=None, chance_repeats=0).uncertainty  # intervals only
        for k in JACKKNIFE_METRICS:
            covered[k] += u[k]["ci_low"] <= truth[k] <= u[k]["ci_high"]
    assert all(c >= 90 for c in covered.values()), covered


def test_planted_mismatches_rank_first():
    # an archive whose genuine pairs mostly retrieve each other (R@1 ~ 0.9)
    x, y = fs.synthetic.paired_embeddings(N, D, shared_factors=16, noise=0.1, seed=4, dtype=np.float64)
    rng = np.random.default_rng(5)
    planted = rng.choice(N, N // 100, replace=False)  # reports swapped between 1% of studies
    y_swapped = y.copy()
    y_swapped[planted] = y[np.roll(planted, 1)]
    r = fs.audit(x, y_swapped, mismatches=len(planted))
    assert {m["row"] for m in r.mismatches} == set(planted.tolist())
    assert all(m["i2t_rank"] > 1 and m["t2i_rank"] > 1 for m in r.mismatches)


def test_mismatches_with_study_ids():
    # several images per study, one report per study: ids tie them together
    studies = 800
    x, y = fs.synthetic.paired_embeddings(studies, 24, seed=6, dtype=np.float64)
    images = np.repeat(x, 2, axis=0) + 0.05 * np.random.default_rng(0).standard_normal((2 * studies, 24))
    ids = np.repeat([f"S{i:04d}" for i in range(studies)], 2)
    texts = np.repeat(y, 2, axis=0)
    texts[[10, 11]], texts[[500, 501]] = texts[[500, 501]].copy(), texts[[10, 11]].copy()
    r = fs.audit(images, texts, image_ids=ids, text_ids=ids, mismatches=4)
    assert {m["id"] for m in r.mismatches} == {"S0005", "S0250"}


def test_drift_one_point_per_period(data):
    x, y = data
    years = 2019 + np.arange(N) * 4 // N
    r = fs.audit(x, y, periods=years, retrieval=False)
    assert [p["group"] for p in r.drift] == [2019, 2020, 2021, 2022]
    first = years == 2019
    assert r.drift[0]["alignment"]["sas_i2t"] == pytest.approx(fs.alignment(x[first], y[first])["sas_i2t"], rel=1e-10)


def test_small_subgroup_is_reported_not_crashed(data):
    x, y = data
    groups = np.where(np.arange(N) == 7, "rare", "common")
    r = fs.audit(x, y, groups=groups, retrieval=False)
    rare = r.group("rare")
    assert rare["n"] == 1 and rare["status"].startswith("too_small")
    assert r.group("common")["status"] == "ok"


def test_result_is_json_and_bad_inputs_are_named(data):
    x, y = data
    r = fs.audit(x, y, groups=np.arange(N) % 3)
    json.dumps(r.to_dict())
    with pytest.raises(ValueError, match="groups has 10 labels but there are 3000 pairs"):
        fs.audit(x, y, groups=np.zeros(10))
    with pytest.raises(ValueError, match="groups has NaN or Inf labels in 1 row: 3"):
        fs.audit(x, y, groups=np.where(np.arange(N) == 3, np.nan, 1.0))
    with pytest.raises(ValueError, match="periods must be 1-D"):
        fs.audit(x, y, periods=np.zeros((N, 2)))
    with pytest.raises(ValueError, match="jackknife_blocks must be an integer >= 2"):
        fs.audit(x, y, jackknife_blocks=1)
    with pytest.raises(ValueError, match="give both image_ids and text_ids"):
        fs.audit(x, y, image_ids=np.arange(N))
    bad = x.copy(); bad[2500, 0] = np.inf
    with pytest.raises(ValueError, match="images has non-finite values .* 1 row: 2500"):
        fs.audit(bad, y, chunk_rows=1000)
    with pytest.raises(KeyError, match="no subgroup 'XR'"):
        r.group("XR")


def test_audit_from_an_on_disk_source_equals_in_memory(tmp_path, data):
    from fastsas.io import NpyPairSource

    x, y = data
    np.save(tmp_path / "x.npy", x); np.save(tmp_path / "y.npy", y)
    groups = np.arange(N) % 4
    source = NpyPairSource(tmp_path / "x.npy", tmp_path / "y.npy")
    streamed = fs.audit(source, groups=groups, chunk_rows=512).to_dict()
    in_memory = fs.audit(x, y, groups=groups, chunk_rows=512).to_dict()
    assert json.dumps(streamed, sort_keys=True) == json.dumps(in_memory, sort_keys=True)


def test_within_group_retrieval_finds_mismatches():
    x, y = fs.synthetic.paired_embeddings(N, D, shared_factors=16, noise=0.1, seed=4, dtype=np.float64)
    planted = np.array([10, 500, 1234, 2999])
    y = y.copy(); y[planted] = y[np.roll(planted, 1)]
    groups = np.arange(N) % 2  # 10 and 500 in group 0, 1234 and 2999 in group 1: swaps cross groups
    r = fs.audit(x, y, groups=groups, retrieval="within", mismatches=4)
    assert r.retrieval is None and all("retrieval_within" in g for g in r.groups)
    assert "retrieval_whole" not in r.groups[0]
    assert {m["row"] for m in r.mismatches} == set(planted.tolist())
    with pytest.raises(ValueError, match="retrieval must be one of"):
        fs.audit(x, y, retrieval="all")
    with pytest.raises(TypeError, match="or a paired source"):
        fs.audit(x)


def test_subgroup_intervals_match_a_jackknife_of_the_subgroup_alone(data):
    x, y = data
    groups = np.arange(N) % 3
    r = fs.audit(x, y, groups=groups, jackknife_blocks=6, retrieval="none")
    for g in r.groups:
        rows = groups == g["group"]
        # a subgroup's blocks interleave by position within the subgroup
        block_of = np.full(N, -1)
        block_of[rows] = np.arange(rows.sum()) % 6
        alone = []
        for b in range(6):
            keep = rows & (block_of != b)
            a = fs.alignment(x[keep], y[keep])
            alone.append({**a, "sas_imbalance": a["sas_i2t"] - a["sas_t2i"]})
        for key in JACKKNIFE_METRICS:
            v = np.array([a[key] for a in alone])
            se = math.sqrt(5 / 6 * np.sum((v - v.mean()) ** 2))
            assert g["uncertainty"][key]["se"] == pytest.approx(se, rel=1e-7), (g["group"], key)
            assert g["uncertainty"][key]["ci_low"] < g["alignment"][key] < g["uncertainty"][key]["ci_high"]
    # a memory cap too small for 5 blocks per subgroup leaves subgroups without intervals
    capped = fs.audit(x, y, groups=groups, retrieval="none", max_cell_bytes=1)
    assert all("uncertainty" not in g for g in capped.groups)
    assert capped.groups[0]["alignment"]["sas_i2t"] == pytest.approx(r.groups[0]["alignment"]["sas_i2t"], rel=1e-10)


def test_audit_state_byte_form_round_trips_and_refuses_bad_blobs():
    import struct

    from fastsas.audit import AuditPlan, AuditState

    x, y = fs.synthetic.paired_embeddings(600, 12, seed=21, dtype=np.float64)
    plan = AuditPlan(600, 12, groups=np.arange(600) % 3, jackknife_blocks=5)
    parts = []
    for s, e in ((0, 250), (250, 600)):
        st = plan.new_state()
        st.accumulate(x[s:e], y[s:e], plan.codes(s, e), 1, offset=s)
        parts.append(st.to_bytes())
    merged = AuditState.from_bytes(parts[0]).merge(AuditState.from_bytes(parts[1]))
    assert merged.count == 600
    whole = plan.new_state()
    whole.accumulate(x, y, plan.codes(0, 600), 1)
    for part in ("blocks", "cells"):
        for got, want in zip(merged.states(part), whole.states(part)):
            assert got.count == want.count
    blob = merged.to_bytes()
    assert AuditState.from_bytes(blob).to_bytes() == blob
    with pytest.raises(ValueError, match="truncated"):
        AuditState.from_bytes(blob[:-5])
    with pytest.raises(ValueError, match="truncated: 10 bytes"):
        AuditState.from_bytes(blob[:10])
    with pytest.raises(ValueError, match="bad magic"):
        AuditState.from_bytes(b"XXXXXXX" + blob[7:])
    for version in (1, 2, 4):
        with pytest.raises(ValueError, match=f"version {version} .* reads version 3"):
            AuditState.from_bytes(blob[:7] + bytes([version]) + blob[8:])
    # A header whose dim disagrees with the states it carries, or no dim at all, sealed with
    # a valid checksum (a faulty writer): the content checks still refuse it
    from fastsas._byteform import seal

    def resealed(head):
        return seal(head + blob[len(head):-4])

    with pytest.raises(ValueError, match="corrupt: a blocks state of dim 12 .* state of dim 9"):
        AuditState.from_bytes(resealed(blob[:8] + struct.pack("<q", 9)))
    with pytest.raises(ValueError, match="corrupt: dim -1"):
        AuditState.from_bytes(resealed(blob[:8] + struct.pack("<q", -1)))
    # unsealed, the same damage is caught by the checksum first
    with pytest.raises(ValueError, match="damaged: its CRC-32"):
        AuditState.from_bytes(blob[:8] + struct.pack("<q", 9) + blob[16:])
