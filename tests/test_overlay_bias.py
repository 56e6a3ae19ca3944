"""Overlaid-text bias end to end with a tiny local CLIP: stores written with and without
text rendered onto the images (`fastsas embed --overlay`), fs.overlay_bias's shift, flips and
pull against NumPy references, zero shift for an empty overlay, and the DICOM
BurnedInAnnotation keyword as a group."""
import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import fastsas as fs
from fastsas.cli import main
from fastsas.store import open_source

sys.path.insert(0, str(Path(__file__).parent))
import _tiny_models as tm  # noqa: E402

torch = pytest.importorskip("torch", reason="the embed extra (pip install '.[test]') provides torch")
pytest.importorskip("transformers")

from fastsas.embedding.overlay import Overlay, parse_overlays, render_overlays  # noqa: E402

N = 30


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return tm.save_tiny_clip(tmp_path_factory.mktemp("models") / "clip")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("overlay-archive")
    ids = []
    for i in range(N):
        ids.append(f"c{i % 3}_{i:02d}")
        tm.save_image(root / "images" / f"{ids[-1]}.png", 7 * (i % 3) + i)
    with open(root / "reports.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        w.writerows(zip(ids, tm.reports(N, seed=2)))
    return root


def _embed(clip, archive, out, overlay=None):
    fs.embed(clip, archive / "images", archive / "reports.csv", out, workers=0, device="cpu", overlay=overlay)
    return open_source(out)


def _labels(store):
    return np.array([Path(str(p)).name.split("_")[0] for p in store.column("image")])


def test_render_draws_text_and_empty_overlay_changes_nothing():
    frame = tm.image_array(3, size=(64, 80))
    assert render_overlays(frame, parse_overlays("")) is frame
    drawn = render_overlays(frame, parse_overlays("L@0.1,0.1,0.4"))
    assert drawn.shape == frame.shape and np.any(drawn != frame)
    assert np.array_equal(drawn[50:, 60:], frame[50:, 60:])  # far from the text: untouched
    assert parse_overlays(["A", {"text": "B", "x": 0.5}, Overlay("C", size=0.3)])[1].x == 0.5
    with pytest.raises(ValueError, match="x,y,size"):
        parse_overlays("A@oops")
    with pytest.raises(ValueError, match="size"):
        Overlay("A", size=0.0)


def test_overlay_bias_end_to_end(clip, archive, tmp_path):
    clean = _embed(clip, archive, tmp_path / "clean")
    empty = _embed(clip, archive, tmp_path / "empty", overlay="")
    text = "PORTABLE"
    burned = _embed(clip, archive, tmp_path / "burned", overlay=[f"{text}@0.0,0.3,0.35", "L@0.8,0.0,0.3"])
    labels = _labels(clean)
    assert np.array_equal(labels, _labels(burned))

    assert np.array_equal(np.asarray(clean.arrays()[0]), np.asarray(empty.arrays()[0]))
    none = fs.overlay_bias(tmp_path / "clean", tmp_path / "empty", labels, ks=(1, 3), cv=3)
    assert none["shift"]["mean"] == 0.0 and none["shift"]["max"] == 0.0
    assert none["knn_flips"] == {"1": 0.0, "3": 0.0} and none["probe_flips"] == 0.0
    assert all(v == 0.0 for v in none["separability"]["change"].values())

    r = fs.overlay_bias(tmp_path / "clean", tmp_path / "burned", labels, ks=(1, 3), cv=3)
    x = np.asarray(clean.arrays()[0], dtype=np.float64)
    z = np.asarray(burned.arrays()[0], dtype=np.float64)
    ux, uz = (a / np.linalg.norm(a, axis=1, keepdims=True) for a in (x, z))
    shift = 1.0 - (ux * uz).sum(axis=1)
    assert r["shift"]["mean"] == pytest.approx(shift.mean(), abs=1e-9) and r["shift"]["mean"] > 0
    means = np.stack([x[labels == c].mean(axis=0) for c in ("c0", "c1", "c2")])
    um = means / np.linalg.norm(means, axis=1, keepdims=True)
    between = np.mean([1 - um[a] @ um[b] for a, b in ((0, 1), (0, 2), (1, 2))])
    assert r["shift"]["share_of_between_class"] == pytest.approx(shift.mean() / between, rel=1e-9)
    # k-NN flips: the leave-one-out 1-NN class of every row, clean vs overlaid (brute force)
    def nn1(u):
        s = u @ u.T
        np.fill_diagonal(s, -np.inf)
        return labels[np.argmax(s, axis=1)]
    assert r["knn_flips"]["1"] == pytest.approx(np.mean(nn1(ux) != nn1(uz)), abs=1e-12)
    assert 0.0 <= r["probe_flips"] <= 1.0
    # the pull toward the overlay text, with the text embedded by the same model's text tower
    from fastsas.embedding import load_model
    t = load_model(clip, device="cpu").encode_texts([f"{text} L"])[0].astype(np.float64)
    t /= np.linalg.norm(t)
    assert r["overlays"][0]["text"] == text
    assert r["pull"]["change"] == pytest.approx(np.mean(uz @ t - ux @ t), abs=1e-6)
    assert r["separability"]["change"]["fisher_ratio"] == pytest.approx(
        r["separability"]["overlaid"]["fisher_ratio"] - r["separability"]["clean"]["fisher_ratio"])
    # resuming a store with another overlay is refused
    with pytest.raises(ValueError, match="overlay"):
        _embed(clip, archive, tmp_path / "burned", overlay="OTHER")


def test_cli_embed_overlay_and_separability(clip, archive, tmp_path, capsys):
    store = tmp_path / "cli-burned"
    assert main(["embed", "--model", str(clip), "--images", str(archive / "images"), "--texts",
                 str(archive / "reports.csv"), "--out", str(store), "--workers", "0", "--device", "cpu", "--quiet",
                 "--overlay", "R@0.7,0.7,0.25", "--overlay", "AP"]) == 0
    capsys.readouterr()
    from fastsas.embedding.pipeline import overlay_record
    overlays, vector = overlay_record(open_source(store))
    assert [o["text"] for o in overlays] == ["R", "AP"] and vector.shape == (open_source(store).dim,)


def test_burned_in_annotation_is_a_group(clip, tmp_path):
    pydicom = pytest.importorskip("pydicom")
    images = tmp_path / "dicom"
    ids = []
    for i in range(24):
        ids.append(f"S{i:02d}")
        path = tm.write_dicom(images / f"{ids[-1]}.dcm", tm.dicom_pixels(i), center=2048.0, width=2000.0)
        ds = pydicom.dcmread(path)
        ds.BurnedInAnnotation = "YES" if i % 2 else "NO"
        ds.save_as(path, enforce_file_format=True)
    with open(tmp_path / "r.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        w.writerows(zip(ids, tm.reports(24, seed=5)))
    store_path = tmp_path / "store"
    fs.embed(clip, images, tmp_path / "r.csv", store_path, workers=0, device="cpu",
             dicom_tags=("Modality", "BurnedInAnnotation"))
    store = open_source(store_path)
    burned = store.column("BurnedInAnnotation")
    assert sorted(set(burned.tolist())) == ["NO", "YES"]
    labels = np.array([int(str(s)[1:]) % 3 for s in store.column("id")])
    r = fs.separability(np.asarray(store.arrays()[0]), labels, ks=(1,), probe=False, groups=burned, blocks=2)
    assert set(r.groups) == {"NO", "YES"}
    x = np.asarray(store.arrays()[0], dtype=np.float64)
    alone = fs.separability(x[burned == "YES"], labels[burned == "YES"], ks=(1,), probe=False, blocks=2)
    assert r.groups["YES"]["fisher_ratio"] == pytest.approx(alone["fisher_ratio"], rel=1e-9)
    # the command line takes the same column as --group-by
    out = tmp_path / "sep"
    assert main(["separability", str(store_path), "--labels", "Modality", "--ks", "1", "--no-probe", "--out",
                 str(out), "--quiet"]) == 2  # one modality: a single class is refused
    json_path = out / "separability.json"
    assert not json_path.exists()
