"""The `fastsas` command end to end: audit (demo and archives), compare, gap, help, and
exit code 2 with one line for bad usage or input."""
import json

import numpy as np
import pytest

import fastsas as fs
from fastsas.cli import main

pytest.importorskip("fastsas.store")
pytest.importorskip("fastsas.report")


def _one_line_error(capsys, *fragments):
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastsas: error:") and "\n" not in err, err
    for f in fragments:
        assert f in err, err


@pytest.fixture(scope="module")
def archive_files(tmp_path_factory):
    """A small demo archive as a .npz with its metadata in a Parquet-free form: two .npy
    files plus the metadata kept by the test, and an EmbeddingStore."""
    from fastsas.store import EmbeddingStore

    root = tmp_path_factory.mktemp("archive")
    a = fs.synthetic.demo_archive(3000, 32, seed=1)
    np.save(root / "images.npy", a["images"])
    np.save(root / "texts.npy", a["texts"])
    store = EmbeddingStore.create(root / "store", dim=32, chunk_rows=1000)
    for s in range(0, 3000, 1000):
        store.append(a["images"][s:s + 1000], a["texts"][s:s + 1000],
                     {k: v[s:s + 1000] for k, v in a["metadata"].items()})
    store.close()
    return root, a


def test_every_subcommand_has_help(capsys):
    for cmd in ("audit", "compare", "gap", "align", "demo"):
        assert main([cmd, "--help"]) == 0
        assert "Usage" in capsys.readouterr().out


def test_audit_demo_writes_the_report(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["audit", "--demo", "--demo-n", "3000", "--out", str(out), "--quiet"]) == 0
    assert {p.name for p in out.iterdir()} >= {"report.html", "report.json", "report.md"}
    data = json.loads((out / "report.json").read_text())
    a = fs.synthetic.demo_archive(3000, 128)
    meta = a["metadata"]
    want = fs.audit(a["images"], a["texts"], groups=meta["modality"], periods=meta["year"],
                    image_ids=meta["study_id"], text_ids=meta["study_id"])
    got = data["audit"] if "audit" in data else data
    for k in ("sas_i2t", "sas_t2i", "sas_imbalance", "cka", "svcca", "rmg"):
        assert got["alignment"][k] == pytest.approx(want.alignment[k], rel=1e-12), k
    assert got["uncertainty"]["sas_imbalance"]["se"] == pytest.approx(want.uncertainty["sas_imbalance"]["se"], rel=1e-9)
    planted = {str(meta["study_id"][r]) for r in a["planted"]}
    found = {m["id"] for m in got["mismatches"]}
    assert len(found & planted) >= 0.9 * len(planted) and len(found - planted) <= 0.1 * len(found)
    assert got["mismatch_test"]["flagged"] == len(found) and got["unit"]["name"] == "study_id"
    assert "sas_imbalance" in capsys.readouterr().out


def test_audit_store_with_groups_matches_api(archive_files, tmp_path):
    root, a = archive_files
    out = tmp_path / "r"
    assert main(["audit", str(root / "store"), "--group-by", "modality", "--id-column", "study_id",
                 "--out", str(out), "--format", "json", "--quiet"]) == 0
    data = json.loads((out / "report.json").read_text())
    got = data["audit"] if "audit" in data else data
    meta = a["metadata"]
    want = fs.audit(a["images"], a["texts"], groups=meta["modality"], image_ids=meta["study_id"],
                    text_ids=meta["study_id"])
    assert [g["group"] for g in got["groups"]] == [g["group"] for g in want.groups]
    for g, w in zip(got["groups"], want.groups):
        assert g["alignment"]["sas_i2t"] == pytest.approx(w["alignment"]["sas_i2t"], rel=1e-12)
    assert not (out / "report.html").exists()


def test_audit_bad_usage_exits_2(archive_files, tmp_path, capsys):
    root, _ = archive_files
    assert main(["audit", str(root / "store"), "--group-by", "scanner", "--quiet", "--out", str(tmp_path)]) == 2
    _one_line_error(capsys, "--group-by scanner: no such metadata column", "modality")
    assert main(["audit", str(tmp_path / "missing-store"), "--quiet"]) == 2
    _one_line_error(capsys, "missing-store")
    assert main(["audit", "--demo", "--format", "pdf", "--quiet"]) == 2
    _one_line_error(capsys, "--format pdf is not one of html, json, md")
    assert main(["audit", "--quiet"]) == 2
    _one_line_error(capsys, "give an archive to audit, or --demo")
    assert main(["audit", "--demo", "--topq", "0", "--demo-n", "500", "--quiet", "--out", str(tmp_path)]) == 2
    _one_line_error(capsys, "topq must be in (0, 1]")
    assert main(["audit", "--demo", "--no-such-option"]) == 2
    _one_line_error(capsys, "--no-such-option")
    assert main(["audit", "--demo", "--backend", "tpu", "--quiet", "--out", str(tmp_path)]) == 2
    _one_line_error(capsys, "--backend: backend must be one of 'auto', 'cpu', 'cuda', got 'tpu'")
    assert main(["audit", "--demo", "--scheduler", "tcp://127.0.0.1:1", "--workers", "2", "--quiet",
                 "--out", str(tmp_path)]) == 2
    _one_line_error(capsys, "give --scheduler ADDRESS or --workers N, not both")


def test_audit_backend_cuda_without_a_gpu_exits_2(tmp_path, capsys):
    from fastsas import gpu

    if gpu.available():
        pytest.skip("a GPU is usable here: --backend cuda is valid")
    assert main(["audit", "--demo", "--demo-n", "500", "--backend", "cuda", "--quiet", "--out", str(tmp_path)]) == 2
    _one_line_error(capsys, "--backend: backend='cuda' needs a CUDA GPU", 'pip install "fastsas[gpu]"')
    assert not (tmp_path / "report.json").exists()


def test_audit_records_the_backend(tmp_path):
    assert main(["audit", "--demo", "--demo-n", "1500", "--backend", "cpu", "--format", "json", "--quiet",
                 "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "report.json").read_text())
    got = data["audit"] if "audit" in data else data
    assert got["backend"] == {"moments": "cpu", "retrieval": "cpu"}


def test_audit_corrupt_store_exits_2(archive_files, tmp_path, capsys):
    import shutil

    root, _ = archive_files
    broken = tmp_path / "broken"
    shutil.copytree(root / "store", broken)
    victims = sorted(p for p in broken.rglob("*") if p.is_file() and "images" in str(p.relative_to(broken)))
    victims[-1].write_bytes(b"\x00" * 7)
    assert main(["audit", str(broken), "--quiet", "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "broken")


def test_compare_two_archives(archive_files, tmp_path, capsys):
    root, a = archive_files
    out = tmp_path / "cmp"
    assert main(["compare", str(root / "store"), str(root / "store"), "--out", str(out), "--quiet"]) == 0
    data = json.loads((out / "compare.json").read_text())
    assert {p.name for p in out.iterdir()} == {"compare.html", "compare.json", "compare.md"}
    assert len(data["archives"]) == 2 and data["findings"]
    first, second = (d["metrics"] for d in data["archives"])
    assert first["sas_i2t"] == second["sas_i2t"]
    want = fs.audit(a["images"], a["texts"], retrieval="whole", chance_repeats=0, mismatch_fdr=None)
    assert first["sas_i2t"]["ci_low"] == pytest.approx(want.uncertainty["sas_i2t"]["ci_low"], rel=1e-9)
    # no recorded ids: not known to hold the same pairs, so no paired differences
    assert not data["same_pairs"] and data["differences"] == []
    printed = capsys.readouterr().out
    assert "fastsas compare" in printed
    assert max(len(line) for line in printed.splitlines()) <= 80  # readable in an 80-column terminal


def test_compare_models_of_the_same_pairs_pairs_the_differences(tmp_path, capsys):
    from fastsas.store import EmbeddingStore

    a = fs.synthetic.demo_archive(3000, 32)
    noisy = dict(a, texts=a["texts"] + 0.3 * np.random.default_rng(1).standard_normal(a["texts"].shape).astype(np.float32))
    for name, arch in (("m1", a), ("m2", noisy), ("m3", a)):
        EmbeddingStore.build(tmp_path / name, arch, chunk_rows=1024, id_column="study_id").close()
    out = tmp_path / "cmp"
    assert main(["compare", *(str(tmp_path / m) for m in ("m1", "m2", "m3")), "--out", str(out), "--quiet"]) == 0
    data = json.loads((out / "compare.json").read_text())
    assert data["same_pairs"] and data["paired"]["done"] and data["paired"]["unit"] == "study_id"
    worse, same = data["differences"]
    d = worse["metrics"]["cka"]
    assert d["difference"] < 0 and d["ci_high"] < 0 and d["p_holm"] < 0.05
    unpaired = data["archives"][1]["metrics"]["cka"]["ci_high"] - data["archives"][1]["metrics"]["cka"]["ci_low"]
    assert d["ci_high"] - d["ci_low"] < unpaired  # paired over the same blocks: narrower
    assert same["metrics"]["cka"]["difference"] == 0.0
    page, md = (out / "compare.html").read_text(), (out / "compare.md").read_text()
    for line in data["findings"]:
        assert line in md
    assert "Paired differences" in page and "Paired differences" in md
    printed = capsys.readouterr().out
    assert max(len(line) for line in printed.splitlines()) <= 80


def test_gap_sweep_with_labels(archive_files, tmp_path, capsys):
    root, _ = archive_files
    out = tmp_path / "gap"
    assert main(["gap", str(root / "store"), "--lams", "0,0.5,1", "--labels", "modality", "--out", str(out),
                 "--quiet"]) == 0
    data = json.loads((out / "gap.json").read_text())
    assert len(data["points"]) == 3 and data["best_lam"] in (0.0, 0.5, 1.0)
    assert data["verdict"] and data["lam0_rows"] and "declared" in data["probe_gain"]
    printed = capsys.readouterr().out
    assert data["verdict"] in printed.replace("\n", " ") or data["verdict"][:40] in printed
    assert "unit-normalised rows" in printed and "input*" in printed
    assert main(["gap", str(root / "store"), "--lams", "0,x", "--quiet"]) == 2
    _one_line_error(capsys, "--lams must be comma-separated numbers")


def test_archive_columns_enter_the_report_only_on_request(archive_files, tmp_path):
    root, a = archive_files
    plain, shown = tmp_path / "plain", tmp_path / "shown"
    args = [str(root / "store"), "--id-column", "study_id", "--quiet", "--format", "html,json"]
    assert main(["audit", *args, "--out", str(plain)]) == 0
    assert main(["audit", *args, "--out", str(shown), "--include-column", "site"]) == 0
    first = json.loads((shown / "report.json").read_text())["mismatches"][0]
    assert first["columns"]["site"] == a["metadata"]["site"][first["row"]]
    assert "Included on request: site" in (shown / "report.html").read_text()
    assert "columns" not in json.loads((plain / "report.json").read_text())["mismatches"][0]
    assert "<th>site</th>" not in (plain / "report.html").read_text()
    assert main(["audit", *args, "--out", str(tmp_path / "x"), "--include-column", "notes"]) == 2


def test_progress_keeps_counts_and_eta_whole_in_80_columns(monkeypatch):
    import io

    from rich.console import Console

    import fastsas.cli as cli

    screen = io.StringIO()
    monkeypatch.setattr(cli, "err_console", Console(file=screen, width=80, force_terminal=False))
    steps = cli.Steps()
    rows = [range(s, min(2_000_000, s + 500_000)) for s in range(0, 2_000_000, 500_000)]
    assert list(steps(iter(rows), "retrieval, whole gallery (query rows) of a long-named archive", 2_000_000)) == rows
    lines = [line for line in screen.getvalue().splitlines() if line.strip()]
    assert lines and all(len(line) <= 80 for line in lines)
    assert "2000000/2000000" in lines[-1] and "ETA" in lines[-1] and "…" in lines[-1]  # the description gave way
