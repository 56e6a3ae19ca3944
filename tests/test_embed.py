"""fastsas.embed with tiny local transformers models (CLIP, SigLIP): embeddings equal the
models' own get_image_features / get_text_features, the DICOM pipeline (rescale, window,
VOI LUT, MONOCHROME1, frames), texts, ids and metadata, the skip log, resumption after an
interruption and after a crash, refusal of remote code, and `fastsas embed` then
`fastsas audit` on the command line."""
import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fastsas as fs
from fastsas.cli import main
from fastsas.store import open_source

sys.path.insert(0, str(Path(__file__).parent))
import _tiny_models as tm  # noqa: E402

torch = pytest.importorskip("torch", reason="the embed extra (pip install '.[test]') provides torch")
transformers = pytest.importorskip("transformers")
from PIL import Image  # noqa: E402

from fastsas.embedding import load_model, read_dicom, read_image  # noqa: E402
from fastsas.embedding.dicom import window  # noqa: E402

TOL = 1e-5


# -- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"clip": tm.save_tiny_clip(root / "clip"), "siglip": tm.save_tiny_siglip(root / "siglip")}


@pytest.fixture(scope="module")
def clip_encoder(models):
    return load_model(models["clip"], device="cpu")


def _write_reports_csv(path: Path, ids, texts, id_name="study_id", text_name="report") -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([id_name, text_name])
        w.writerows(zip(ids, texts))
    return path


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """Ten studies: PNG, JPEG and TIFF images, one to two per study folder, and reports."""
    root = tmp_path_factory.mktemp("archive")
    images = root / "images"
    files = {}
    for i in range(10):
        study = f"st{i:02d}"
        files[f"{study}/a.png"] = tm.save_image(images / study / "a.png", i)
        if i % 3 == 0:
            tm.save_image(images / study / "b.jpg", 100 + i)
            files[f"{study}/b.jpg"] = np.asarray(Image.open(images / study / "b.jpg").convert("RGB"))
        if i % 4 == 1:
            files[f"{study}/c.tiff"] = tm.save_image(images / study / "c.tiff", 200 + i)
    ids = [f"st{i:02d}" for i in range(10)]
    texts = tm.reports(10, seed=3)
    return {"root": root, "images": images, "files": files, "ids": ids, "texts": dict(zip(ids, texts)),
            "csv": _write_reports_csv(root / "reports.csv", ids, texts)}


def _unit(x) -> np.ndarray:
    x = x.detach().float().numpy()
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _features(out):
    return out if isinstance(out, torch.Tensor) else out.pooler_output  # transformers 4.x / 5.x


def _reference_images(model_dir, cls, rgb_arrays):
    """The model's own get_image_features on its own processor's output, one image at a time."""
    processor = transformers.AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    model = cls.from_pretrained(model_dir, local_files_only=True).eval()
    with torch.no_grad():
        return np.concatenate([
            _unit(_features(model.get_image_features(
                pixel_values=processor(images=Image.fromarray(a), return_tensors="pt")["pixel_values"])))
            for a in rgb_arrays])


def _reference_texts(model_dir, cls, texts, **tokenizer_kwargs):
    processor = transformers.AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    model = cls.from_pretrained(model_dir, local_files_only=True).eval()
    with torch.no_grad():
        rows = []
        for t in texts:
            tokens = processor.tokenizer([t], truncation=True, max_length=16, return_tensors="pt", **tokenizer_kwargs)
            if cls is transformers.SiglipModel:  # trained without an attention mask
                tokens = {"input_ids": tokens["input_ids"]}
            rows.append(_unit(_features(model.get_text_features(**tokens))))
    return np.concatenate(rows)


def _run(model, images, texts, out, **kw):
    kw.setdefault("workers", 0)
    kw.setdefault("device", "cpu")
    return fs.embed(model, images, texts, out, **kw)


# -- equality with the models' own features ------------------------------------------------------------
@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_embeddings_equal_the_models_own_features(models, archive, tmp_path, name):
    cls = {"clip": transformers.CLIPModel, "siglip": transformers.SiglipModel}[name]
    result = _run(models[name], archive["images"], archive["csv"], tmp_path / "store", image_id="parent",
                  batch_size=4)
    assert result.family == name and not result.skipped and result.rows == len(archive["files"])
    source = open_source(tmp_path / "store")
    meta = source.metadata()
    assert source.columns == ["study_id", "image", "frame"]  # no DICOM in this archive: no tag columns
    assert list(meta["image"]) == sorted(archive["files"])  # rows in sorted path order
    assert list(meta["study_id"]) == [k.split("/")[0] for k in meta["image"]]
    assert (meta["frame"] == 0).all()
    x, y = (np.asarray(a) for a in source.arrays())
    assert x.dtype == np.float32 and y.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1, atol=1e-6)
    want_x = _reference_images(models[name], cls, [archive["files"][k] for k in meta["image"]])
    padding = {"padding": "max_length"} if name == "siglip" else {"padding": True}
    want_y = _reference_texts(models[name], cls, [archive["texts"][i] for i in meta["study_id"]], **padding)
    np.testing.assert_allclose(x, want_x, atol=TOL)
    np.testing.assert_allclose(y, want_y, atol=TOL)
    # several images of a study share one text embedding, computed once per study
    assert result.texts_embedded == 10
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["model"] == f"{name}:{name}"


def test_siglip_texts_are_padded_as_in_training(models):
    """The registry's SigLIP preprocessing matters: unpadded texts embed differently."""
    enc = load_model(models["siglip"], device="cpu")
    text = "the heart size is normal"
    got = enc.encode_texts([text])
    padded = _reference_texts(models["siglip"], transformers.SiglipModel, [text], padding="max_length")
    unpadded = _reference_texts(models["siglip"], transformers.SiglipModel, [text])
    np.testing.assert_allclose(got, padded, atol=TOL)
    assert np.abs(got - unpadded).max() > 1e-3


def test_workers_give_the_same_bits(clip_encoder, archive, tmp_path):
    a = _run(clip_encoder, archive["images"], archive["csv"], tmp_path / "a", image_id="parent", workers=0)
    b = _run(clip_encoder, archive["images"], archive["csv"], tmp_path / "b", image_id="parent", workers=2)
    assert a.rows == b.rows
    for xa, xb in zip(open_source(tmp_path / "a").arrays(), open_source(tmp_path / "b").arrays()):
        assert np.array_equal(np.asarray(xa), np.asarray(xb))


# -- DICOM -------------------------------------------------------------------------------------------
def _expected_display(values: np.ndarray, center=None, width=None, mono1=False) -> np.ndarray:
    """PS3.3 C.11.2.1.2 linear window written out independently, then MONOCHROME1 and 8 bits."""
    v = values.astype(np.float64)
    if center is None:
        y = (v - v.min()) / (v.max() - v.min())
    else:
        y = np.where(v <= center - 0.5 - (width - 1) / 2, 0.0,
                     np.where(v > center - 0.5 + (width - 1) / 2, 1.0, (v - (center - 0.5)) / (width - 1) + 0.5))
    if mono1:
        y = 1.0 - y
    g = np.rint(y * 255).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


def test_dicom_rescale_window_monochrome1_frames(tmp_path):
    px = tm.dicom_pixels(1)
    f = tm.write_dicom(tmp_path / "ct.dcm", px, slope=2.0, intercept=-1024, center=1500.0, width=2001.0,
                       modality="CT", body_part="HEAD")
    d = read_dicom(f)
    assert len(d.frames) == 1 and d.frames[0].dtype == np.uint8 and d.frames[0].shape == px.shape + (3,)
    assert np.array_equal(d.frames[0], _expected_display(px * 2.0 - 1024, 1500.0, 2001.0))
    assert d.tags == {"Modality": "CT", "BodyPartExamined": "HEAD", "StudyDate": "20210304", "Manufacturer": "ACME"}

    m1 = tm.write_dicom(tmp_path / "m1.dcm", px, photometric="MONOCHROME1", center=2048.0, width=1024.0)
    m2 = tm.write_dicom(tmp_path / "m2.dcm", px, photometric="MONOCHROME2", center=2048.0, width=1024.0)
    inv, plain = read_dicom(m1).frames[0], read_dicom(m2).frames[0]
    assert np.array_equal(inv, _expected_display(px, 2048.0, 1024.0, mono1=True))
    assert np.array_equal(inv.astype(int), 255 - plain.astype(int))  # inverted, pixel for pixel

    nowin = read_dicom(tm.write_dicom(tmp_path / "nowin.dcm", px)).frames[0]
    assert np.array_equal(nowin, _expected_display(px))  # no window: the frame's own min..max

    stack = tm.dicom_pixels(2, frames=3)
    mf = tm.write_dicom(tmp_path / "mf.dcm", stack, center=2000.0, width=3000.0)
    assert [np.array_equal(a, _expected_display(s, 2000.0, 3000.0)) for a, s in
            zip(read_dicom(mf, frames="all").frames, stack)] == [True, True, True]
    first = read_dicom(mf, frames="first").frames
    assert len(first) == 1 and np.array_equal(first[0], _expected_display(stack[0], 2000.0, 3000.0))


def test_dicom_voi_functions_and_lut(tmp_path):
    px = tm.dicom_pixels(5)
    sig = read_dicom(tm.write_dicom(tmp_path / "s.dcm", px, center=2048.0, width=800.0, voi_function="SIGMOID"))
    want = np.rint(255 / (1 + np.exp(-4 * (px - 2048.0) / 800.0))).astype(np.uint8)
    assert np.array_equal(sig.frames[0][:, :, 0], want)
    exact = window(np.array([999.0, 1000.0, 1100.0, 1200.0]), 1100.0, 200.0, "LINEAR_EXACT")
    np.testing.assert_allclose(exact, [0.0, 0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="VOI LUT Function"):
        window(px, 1.0, 2.0, "CUBIC")
    with pytest.raises(ValueError, match="Window Width must be > 0 for SIGMOID"):
        window(px, 1.0, 0.0, "SIGMOID")

    import pydicom
    from pydicom.dataset import Dataset

    path = tm.write_dicom(tmp_path / "lut.dcm", px)
    ds = pydicom.dcmread(path)
    item = Dataset()
    lut = (np.sqrt(np.arange(4096) / 4095) * 4000).astype(np.uint16)  # a gamma-like VOI LUT of 12-bit output
    item.add_new(0x00283002, "US", [4096, 0, 16])  # LUT Descriptor (ambiguous VR: US here)
    item.add_new(0x00283006, "US", lut.tolist())  # LUT Data
    ds.VOILUTSequence = [item]
    ds.save_as(path)
    got = read_dicom(path).frames[0][:, :, 0]
    want = np.rint((lut[px] - lut.min()) / (lut.max() - lut.min()) * 255).astype(np.uint8)
    assert np.array_equal(got, want)  # scaled by the LUT's own range, not the descriptor's 16 bits


def test_dicom_lut_data_as_ow_empty_elements_and_colour(tmp_path):
    import pydicom
    from pydicom.dataset import Dataset

    px = tm.dicom_pixels(8)
    # LUT Data stored with VR OW (bytes), as many writers do: same display as with US.
    path = tm.write_dicom(tmp_path / "ow.dcm", px)
    ds = pydicom.dcmread(path)
    item = Dataset()
    lut = (np.arange(1024) * 50).astype(np.uint16)  # first mapped value 1000, saturates above 2023
    item.add_new(0x00283002, "US", [1024, 1000, 16])
    item.add_new(0x00283006, "OW", lut.tobytes())
    ds.VOILUTSequence = [item]
    ds.save_as(path)
    got = read_dicom(path).frames[0][:, :, 0]
    want = np.rint(lut[np.clip(px.astype(int) - 1000, 0, 1023)] / lut.max() * 255).astype(np.uint8)
    assert np.array_equal(got, want)

    # Empty Window Center/Width and Rescale Slope/Intercept count as absent: min..max display.
    path = tm.write_dicom(tmp_path / "empty.dcm", px)
    ds = pydicom.dcmread(path)
    for tag in (0x00281050, 0x00281051, 0x00281052, 0x00281053):
        ds.add_new(tag, "DS", None)
    ds.save_as(path)
    assert np.array_equal(read_dicom(path).frames[0], _expected_display(px))

    # PALETTE COLOR through its LUTs (16-bit entries to 8 bits); YBR_FULL converted to RGB.
    path = tm.write_dicom(tmp_path / "pal.dcm", px)
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = "PALETTE COLOR", 8, 8, 7
    idx = (px >> 4).astype(np.uint8)
    ds.PixelData = idx.tobytes()
    ramps = {"Red": np.arange(256) * 257, "Green": 65535 - np.arange(256) * 257, "Blue": np.full(256, 32896)}
    for k, (c, ramp) in enumerate(ramps.items()):
        ds.add_new(0x00281101 + k, "US", [256, 0, 16])
        ds.add_new(0x00281201 + k, "OW", ramp.astype(np.uint16).tobytes())
    ds.save_as(path)
    rgb = read_dicom(path).frames[0]
    assert np.array_equal(rgb[..., 0], idx) and np.array_equal(rgb[..., 1], 255 - idx)
    assert np.all(rgb[..., 2] == 128)

    ds = pydicom.dcmread(tm.write_dicom(tmp_path / "ybr.dcm", px))
    ycc = np.zeros(px.shape + (3,), np.uint8)
    ycc[..., 0], ycc[..., 1], ycc[..., 2] = 76, 85, 255  # pure red in YCbCr (full range)
    ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.PlanarConfiguration = "YBR_FULL", 3, 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = ycc.tobytes()
    ds.save_as(tmp_path / "ybr.dcm")
    red = read_dicom(tmp_path / "ybr.dcm").frames[0]
    assert red.shape == px.shape + (3,) and np.all(red[..., 0] >= 253) and np.all(red[..., 1:] <= 2)


def test_dicom_archive_embeds_like_the_model_and_keeps_tags(models, tmp_path):
    images = tmp_path / "dicom"
    stack = tm.dicom_pixels(7, frames=2)
    tm.write_dicom(images / "p1" / "x.dcm", tm.dicom_pixels(6), photometric="MONOCHROME1", center=2100.0,
                   width=1700.0, modality="DX", body_part="CHEST", manufacturer="Acme Medical")
    tm.write_dicom(images / "p2" / "y", stack, center=2000.0, width=3000.0, modality="MR", body_part="KNEE",
                   study_date="20190102")  # no suffix: recognised by its preamble
    texts = tmp_path / "reports"
    texts.mkdir()
    for sid, t in (("p1", "left pleural effusion"), ("p2", "no acute process")):
        (texts / f"{sid}.txt").write_text(t)
    result = _run(models["clip"], images, texts, tmp_path / "store", image_id="parent", frames="all")
    source = open_source(tmp_path / "store")
    meta = source.metadata()
    assert result.rows == 3 and list(meta["image"]) == ["p1/x.dcm", "p2/y", "p2/y"]
    assert list(meta["frame"]) == [0, 0, 1] and list(meta["id"]) == ["p1", "p2", "p2"]
    assert list(meta["Modality"]) == ["DX", "MR", "MR"] and list(meta["Manufacturer"]) == ["Acme Medical", "ACME", "ACME"]
    assert list(meta["StudyDate"]) == ["20210304", "20190102", "20190102"]
    want = _reference_images(models["clip"], transformers.CLIPModel, [
        _expected_display(tm.dicom_pixels(6), 2100.0, 1700.0, mono1=True),
        _expected_display(stack[0], 2000.0, 3000.0), _expected_display(stack[1], 2000.0, 3000.0)])
    np.testing.assert_allclose(np.asarray(source.arrays()[0]), want, atol=TOL)


def test_image_id_from_the_dicom_header(clip_encoder, tmp_path):
    images = tmp_path / "flat"
    for k, acc in enumerate(["A7", "A8", "A7"]):
        tm.write_dicom(images / f"{k}.dcm", tm.dicom_pixels(k), accession=acc)
    tm.write_dicom(images / "3.dcm", tm.dicom_pixels(9))  # no AccessionNumber: skipped
    texts = _write_reports_csv(tmp_path / "t.csv", ["A7", "A8"], ["report a", "report b"], id_name="id",
                               text_name="text")
    result = _run(clip_encoder, images, texts, tmp_path / "store", image_id="dicom:AccessionNumber")
    assert list(open_source(tmp_path / "store").column("id")) == ["A7", "A8", "A7"]
    assert [(s.file, s.reason) for s in result.skipped] == [
        ("3.dcm", "ValueError: the DICOM header has no AccessionNumber (image_id='dicom:AccessionNumber')")]


def test_stem_ids_keep_every_dot_before_the_image_suffix():
    from fastsas.embedding.pipeline import _id_of

    keys = ["s/1.2.840.113619.2.55.3.dcm", "s/1.2.840.113619.2.55.4.DCM", "s/IM.0001", "s/IM.0002",
            "s/patient_v1.2.png", "s/x.tiff", "noext", "s/.png"]
    assert [_id_of(k, "stem") for k in keys] == [
        "1.2.840.113619.2.55.3", "1.2.840.113619.2.55.4", "IM.0001", "IM.0002", "patient_v1.2", "x", "noext",
        ".png"]


def test_images_from_a_listing(clip_encoder, archive, tmp_path):
    keys = sorted(archive["files"])[:5]
    listing = tmp_path / "listing.csv"
    with open(listing, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "study_id"])
        w.writerows((str(archive["images"] / k), k.split("/")[0]) for k in keys)
    result = _run(clip_encoder, listing, archive["csv"], tmp_path / "store")
    meta = open_source(tmp_path / "store").metadata()
    assert result.rows == 5 and list(meta["study_id"]) == [k.split("/")[0] for k in keys]
    by_folder = open_source(_run(clip_encoder, archive["images"], archive["csv"], tmp_path / "ref",
                                 image_id="parent").store)
    rows = [list(by_folder.column("image")).index(k) for k in keys]
    np.testing.assert_allclose(np.asarray(open_source(tmp_path / "store").arrays()[0]),
                               np.asarray(by_folder.arrays()[0])[rows], atol=1e-6)  # other batches: rounding


@pytest.mark.gpu
def test_half_precision_on_the_gpu_gives_float32_unit_rows(models, archive, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip(f"torch {torch.__version__} sees no CUDA device (the embed extra is the CPU build)")
    result = _run(models["clip"], archive["images"], archive["csv"], tmp_path / "gpu", image_id="parent",
                  device="cuda", precision="auto")
    cpu = _run(models["clip"], archive["images"], archive["csv"], tmp_path / "cpu", image_id="parent")
    x = np.asarray(open_source(result.store).arrays()[0])
    assert result.device == "cuda" and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(x, np.asarray(open_source(cpu.store).arrays()[0]), atol=3e-2)  # bf16 rounding


def test_high_bit_depth_png_is_scaled_by_its_range(tmp_path):
    values = (np.arange(40 * 30).reshape(40, 30) * 50 + 1000).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    got = read_image(tmp_path / "deep.png")[0]
    want = np.rint((values - values.min()) / (values.max() - values.min()) * 255).astype(np.uint8)
    assert np.array_equal(got[:, :, 0], want) and np.array_equal(got[:, :, 2], want)


# -- skipping and logging ------------------------------------------------------------------------------
def test_unusable_files_are_skipped_and_logged(clip_encoder, archive, tmp_path):
    images = tmp_path / "images"
    tm.save_image(images / "good.png", 1)
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    jpeg = (archive["images"] / "st00" / "b.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(jpeg[:len(jpeg) // 3])
    tm.write_dicom(images / "nopixels.dcm", None, with_pixels=False)
    tm.save_image(images / "orphan.png", 2)  # no text with its id
    tm.save_image(images / "blank.png", 3)  # its text is empty
    (images / "notes.xml").write_text("<not an image/>")  # not an image kind: ignored
    texts = _write_reports_csv(tmp_path / "t.csv", ["good", "corrupt", "truncated", "nopixels", "blank", "unused"],
                               ["fine", "x", "y", "z", " ", "no image"], id_name="id", text_name="text")
    result = _run(clip_encoder, images, texts, tmp_path / "store")
    assert result.rows == 1 and open_source(tmp_path / "store").column("image").tolist() == ["good.png"]
    reasons = {s.file: s.reason for s in result.skipped}
    assert set(reasons) == {"corrupt.png", "truncated.jpg", "nopixels.dcm", "orphan.png", "blank.png"}
    assert reasons["corrupt.png"].startswith("UnidentifiedImageError")
    assert "truncated" in reasons["truncated.jpg"].lower() or "OSError" in reasons["truncated.jpg"]
    assert reasons["nopixels.dcm"] == ("no pixel data: this Secondary Capture Image Storage (1.2.840.10008.5.1.4.1.1.7) "
                                       "object has no Pixel Data element (nothing to embed)")
    assert reasons["orphan.png"] == "no text with id 'orphan'"
    assert reasons["blank.png"] == "the text of id 'blank' is empty"
    with open(result.skip_log) as f:
        logged = list(csv.DictReader(f))
    assert {r["file"]: r["reason"] for r in logged} == reasons
    assert {r["file"]: r["id"] for r in logged}["nopixels.dcm"] == "nopixels"
    assert result.texts_without_images == 5


# -- resumption ----------------------------------------------------------------------------------------
def _count_rows(monkeypatch, encoder, stop_after_calls=None):
    """Count the rows the image tower sees; optionally interrupt (Ctrl-C) after some calls."""
    seen = {"rows": 0, "calls": 0}
    original = type(encoder).encode_images

    def counting(inputs):
        if stop_after_calls is not None and seen["calls"] >= stop_after_calls:
            raise KeyboardInterrupt
        seen["calls"] += 1
        seen["rows"] += len(inputs["pixel_values"])
        return original(encoder, inputs)

    monkeypatch.setattr(encoder, "encode_images", counting)
    return seen


def _store_rows(path):
    s = open_source(path)
    x, y = (np.asarray(a) for a in s.arrays())
    return x, y, s.metadata()


def test_interrupted_job_resumes_without_reembedding(models, archive, tmp_path, monkeypatch):
    enc = load_model(models["clip"], device="cpu")
    n = len(archive["files"])
    full = _run(enc, archive["images"], archive["csv"], tmp_path / "full", image_id="parent", batch_size=2)
    seen = _count_rows(monkeypatch, enc, stop_after_calls=3)
    with pytest.raises(KeyboardInterrupt):
        _run(enc, archive["images"], archive["csv"], tmp_path / "s", image_id="parent", batch_size=2, chunk_rows=4)
    first = open_source(tmp_path / "s").n
    assert first == seen["rows"] == 6  # what was embedded before Ctrl-C is kept
    monkeypatch.undo()
    seen = _count_rows(monkeypatch, enc)
    again = _run(enc, archive["images"], archive["csv"], tmp_path / "s", image_id="parent", batch_size=2,
                 chunk_rows=4)
    assert again.resumed and again.files_done_before == 6
    assert seen["rows"] == again.rows_embedded == n - 6 and again.rows == full.rows == n
    x, y, meta = _store_rows(tmp_path / "s")
    fx, fy, fmeta = _store_rows(tmp_path / "full")
    assert {k: list(v) for k, v in meta.items()} == {k: list(v) for k, v in fmeta.items()}
    np.testing.assert_allclose(x, fx, atol=1e-6)
    np.testing.assert_allclose(y, fy, atol=1e-6)
    seen["rows"] = 0
    done = _run(enc, archive["images"], archive["csv"], tmp_path / "s", image_id="parent")
    assert seen["rows"] == done.rows_embedded == done.texts_embedded == 0 and done.rows == n


@pytest.mark.parametrize("die_at_call, committed", [(3, 4), (5, 8)])
def test_crashed_process_resumes_from_the_last_committed_chunk(models, archive, tmp_path, die_at_call, committed):
    """A process killed outright (no cleanup) keeps its committed chunks; the re-run embeds
    only the rest, frames of a split multi-frame file included (die_at_call=5: s5.dcm's
    frames 0-2 are in the committed chunks, frame 3 was only buffered)."""
    images = tmp_path / "images"
    for i in range(5):
        tm.save_image(images / f"s{i}.png", i)
    tm.write_dicom(images / "s5.dcm", tm.dicom_pixels(5, frames=4))  # rows 5..8
    tm.save_image(images / "s6.png", 6)
    texts = _write_reports_csv(tmp_path / "t.csv", [f"s{i}" for i in range(7)], tm.reports(7), "id", "text")
    script = textwrap.dedent(f"""
        import os, fastsas as fs
        from fastsas.embedding import load_model
        enc = load_model({str(models['clip'])!r}, device="cpu")
        calls = []
        original = enc.encode_images
        def dying(inputs):
            if len(calls) == {die_at_call}:  # 2 rows per call; chunk_rows=4 commits every 4th row
                os._exit(17)
            calls.append(1)
            return original(inputs)
        enc.encode_images = dying
        fs.embed(enc, {str(images)!r}, {str(texts)!r}, {str(tmp_path / 'store')!r}, frames="all", batch_size=2,
                 chunk_rows=4, workers=0, device="cpu")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 17, proc.stderr
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert manifest["n"] == committed and not manifest["complete"]
    enc = load_model(models["clip"], device="cpu")
    again = _run(enc, images, texts, tmp_path / "store", frames="all", batch_size=2, chunk_rows=4)
    assert again.rows == 10 and again.rows_embedded == 10 - committed
    meta = open_source(tmp_path / "store").metadata()
    assert [(i, f) for i, f in zip(meta["image"], meta["frame"])] == [
        ("s0.png", 0), ("s1.png", 0), ("s2.png", 0), ("s3.png", 0), ("s4.png", 0),
        ("s5.dcm", 0), ("s5.dcm", 1), ("s5.dcm", 2), ("s5.dcm", 3), ("s6.png", 0)]
    ref = _run(enc, images, texts, tmp_path / "ref", frames="all")
    np.testing.assert_allclose(np.asarray(open_source(tmp_path / "store").arrays()[0]),
                               np.asarray(open_source(tmp_path / "ref").arrays()[0]), atol=1e-6)
    assert ref.rows == 10


def test_resume_with_other_options_is_refused(clip_encoder, archive, tmp_path):
    _run(clip_encoder, archive["images"], archive["csv"], tmp_path / "s", image_id="parent")
    with pytest.raises(ValueError, match=r"other options \(image_id: 'parent' there, 'stem' now\).*overwrite=True"):
        _run(clip_encoder, archive["images"], archive["csv"], tmp_path / "s", image_id="stem")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        _run(clip_encoder, archive["images"], archive["csv"], tmp_path / "s", image_id="parent", resume=False)
    redone = _run(clip_encoder, archive["images"], archive["csv"], tmp_path / "s", image_id="stem", overwrite=True)
    assert not redone.resumed and redone.rows_embedded == redone.rows


# -- texts ---------------------------------------------------------------------------------------------
def test_texts_from_parquet_and_their_errors(clip_encoder, archive, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fastsas.embedding import read_texts

    pq.write_table(pa.table({"study_id": archive["ids"], "caption": list(archive["texts"].values())}),
                   tmp_path / "t.parquet")
    texts, id_name = read_texts(tmp_path / "t.parquet")
    assert id_name == "study_id" and texts == archive["texts"]
    a = _run(clip_encoder, archive["images"], tmp_path / "t.parquet", tmp_path / "a", image_id="parent")
    b = _run(clip_encoder, archive["images"], archive["csv"], tmp_path / "b", image_id="parent")
    assert a.rows == b.rows == len(archive["files"])
    assert np.array_equal(np.asarray(open_source(tmp_path / "a").arrays()[1]),
                          np.asarray(open_source(tmp_path / "b").arrays()[1]))
    _write_reports_csv(tmp_path / "zeros.csv", ["007", "7"], ["a", "b"], "id", "text")
    assert read_texts(tmp_path / "zeros.csv")[0] == {"007": "a", "7": "b"}  # ids stay strings
    _write_reports_csv(tmp_path / "dup.csv", ["x", "x"], ["a", "b"], "id", "text")
    with pytest.raises(ValueError, match="id 'x' appears more than once"):
        read_texts(tmp_path / "dup.csv")
    _write_reports_csv(tmp_path / "body.csv", ["a"], ["b"], "id", "body")
    with pytest.raises(ValueError, match=r"none of the columns text, report, caption; name its column with "
                                         r"text_column \(columns: id, body\)"):
        read_texts(tmp_path / "body.csv")
    with pytest.raises(ValueError, match=r"text_column='body'.*columns: id, text"):
        read_texts(tmp_path / "zeros.csv", text_column="body")


def test_bad_arguments_name_the_argument(clip_encoder, archive, tmp_path):
    cases = [(dict(frames="some"), "frames"), (dict(image_id="folder"), "image_id"), (dict(batch_size=0), "batch_size"),
             (dict(chunk_rows=-1), "chunk_rows"), (dict(workers=-2), "workers")]
    for kw, name in cases:
        with pytest.raises(ValueError, match=name):
            _run(clip_encoder, archive["images"], archive["csv"], tmp_path / "s", **kw)
    with pytest.raises(FileNotFoundError, match="images"):
        _run(clip_encoder, tmp_path / "nowhere", archive["csv"], tmp_path / "s")
    with pytest.raises(TypeError, match="model must be a local model directory"):
        _run(42, archive["images"], archive["csv"], tmp_path / "s")
    with pytest.raises(ValueError, match="precision"):
        load_model(clip_encoder.model_dir, device="cpu", precision="bf16")


# -- models that are refused -------------------------------------------------------------------------------
def test_remote_code_and_foreign_directories_are_refused(models, tmp_path):
    import shutil

    auto = tmp_path / "auto"
    shutil.copytree(models["clip"], auto)
    cfg = json.loads((auto / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (auto / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"model_dir .*auto: config.json names custom code \(auto_map\).*"
                                         "trust_remote_code"):
        load_model(auto, device="cpu")
    code = tmp_path / "code"
    shutil.copytree(models["clip"], code)
    (code / "modeling_evil.py").write_text("raise SystemExit('never run')\n")
    with pytest.raises(ValueError, match=r"ships Python code \(modeling_evil.py\).*trust_remote_code"):
        load_model(code, device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither config.json .* nor open_clip_config.json"):
        load_model(tmp_path / "empty", device="cpu")
    with pytest.raises(FileNotFoundError, match="model_dir .*: no such directory"):
        load_model(tmp_path / "absent", device="cpu")


def test_no_network_call_while_loading_and_embedding(models, archive, tmp_path, monkeypatch):
    import socket

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for name in ("clip", "siglip"):
        result = _run(models[name], archive["images"], archive["csv"], tmp_path / name, image_id="parent")
        assert result.rows == len(archive["files"])
    assert attempts == []
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"


def test_import_fastsas_does_not_import_torch():
    code = "import sys, fastsas as fs; assert 'torch' not in sys.modules; f = fs.embed; " \
           "assert callable(f) and f.__module__ == 'fastsas.embedding.pipeline'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr


# -- the command line --------------------------------------------------------------------------------------
def _one_line_error(capsys, *fragments):
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastsas: error:") and "\n" not in err, err
    for f in fragments:
        assert f in err, err


def _study_folders(tmp_path, count, seed, write):
    """One folder per study S000, S001, ... (write(folder, i) puts its images there) and a
    reports CSV: (images folder, reports CSV)."""
    images = tmp_path / "images"
    ids = [f"S{i:03d}" for i in range(count)]
    for i, sid in enumerate(ids):
        write(images / sid, i)
    return images, _write_reports_csv(tmp_path / "reports.csv", ids, tm.reports(count, seed=seed))


def _dicom_or_png(folder, i):
    if i % 2:
        tm.write_dicom(folder / "1.dcm", tm.dicom_pixels(i), modality=("CR", "CT")[i % 4 == 1], center=2048.0,
                       width=2000.0)
    else:
        tm.save_image(folder / "1.png", i)


def test_cli_embed_then_audit(models, tmp_path, capsys):
    images, reports = _study_folders(tmp_path, 40, 11, _dicom_or_png)
    (images / "S999").mkdir()
    (images / "S999" / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    store = tmp_path / "store"
    assert main(["embed", "--model", str(models["clip"]), "--images", str(images), "--texts", str(reports),
                 "--out", str(store), "--image-id", "parent", "--workers", "0", "--device", "cpu",
                 "--batch-size", "8", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "40 rows" in out and "1 file skipped" in out and "skipped.csv" in out
    assert open_source(store).n == 40
    report = tmp_path / "report"
    assert main(["audit", str(store), "--group-by", "Modality", "--id-column", "study_id", "--out", str(report),
                 "--format", "json", "--jackknife-blocks", "5", "--quiet"]) == 0
    data = json.loads((report / "report.json").read_text())
    got = data["audit"] if "audit" in data else data
    x, y = (np.asarray(a) for a in open_source(store).arrays())
    assert got["alignment"]["sas_i2t"] == pytest.approx(fs.alignment(x, y)["sas_i2t"], rel=1e-6)  # float32: chunking
    assert {g["group"] for g in got["groups"]} == {"(missing)", "CR", "CT"}  # the PNGs have no Modality
    capsys.readouterr()
    # re-running resumes: nothing left to embed
    assert main(["embed", "--model", str(models["clip"]), "--images", str(images), "--texts", str(reports),
                 "--out", str(store), "--image-id", "parent", "--workers", "0", "--device", "cpu", "--quiet"]) == 0
    assert "0 rows embedded" in capsys.readouterr().out


def test_audit_of_a_frames_all_store_uses_the_study_as_the_unit(models, tmp_path, capsys):
    def multi_frame(folder, i):
        tm.write_dicom(folder / "1.dcm", tm.dicom_pixels(i, frames=2 + i % 3), center=2048.0, width=2000.0)

    images, reports = _study_folders(tmp_path, 24, 5, multi_frame)
    store = tmp_path / "store"
    assert main(["embed", "--model", str(models["clip"]), "--images", str(images), "--texts", str(reports),
                 "--out", str(store), "--image-id", "parent", "--frames", "all", "--workers", "0", "--device", "cpu",
                 "--quiet"]) == 0
    rows = open_source(store).n
    assert rows == sum(2 + i % 3 for i in range(24)) and open_source(store).id_column == "study_id"
    reports_of = {}
    for name, extra in (("recorded", []), ("given", ["--id-column", "study_id"]), ("rows", ["--by-row"])):
        out = tmp_path / name
        assert main(["audit", str(store), "--out", str(out), "--format", "json", "--jackknife-blocks", "6",
                     "--quiet", *extra]) == 0
        reports_of[name] = json.loads((out / "report.json").read_text())
    recorded, given, rows_as_units = reports_of["recorded"], reports_of["given"], reports_of["rows"]
    assert recorded["unit"] == given["unit"] == {"name": "study_id", "count": 24, "by": "id", "blocks": 6}
    assert recorded["uncertainty"] == given["uncertainty"] and recorded["retrieval"] == given["retrieval"]
    assert recorded["mismatch_test"]["units_tested"] == 24
    assert rows_as_units["unit"] == {"name": "pair", "count": rows, "by": "row", "blocks": 6}
    assert rows_as_units["uncertainty"]["sas_i2t"]["se"] != recorded["uncertainty"]["sas_i2t"]["se"]
    unit_line = [f["text"] for f in recorded["findings"] if f["kind"] == "unit"][0]
    assert "study_id" in unit_line and "24 units" in unit_line


def test_cli_embed_bad_input_exits_2(models, tmp_path, capsys):
    auto = tmp_path / "auto"
    auto.mkdir()
    (auto / "config.json").write_text(json.dumps({"model_type": "clip", "auto_map": {"AutoModel": "x.Y"}}))
    images = tmp_path / "im"
    tm.save_image(images / "a.png", 0)
    texts = _write_reports_csv(tmp_path / "t.csv", ["a"], ["x"], "id", "text")
    base = ["embed", "--images", str(images), "--texts", str(texts), "--out", str(tmp_path / "s"), "--quiet"]
    assert main(base + ["--model", str(auto)]) == 2
    _one_line_error(capsys, "--model", "auto_map", "trust_remote_code")
    assert main(base + ["--model", str(models["clip"]), "--frames", "some"]) == 2
    _one_line_error(capsys, "--frames")
    assert main(base + ["--model", str(models["clip"]), "--image-id", "folder"]) == 2
    _one_line_error(capsys, "--image-id must be 'stem', 'parent' or 'dicom:<Keyword>'")
    assert main(base + ["--model", str(tmp_path / "absent")]) == 2
    _one_line_error(capsys, "--model", "absent: no such directory")
    assert main(["embed", "--help"]) == 0
    assert "--image-id" in capsys.readouterr().out
