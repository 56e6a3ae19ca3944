"""Studies (fastsas.study): a synthetic catalog with planted effects on which every experiment
finds what was planted and not what was not; every cell equal to the one-call functions on
that cell alone; the SAS paper's feature-file layout and its 5-caption retrieval; the cache
(adding one model recomputes only its cells); the report, the CLI, parallel and Dask runs."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

import fastsas as fs
from fastsas.cli import main
from fastsas.audit.intervals import RANGES
from fastsas.definitions import IMBALANCE_SIGN
from fastsas.study import (CellData, CellSettings, CellTable, compute_cell, evaluate_cell, imbalance_signature,
                           load_catalog, read_paper_features, write_synthetic_study)
from fastsas.study import cells as cells_module

torch = pytest.importorskip("torch")

MODELS = 5
PAIRS = 200
DIM = 20
FAST = dict(bootstrap=400, permutations=2000)
ALPHA = 0.05


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = write_synthetic_study(tmp_path_factory.mktemp("study"), models=MODELS, pairs=PAIRS, dim=DIM)
    result = fs.study(root / "study.toml", compare=[("model-00", "model-01"), ("model-00", "model-00")], **FAST)
    return root, result


def _rows(experiment: dict, key: str = "rows") -> dict:
    return {r["metric"]: r for r in experiment[key]}


# -- the planted effects, found; the absent ones, not ---------------------------------------------------
def test_every_cell_ran_and_reference_is_apart(synthetic):
    _, r = synthetic
    assert r.provenance["failed"] == 0 and r.provenance["missing"] == []
    assert len(r.cells) == (MODELS + 1) * 4
    assert r.catalog["references"] == ["reference"]
    grid = r.experiments["alignment_profile"]["grid"]
    assert grid["models"] == [f"model-{i:02d}" for i in range(MODELS)]
    assert grid["references"]["models"] == ["reference"]
    assert {c["kind"] for c in r.cells} == {"paper", "npz", "store", "npy"}


def test_alignment_profile_finds_the_domain_shift_in_sas_and_none_in_the_centroid_distance(synthetic):
    _, r = synthetic
    e1 = r.experiments["alignment_profile"]
    assert (e1["domains"]["a"], e1["domains"]["b"]) == ("natural", "medical")
    rows = _rows(e1)
    sym = rows["sas_sym"]
    assert sym["difference"] > 0.1  # natural above medical: planted
    assert sym["tests"]["models"]["p_adjusted"] < ALPHA
    assert sym["tests"]["pooled"]["p_adjusted"] < ALPHA
    # Two datasets per domain: no dataset-level test can reach 0.05, and the result says so.
    assert sym["tests"]["datasets"]["min_p"] == pytest.approx(1 / 3)
    assert sym["tests"]["datasets"]["p_value"] >= 1 / 3
    absent = rows["centroid_euclidean"]  # depends on the model only, by construction
    assert abs(absent["difference"]) < 0.05
    assert absent["tests"]["models"]["p_adjusted"] >= ALPHA and absent["tests"]["pooled"]["p_adjusted"] >= ALPHA
    # Holm over the metrics: every adjusted p is at least its raw p.
    for row in e1["rows"]:
        for tier in ("pooled", "models", "datasets"):
            t = row["tests"][tier]
            assert t["p_adjusted"] >= t["p_value"] - 1e-15 and t["correction"] == "holm"


def test_imbalance_signature_finds_the_sign_of_each_domain(synthetic):
    _, r = synthetic
    e2 = r.experiments["imbalance_signature"]
    assert e2["sign_convention"] == IMBALANCE_SIGN
    per_domain = {row["domain"]: row for row in e2["per_domain"]}
    assert per_domain["natural"]["mean"] > 0 and per_domain["natural"]["models"]["p_adjusted"] < ALPHA
    assert per_domain["medical"]["mean"] < 0 and per_domain["medical"]["models"]["p_adjusted"] < ALPHA
    signs = {row["dataset"]: row["sign"] for row in e2["per_dataset"]}
    assert signs == {"nat-coco": "positive", "nat-flickr": "positive", "med-roco": "negative", "med-cxr": "negative"}
    # The paper's hypothesis (medical > natural) is the opposite of what was planted: not supported.
    between = e2["between_domains"]
    assert (between["greater"], between["lesser"]) == ("medical", "natural")
    for tier in ("pooled", "models", "datasets"):
        assert between[tier]["p_value"] > 0.5
    # The planted direction is found with models as units.
    table = CellTable(r.cells, [f"model-{i:02d}" for i in range(MODELS)], list(r.catalog["datasets"]),
                      r.catalog["domains"])
    other = imbalance_signature(table, direction="natural>medical", permutations=2000)["between_domains"]
    assert other["models"]["p_value"] < ALPHA and other["pooled"]["p_value"] < ALPHA
    assert other["datasets"]["p_value"] == pytest.approx(1 / 6)  # the best 2 + 2 datasets allow


def test_retrieval_predictivity_finds_the_tracking_metric_and_not_the_other(synthetic):
    _, r = synthetic
    e3 = r.experiments["retrieval_predictivity"]
    rsum = {row["metric"]: row for row in e3["correlations"] if row["target"] == "rsum"}
    tracks = rsum["delta_cos"]
    assert tracks["stratified"]["rho"] > 0.9 and tracks["stratified"]["p_adjusted"] < ALPHA
    assert all(v["rho"] > 0.8 for v in tracks["per_dataset"].values())
    assert tracks["stratified"]["ci_low"] > 0
    for absent in ("coral", "centroid_euclidean"):  # set by the model's scale, which retrieval ignores
        row = rsum[absent]
        assert abs(row["stratified"]["rho"]) < 0.3 and row["stratified"]["p_adjusted"] >= ALPHA
        assert row["stratified"]["ci_low"] < 0 < row["stratified"]["ci_high"]
    # Both retrieval directions follow the same noise: the directional claim is not planted.
    for row in e3["directional"]:
        assert row["stratified"]["p_value"] >= ALPHA and row["pooled"]["p_value"] >= ALPHA


def test_eigenspectrum_concentration_cross_validates_the_separating_q(synthetic):
    _, r = synthetic
    e4 = r.experiments["eigenspectrum_concentration"]
    assert e4["qs"] == pytest.approx([0.1 * i for i in range(1, 11)])
    for direction in ("i2t", "t2i"):
        block = e4[direction]
        for kind in ("cv_models", "cv_datasets"):
            cv = block[kind]
            assert cv["held_out_separation"] > 0 and cv["ci_low"] > 0, (direction, kind)
            assert cv["held_out_auc"] > 0.85
        assert len(block["cv_models"]["folds"]) == MODELS and len(block["cv_datasets"]["folds"]) == 4
        # The modality-only factors sit in the top modes: the smallest q separates best.
        assert block["cv_models"]["chosen_q"] == {"0.1": MODELS}
        assert block["in_sample"]["q"] == pytest.approx(0.1)
    curves = e4["i2t"]["curves"]
    assert curves["natural"]["mean"][0] > curves["medical"]["mean"][0]


def test_paired_comparisons_use_the_same_blocks(synthetic):
    _, r = synthetic
    rows = {(c["model_a"], c["model_b"], c["dataset"]): c for c in r.comparisons}
    same = rows[("model-00", "model-00", "med-roco")]
    assert same["status"] == "ok"
    assert same["metrics"]["sas_sym"]["value"] == 0 and same["metrics"]["sas_sym"]["se"] == 0
    assert same["metrics"]["sas_sym"]["p_value"] == 1.0
    row = rows[("model-00", "model-01", "med-roco")]
    ca, cb = r.cell("model-00", "med-roco"), r.cell("model-01", "med-roco")
    ja, jb = ca["jackknife"]["replicates"]["sas_sym"], cb["jackknife"]["replicates"]["sas_sym"]
    diffs = np.array(ja) - np.array(jb)
    blocks = len(diffs)
    se = math.sqrt((blocks - 1) / blocks * np.sum((diffs - diffs.mean()) ** 2))
    got = row["metrics"]["sas_sym"]
    assert got["value"] == pytest.approx(ca["alignment"]["sas_sym"] - cb["alignment"]["sas_sym"], abs=1e-15)
    assert got["se"] == pytest.approx(se, rel=1e-12)
    from scipy import stats

    assert got["ci_high"] - got["value"] == pytest.approx(stats.t.ppf(0.975, blocks - 1) * se, rel=1e-12)
    # model-00 is less noisy than model-01 (planted), so it aligns better
    assert got["value"] > 0 and got["p_adjusted"] < ALPHA


# -- every cell is the one-call functions on that cell alone ------------------------------------------------
def _raw_cell(root: Path, model: str, dataset: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(images, all texts, text ids, first-caption rows) read without fastsas.study."""
    folder = root / "features" / model
    if (folder / f"{dataset}_test_features.pt").exists():
        records = torch.load(folder / f"{dataset}_test_features.pt", weights_only=True)
        images = torch.cat([r["image"] for r in records]).float().numpy()
        texts = torch.cat([r["text"] for r in records]).float().numpy()
        counts = [len(r["text"]) for r in records]
        ids = np.repeat(np.arange(len(records)), counts)
        return images, texts, ids, np.concatenate([[0], np.cumsum(counts)[:-1]])
    if (folder / f"{dataset}.npz").exists():
        with np.load(folder / f"{dataset}.npz") as z:
            images, texts = z["images"], z["texts"]
    elif (folder / f"{dataset}.images.npy").exists():
        images, texts = np.load(folder / f"{dataset}.images.npy"), np.load(folder / f"{dataset}.texts.npy")
    else:
        store = fs.store.EmbeddingStore.open(folder / dataset)
        images, texts = (np.array(a) for a in store.arrays())
    return images, texts, np.arange(len(texts)), np.arange(len(texts))


def test_every_cell_equals_the_one_call_functions_on_it(synthetic):
    root, r = synthetic
    for cell in r.cells:
        images, texts, ids, first = _raw_cell(root, cell["model"], cell["dataset"])
        pairs = texts[first]
        assert cell["alignment"] == dict(fs.alignment(images, pairs, backend="cpu")), cell["model"]
        ret = fs.retrieval(images, texts, image_ids=np.arange(len(images)), text_ids=ids, backend="cpu")
        assert cell["retrieval"] == {k: v for k, v in ret.items() if not isinstance(v, np.ndarray)}
        assert cell["rsum_i2t"] == pytest.approx(100 * sum(ret[f"i2t_r{k}"] for k in (1, 5, 10)), abs=1e-12)
        assert cell["mmd"] == float(fs.mmd(images, pairs, sigma=10.0, backend="cpu"))
        sweep = fs.Moments(DIM).update(images, pairs).sas_sweep()
        assert cell["sas_sweep"]["sas_i2t"] == sweep["sas_i2t"].tolist()
        # The intervals are the audit's jackknife on the same blocks (the audit centres them on
        # the merge of its blocks, the cell on the one-pass value: equal up to rounding).
        audit = fs.audit(images, pairs, retrieval=False, mismatches=0, backend="cpu")
        for key in ("sas_i2t", "sas_t2i", "sas_imbalance", "cka"):
            mine, theirs = cell["jackknife"]["metrics"][key], audit.uncertainty[key]
            assert mine["value"] == cell["alignment"][key]
            assert mine["se"] == pytest.approx(theirs["se"], rel=1e-9, abs=1e-15), key
            assert mine["clipped"] == theirs["clipped"], key
            for end, bound in zip(("ci_low", "ci_high"), RANGES[key]):
                if theirs[end] == bound:  # clipped to the metric's range at this end, both
                    assert mine[end] == bound, key
                else:
                    assert mine[end] - mine["value"] == pytest.approx(theirs[end] - theirs["value"], rel=1e-9), key


def test_leave_one_out_values_are_the_metrics_without_each_block(synthetic):
    root, r = synthetic
    cell = r.cell("model-02", "nat-coco")
    images, texts, _, first = _raw_cell(root, "model-02", "nat-coco")
    pairs = texts[first]
    blocks = cell["jackknife"]["blocks"]
    assert blocks == 20
    for b in (0, 7, 19):
        keep = np.arange(len(images)) % blocks != b
        direct = fs.alignment(images[keep].astype(np.float64), pairs[keep].astype(np.float64), backend="cpu")
        for key in ("sas_i2t", "cka", "delta_cos", "coral", "svcca", "cka_unbiased", "procrustes"):
            assert cell["jackknife"]["replicates"][key][b] == pytest.approx(direct[key], rel=2e-5, abs=1e-6), key


def test_skip_slow_keeps_the_estimators_values_without_their_intervals():
    from fastsas.moments import ESTIMATOR_KEYS

    x, y = fs.synthetic.paired_embeddings(400, 16, image_only_factors=2, dtype=np.float64)
    covariance_family = fs.Moments(16).update(x, y).alignment(estimators=False)
    everything = fs.alignment(x, y, backend="cpu")
    assert covariance_family == {k: v for k, v in everything.items() if k not in ESTIMATOR_KEYS}
    full = compute_cell(CellData(x, y), CellSettings(jackknife_blocks=5, mmd=False))
    lean = compute_cell(CellData(x, y), CellSettings(jackknife_blocks=5, mmd=False, estimator_intervals=False))
    assert lean["alignment"] == full["alignment"] == everything
    assert set(full["jackknife"]["metrics"]) - set(lean["jackknife"]["metrics"]) == set(ESTIMATOR_KEYS)
    for key, interval in lean["jackknife"]["metrics"].items():
        assert interval == full["jackknife"]["metrics"][key], key


# -- the paper's feature files ---------------------------------------------------------------------------------
def _extract_like_the_paper(path: Path, images: np.ndarray, captions: np.ndarray, dtype) -> None:
    """What the paper's extraction script saves: one record per image, its (1, d) image
    embedding, its (C, d) caption embeddings and the label id, as a list, with torch.save."""
    output = []
    for i in range(len(images)):
        image_embeds = torch.from_numpy(images[i][None, :]).to(dtype)
        output.append({"image": image_embeds[0].view(1, -1).cpu(), "text": torch.from_numpy(captions[i]).to(dtype).cpu(),
                       "label_ids": int(i % 3)})
    torch.save(output, path)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])
def test_the_papers_feature_file_layout_is_read(tmp_path, dtype):
    rng = np.random.default_rng(3)
    data = tmp_path / "data"
    for model in ("clip-large", "biomedclip"):
        (data / model).mkdir(parents=True)
        for dataset, c in (("MSCOCO2014", 5), ("ROCO", 1)):
            images = rng.standard_normal((60, 12)).astype(np.float32)
            captions = (images[:, None, :] + 0.5 * rng.standard_normal((60, c, 12))).astype(np.float32)
            _extract_like_the_paper(data / model / f"{dataset}_test_features.pt", images, captions, dtype)
    cat = load_catalog(data)
    assert cat.models == ("biomedclip", "clip-large") and cat.datasets == ("MSCOCO2014", "ROCO")
    assert cat.domains == {"MSCOCO2014": "natural", "ROCO": "medical"}
    assert {s.kind for s in cat.cells.values()} == {"paper"}
    cell = read_paper_features(data / "clip-large" / "MSCOCO2014_test_features.pt")
    records = torch.load(data / "clip-large" / "MSCOCO2014_test_features.pt", weights_only=True)
    expected_images = torch.cat([r["image"] for r in records]).float().numpy()
    expected_first = torch.cat([r["text"][:1] for r in records]).float().numpy()
    assert cell.images.dtype == np.float32 and np.array_equal(cell.images, expected_images)
    assert np.array_equal(cell.pairs()[1], expected_first)
    assert cell.texts.shape == (300, 12) and cell.text_ids.tolist() == np.repeat(np.arange(60), 5).tolist()
    result = fs.study(data, cache=False, bootstrap=50, permutations=50, skip_slow=True)
    assert result.provenance["computed"] == 4
    assert result.cell("clip-large", "MSCOCO2014")["alignment"] == dict(fs.alignment(expected_images, expected_first))


def test_a_feature_file_that_is_not_the_papers_layout_is_refused_by_name(tmp_path):
    bad = tmp_path / "ROCO_test_features.pt"
    torch.save({"image": torch.zeros(3, 4)}, bad)
    with pytest.raises(ValueError, match="ROCO_test_features.pt holds dict"):
        read_paper_features(bad)
    torch.save([{"image": torch.zeros(1, 4), "text": torch.zeros(2, 5)}], bad)
    with pytest.raises(ValueError, match="record 0 has image dim 4 and text dim 5"):
        read_paper_features(bad)
    torch.save([{"image": torch.zeros(1, 4)}], bad)
    with pytest.raises(ValueError, match="record 0 is not a dict with 'image' and 'text'"):
        read_paper_features(bad)


def _paper_recall(images: np.ndarray, captions: np.ndarray, ks=(1, 5, 10)) -> dict:
    """R@k as the SAS paper defines its retrieval (written here from that definition, in
    torch): image i is a hit at k when any of its C captions is among the k texts most
    similar to it; caption j is a hit when its image (j // C) is among the k images most
    similar to it."""
    n, c = captions.shape[:2]
    im = torch.nn.functional.normalize(torch.from_numpy(images).double(), dim=-1)
    tx = torch.nn.functional.normalize(torch.from_numpy(captions.reshape(n * c, -1)).double(), dim=-1)
    sim = im @ tx.T
    out = {}
    for k in ks:
        top = sim.topk(k, dim=1).indices
        out[f"i2t_r{k}"] = float(np.mean([bool(set(top[i].tolist()) & set(range(i * c, i * c + c))) for i in range(n)]))
        top_t = sim.topk(k, dim=0).indices
        out[f"t2i_r{k}"] = float(np.mean([(j // c) in top_t[:, j].tolist() for j in range(n * c)]))
    return out


def test_five_caption_retrieval_equals_the_papers_definition_without_ties(tmp_path):
    rng = np.random.default_rng(11)
    images = rng.standard_normal((120, 16))
    captions = images[:, None, :] + 1.2 * rng.standard_normal((120, 5, 16))
    path = tmp_path / "MSCOCO2014_test_features.pt"
    _extract_like_the_paper(path, images, captions, torch.float64)
    cell = compute_cell(read_paper_features(path), CellSettings(jackknife_blocks=5, mmd=False))
    expected = _paper_recall(images, captions)
    assert 0.2 < expected["i2t_r1"] < 0.95  # neither trivial nor hopeless
    for key, value in expected.items():
        assert cell["retrieval"][key] == value, key
    assert cell["n_images"] == 120 and cell["n_texts"] == 600


# -- the cache: adding one model computes only its cells -----------------------------------------------------------
def test_adding_one_model_computes_only_its_cells(tmp_path, monkeypatch):
    names = [f"model-{i:02d}" for i in range(4)]
    root = write_synthetic_study(tmp_path, models=4, pairs=80, dim=16, reference=False, model_names=names[:3])
    calls = []
    real = cells_module.compute_cell
    monkeypatch.setattr(cells_module, "compute_cell", lambda data, settings, **kw: calls.append(1) or real(data, settings, **kw))
    options = dict(bootstrap=50, permutations=50, skip_slow=True)
    first = fs.study(root / "study.toml", **options)
    assert first.provenance["missing"] == [["model-03", d] for d in first.catalog["datasets"]]
    assert first.provenance["computed"] == len(calls) == 12
    write_synthetic_study(tmp_path, models=4, pairs=80, dim=16, reference=False, model_names=names[3:])
    calls.clear()
    second = fs.study(root / "study.toml", **options)
    assert len(calls) == 4 and second.provenance["computed"] == 4 and second.provenance["cached"] == 12
    assert sorted(m for m, _ in second.provenance["computed_cells"]) == ["model-03"] * 4
    for c in first.cells:
        again = second.cell(c["model"], c["dataset"])
        assert again["cached"] and again["alignment"] == c["alignment"] and again["retrieval"] == c["retrieval"]
    # Other settings are another key: everything is computed again.
    calls.clear()
    fs.study(root / "study.toml", topq=0.2, **options)
    assert len(calls) == 16
    # Other embeddings under the same name are another fingerprint.
    calls.clear()
    path = root / "features" / "model-01" / "nat-flickr.npz"
    with np.load(path) as z:
        np.savez(path, images=z["images"] * 1.5, texts=z["texts"])
    fs.study(root / "study.toml", **options)
    assert len(calls) == 1


def test_a_corrupt_cache_file_is_recomputed_and_a_bad_cell_is_reported(tmp_path):
    root = write_synthetic_study(tmp_path, models=3, pairs=60, dim=16, reference=False)
    options = dict(bootstrap=50, permutations=50, skip_slow=True)
    first = fs.study(root / "study.toml", **options)
    cache = Path(first.provenance["cache"])
    victim = sorted(cache.glob("*.json"))[0]
    victim.write_text("{not json")
    (root / "features" / "model-02" / "med-cxr.texts.npy").write_bytes(b"garbage")
    again = fs.study(root / "study.toml", **options)
    assert again.provenance["computed"] == 1 and again.provenance["failed"] == 1
    failure = again.provenance["failures"][0]
    assert (failure["model"], failure["dataset"]) == ("model-02", "med-cxr")
    assert "med-cxr.texts.npy" in failure["status"]


# -- catalog ----------------------------------------------------------------------------------------------------------
def test_a_toml_catalog_with_cells_elsewhere_references_and_options(tmp_path):
    rng = np.random.default_rng(0)
    for model in ("a", "b"):
        (tmp_path / "features" / model).mkdir(parents=True)
        for d in ("COCO", "ROCO"):
            x = rng.standard_normal((50, 8)).astype(np.float32)
            np.savez(tmp_path / "features" / model / f"{d}.npz", images=x, texts=x + 0.3)
    other = tmp_path / "elsewhere"
    other.mkdir()
    x = rng.standard_normal((50, 8)).astype(np.float32)
    np.save(other / "x.npy", x)
    np.save(other / "y.npy", x + 0.1)
    (tmp_path / "study.toml").write_text(
        '[study]\ntitle = "t"\nroot = "features"\ntopq = 0.2\njackknife_blocks = 5\nmetrics = "paper"\n'
        'skip_slow = true\ncompare = [["a", "b"]]\n\n'
        '[models]\na = {}\nb = {}\nplip = { reference = true }\n\n'
        '[datasets]\nCOCO = { domain = "natural" }\nROCO = { domain = "medical" }\n\n'
        '[cells.plip.ROCO]\nimages = "elsewhere/x.npy"\ntexts = "elsewhere/y.npy"\n')
    cat = load_catalog(tmp_path / "study.toml")
    assert cat.models == ("a", "b", "plip") and cat.references == ("plip",)
    assert cat.cells[("plip", "ROCO")].kind == "npy" and cat.missing() == [("plip", "COCO")]
    r = fs.study(tmp_path / "study.toml", bootstrap=50, permutations=50)
    assert r.settings["topq"] == 0.2 and r.cell("a", "COCO")["jackknife"]["blocks"] == 5
    assert r.metrics == ["cka", "coral", "rmg_paper", "delta_cos", "sas_sym", "sas_i2t", "sas_t2i", "sas_imbalance"]
    assert [(c["model_a"], c["model_b"]) for c in r.comparisons] == [("a", "b"), ("a", "b")]
    assert r.experiments["alignment_profile"]["grid"]["references"]["models"] == ["plip"]


@pytest.mark.parametrize("text, match", [
    ('[study]\nrooot = "x"\n', r"\[study\]: unknown key\(s\) \['rooot'\]"),
    ('[cells.a.b]\nfile = "x"\n', r"\[cells.a.b\]: unknown key\(s\) \['file'\]"),
    ('[cells.a.b]\nid_column = "x"\n', r"needs path = ..., or images = ... and texts"),
    ("[study\n", "not valid TOML"),
])
def test_bad_catalogs_are_refused_with_the_fix(tmp_path, text, match):
    (tmp_path / "study.toml").write_text(text)
    with pytest.raises(ValueError, match=match):
        load_catalog(tmp_path / "study.toml")


def test_a_directory_with_two_inputs_for_one_dataset_is_refused(tmp_path):
    (tmp_path / "m").mkdir()
    for name in ("ROCO.npz", "ROCO.parquet"):
        (tmp_path / "m" / name).write_bytes(b"")
    with pytest.raises(ValueError, match="dataset 'ROCO' has several inputs"):
        load_catalog(tmp_path)


def test_bad_options_are_refused_before_any_cell_is_read(tmp_path):
    root = write_synthetic_study(tmp_path, models=3, pairs=40, dim=16, reference=False)
    for kwargs, match in ((dict(metrics="sas,cka"), "unknown metric"), (dict(correction="bonferroni"), "correction"),
                          (dict(compare=[("model-00", "nobody")]), "compare must list pairs"),
                          (dict(direction="natural>mars"), "two of the study's domains"),
                          (dict(jackknife_blocks=1), "jackknife_blocks")):
        with pytest.raises(ValueError, match=match):
            fs.study(root / "study.toml", cache=False, **kwargs)


# -- the metric set is a declared list that picks up new alignment keys ----------------------------------------------
def test_a_key_added_to_the_alignment_dict_is_picked_up(tmp_path, monkeypatch):
    root = write_synthetic_study(tmp_path, models=3, pairs=60, dim=16, reference=False)
    real = fs.Moments.alignment

    def with_extra(self, topq=0.1, **options):
        out = real(self, topq, **options)
        out["future_metric"] = out["cka"] / 2  # stands in for a metric merged into fs.alignment later
        return out

    monkeypatch.setattr(fs.Moments, "alignment", with_extra)
    r = fs.study(root / "study.toml", cache=False, bootstrap=50, permutations=50, skip_slow=True)
    assert "future_metric" in r.metrics
    cell = r.cells[0]
    assert cell["jackknife"]["metrics"]["future_metric"]["value"] == cell["alignment"]["cka"] / 2
    assert any(row["metric"] == "future_metric" for row in r.experiments["alignment_profile"]["rows"])
    only = fs.study(root / "study.toml", cache=False, bootstrap=50, permutations=50, metrics="sas_i2t,future_metric")
    assert only.metrics == ["sas_i2t", "future_metric"]


# -- report and CLI -----------------------------------------------------------------------------------------------------
def test_the_study_report(synthetic, tmp_path):
    _, r = synthetic
    paths = r.write(tmp_path, formats="html,json,md")
    data = json.loads(paths["json"].read_text())  # strict JSON: no NaN literal
    assert data["experiments"]["imbalance_signature"]["sign_convention"] == IMBALANCE_SIGN
    assert len(data["cells"]) == len(r.cells)
    page = paths["html"].read_text()
    for fig in ("profile_grid", "imbalance_grids", "rsum_grids", "scatter_sas_i2t", "scatter_delta_cos", "sas_vs_q"):
        assert f'data-figure="{fig}"' in page, fig
    for section in ("summary", "profile", "imbalance", "retrieval", "spectrum", "comparisons", "cells", "provenance"):
        assert f'<section id="{section}">' in page
    import html

    assert html.escape(IMBALANCE_SIGN) in page and "pooled (the SAS paper" in page
    md = paths["md"].read_text()
    assert IMBALANCE_SIGN in md and "## Findings" in md and "Imbalance on medical data" in md


def test_cli_study(synthetic, tmp_path, capsys):
    root, _ = synthetic
    code = main(["study", str(root / "study.toml"), "--out", str(tmp_path / "out"), "--format", "json,md",
                 "--bootstrap", "200", "--permutations", "200", "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "cached" in out and (tmp_path / "out" / "study.json").exists() and (tmp_path / "out" / "study.md").exists()
    assert main(["study", str(root / "study.toml"), "--metrics", "nope", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "unknown metric" in err and len(err.strip().splitlines()) == 1


# -- parallel and Dask ----------------------------------------------------------------------------------------------------
def test_cells_in_parallel_equal_cells_one_after_another(synthetic):
    root, r = synthetic
    parallel = fs.study(root / "study.toml", cache=False, jobs=2, skip_slow=True, bootstrap=50, permutations=50)
    for c in parallel.cells:
        assert c["alignment"] == r.cell(c["model"], c["dataset"])["alignment"]
        assert c["retrieval"] == r.cell(c["model"], c["dataset"])["retrieval"]


def test_cells_on_dask_equal_cells_in_process(synthetic):
    distributed = pytest.importorskip("distributed")
    root, r = synthetic
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        on_dask = fs.study(root / "study.toml", client=client, cache=False, skip_slow=True, bootstrap=50,
                           permutations=50)
    assert on_dask.provenance["cells_ran"] == "dask" and on_dask.provenance["computed"] == len(r.cells)
    for c in on_dask.cells:
        mine = r.cell(c["model"], c["dataset"])
        assert c["retrieval"] == mine["retrieval"]
        for key, value in mine["alignment"].items():
            assert c["alignment"][key] == pytest.approx(value, rel=1e-12, abs=1e-15), key


@pytest.mark.slow
def test_cli_study_on_local_dask_workers(synthetic, tmp_path):
    root, _ = synthetic
    shutil.copytree(root, tmp_path / "s")
    code = main(["study", str(tmp_path / "s" / "study.toml"), "--workers", "2", "--out", str(tmp_path / "out"),
                 "--format", "json", "--bootstrap", "100", "--permutations", "100", "--no-cache", "--quiet"])
    assert code == 0
    data = json.loads((tmp_path / "out" / "study.json").read_text())
    assert data["provenance"]["cells_ran"] == "dask" and data["provenance"]["failed"] == 0


@pytest.mark.slow
def test_a_larger_synthetic_study_finds_the_planted_effects(tmp_path):
    root = write_synthetic_study(tmp_path, models=12, pairs=1500, dim=64)
    r = fs.study(root / "study.toml", skip_slow=True)
    rows = _rows(r.experiments["alignment_profile"])
    assert rows["sas_sym"]["tests"]["models"]["p_adjusted"] < 0.001
    assert rows["centroid_euclidean"]["tests"]["models"]["p_adjusted"] >= ALPHA
    rsum = {row["metric"]: row for row in r.experiments["retrieval_predictivity"]["correlations"]
            if row["target"] == "rsum"}
    assert rsum["delta_cos"]["stratified"]["p_adjusted"] < 0.001 and rsum["coral"]["stratified"]["p_adjusted"] >= ALPHA
    for row in r.experiments["retrieval_predictivity"]["directional"]:
        assert row["stratified"]["p_value"] >= ALPHA
    e2 = {row["domain"]: row for row in r.experiments["imbalance_signature"]["per_domain"]}
    assert e2["natural"]["mean"] > 0 > e2["medical"]["mean"]


def test_cell_data_fingerprint_depends_on_values_ids_and_pairing():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    base = CellData(x, x + 1)
    assert base.fingerprint() == CellData(x.copy(), x + 1).fingerprint()
    assert base.fingerprint() != CellData(x, x + 2).fingerprint()
    with_ids = CellData(x, x + 1, np.arange(4), np.arange(4))
    assert base.fingerprint() != with_ids.fingerprint() and base.items() != with_ids.items()
    assert CellData(x, x + 1).items() == CellData(x * 2, x).items()  # same items, other embeddings


def test_evaluate_cell_reports_an_unreadable_input_instead_of_raising(tmp_path):
    spec = fs.study.CellSpec("m", "d", "npz", (str(tmp_path / "absent.npz"),))
    out = evaluate_cell(spec, CellSettings(mmd=False))
    assert out["status"].startswith("failed: ") and "absent.npz" in out["status"]
