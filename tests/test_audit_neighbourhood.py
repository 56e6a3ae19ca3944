"""The neighbourhood family and the unbiased CKA inside audits: whole archive, subgroups,
jackknife intervals, the report and the CLI option."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import fastsas as fs
from fastsas import reference_neighbourhood as refnb


def _data(n=1200, d=24, seed=3):
    x, y = fs.synthetic.paired_embeddings(n, d, image_only_factors=2, seed=seed)
    groups = np.array(["CT", "MR", "US"], dtype=object)[np.random.default_rng(seed).integers(0, 3, n)]
    return x, y, groups


def test_audit_neighbourhood_equals_the_reference_on_the_archive_and_each_subgroup():
    x, y, groups = _data()
    groups[:4] = "tiny"  # 4 pairs: too few for topk = 5
    r = fs.audit(x, y, groups=groups, neighbourhood=5, backend="cpu", chance_repeats=0)
    topk = 5

    def expected(rows):
        ia, ib = refnb.knn(x[rows], topk), refnb.knn(y[rows], topk)
        return {"mutual_knn": refnb.mutual_knn(ia, ib), "cycle_knn": refnb.cycle_knn(ia, ib),
                "lcs_knn": refnb.lcs_knn(ia, ib), "edit_distance_knn": refnb.edit_distance_knn(ia, ib),
                "cknna": refnb.cknna(x[rows], y[rows], topk)[0]}

    # Neighbour lists are exact (the same lists as the float64 reference on these rows); CKNNA
    # sums float32-stored similarities, so it agrees to float32 rounding.
    tolerance = {"cknna": dict(rel=1e-6, abs=1e-9)}
    whole = r.neighbourhood
    assert whole["topk"] == topk and whole["status"] == "ok"
    for key, value in expected(np.arange(len(x))).items():
        assert whole[key] == pytest.approx(value, **tolerance.get(key, dict(rel=1e-12, abs=1e-15))), key
    for g in r.groups:
        rows = np.flatnonzero(groups == g["group"])
        nb = g["neighbourhood"]
        if g["group"] == "tiny":
            assert nb["status"].startswith("too_small: 4 pairs") and "mutual_knn" not in nb
            continue
        for key, value in expected(rows).items():
            assert nb[key] == pytest.approx(value, **tolerance.get(key, dict(rel=1e-12, abs=1e-15))), (g["group"], key)
    assert json.loads(json.dumps(r.to_dict(), default=str))["neighbourhood"]["topk"] == topk


@pytest.mark.parametrize("bad, error", [(0, ValueError), (1200, ValueError), (2.5, ValueError), ("5", ValueError)])
def test_audit_refuses_a_bad_topk_before_reading_anything(bad, error):
    x, y, _ = _data()

    class Untouchable(fs.io.ArrayPairSource):
        def iter_chunks(self, rows):
            raise AssertionError("the archive was read before the options were checked")

    with pytest.raises(error, match="neighbourhood"):
        fs.audit(Untouchable(x, y), neighbourhood=bad)


def test_audit_without_neighbourhood_has_none():
    x, y, _ = _data(400)
    r = fs.audit(x, y, backend="cpu", chance_repeats=0)
    assert r.neighbourhood is None


def test_jackknife_interval_of_the_unbiased_cka_is_the_delete_a_block_one():
    x, y, groups = _data(1500, 12, seed=5)
    blocks = 10
    r = fs.audit(x, y, groups=groups, jackknife_blocks=blocks, backend="cpu", chance_repeats=0,
                 mismatch_fdr=None)
    rows = np.arange(len(x))
    values = np.array([refnb.cka_unbiased(x[rows % blocks != b], y[rows % blocks != b]) for b in range(blocks)])
    se = math.sqrt((blocks - 1) / blocks * np.sum((values - values.mean()) ** 2))
    u = r.uncertainty["cka_unbiased"]
    # float32 rows, float64 moments: agreement to float32 rounding of the data's sums
    assert u["value"] == pytest.approx(refnb.cka_unbiased(x, y), rel=1e-6)
    assert u["se"] == pytest.approx(se, rel=1e-3)
    assert u["ci_low"] < u["value"] < u["ci_high"]
    # each subgroup has the estimator in its alignment dict
    for g in r.groups:
        sub = np.flatnonzero(groups == g["group"])
        assert g["alignment"]["cka_unbiased"] == pytest.approx(refnb.cka_unbiased(x[sub], y[sub]), rel=1e-6)


def test_cli_audit_neighbourhood_reaches_every_report_file(tmp_path):
    from typer.testing import CliRunner

    from fastsas.cli import app

    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["audit", "--demo", "--demo-n", "1500", "--neighbourhood", "5", "--quiet",
                                      "--chance-repeats", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    d = json.loads((out / "report.json").read_text())
    assert d["neighbourhood"]["topk"] == 5
    html = (out / "report.html").read_text()
    assert 'id="neighbourhood"' in html and "mutual_knn" in html
    md = (out / "report.md").read_text()
    assert "## Neighbourhoods" in md
    whole = f"{d['neighbourhood']['mutual_knn']:.4f}"
    assert whole in md and whole in html

    from fastsas.cli import main

    assert main(["audit", "--demo", "--demo-n", "1500", "--neighbourhood", "5", "--workers", "2", "--quiet",
                 "--out", str(tmp_path / "r2")]) == 2
    assert main(["audit", "--demo", "--demo-n", "1500", "--neighbourhood", "0", "--quiet",
                 "--out", str(tmp_path / "r3")]) == 2
