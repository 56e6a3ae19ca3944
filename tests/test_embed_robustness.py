"""One bad file never stops an archive: decoders that panic (a BaseException) or kill their
worker process, real corrupted RLE files that crash pylibjpeg-rle, pydicom's own test
corpus; big-endian PALETTE COLOR; true skip reasons that say what to do; decoding workers
that die with their parent; files that are not images counted in the summary."""
import csv
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import fastsas as fs
from fastsas.cli import main
from fastsas.store import open_source

sys.path.insert(0, str(Path(__file__).parent))
import _tiny_models as tm  # noqa: E402

torch = pytest.importorskip("torch", reason="the embed extra (pip install '.[test]') provides torch")
pydicom = pytest.importorskip("pydicom")
from pydicom import data as dicom_data  # noqa: E402
from pydicom import uid  # noqa: E402

import fastsas.embedding.pipeline as pipeline  # noqa: E402
from fastsas.embedding import load_model, read_dicom  # noqa: E402
from fastsas.embedding.dicom import DicomReadError, NoPixelDataError  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tm.save_tiny_clip(tmp_path_factory.mktemp("model") / "clip")


@pytest.fixture(scope="module")
def encoder(model):
    return load_model(model, device="cpu")


def _texts(path: Path, ids) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        w.writerows((i, f"report of {i}") for i in ids)
    return path


def _png_archive(root: Path, n: int = 10) -> tuple[Path, Path]:
    for i in range(n):
        tm.save_image(root / "images" / f"s{i:02d}.png", i)
    return root / "images", _texts(root / "t.csv", [f"s{i:02d}" for i in range(n)])


def _rows(path):
    s = open_source(path)
    return np.asarray(s.arrays()[0]), s.column("image").tolist()


class DecoderPanic(BaseException):
    """What a Rust panic (pyo3's PanicException) is: not an Exception."""


def _hostile_read_image(original, kill: str = "s03.png", panic: str = "s06.png"):
    def read(path, frames="first"):
        name = Path(path).name
        if name == kill:
            os.kill(os.getpid(), signal.SIGKILL)  # the decoder takes its process down
        if name == panic:
            raise DecoderPanic("index out of bounds: the len is 8192 but the index is 8193")
        return original(path, frames)
    return read


# -- decoders that panic or kill their process ---------------------------------------------------------
def test_a_decoder_panic_is_skipped_with_its_reason(encoder, tmp_path, monkeypatch):
    images, texts = _png_archive(tmp_path)
    monkeypatch.setattr(pipeline, "read_image", _hostile_read_image(pipeline.read_image, kill=""))
    result = fs.embed(encoder, images, texts, tmp_path / "s", workers=0, batch_size=3, chunk_rows=4)
    assert result.rows == 9
    assert [(s.file, s.reason) for s in result.skipped] == [
        ("s06.png", "DecoderPanic: index out of bounds: the len is 8192 but the index is 8193")]


def test_a_decoder_that_kills_its_worker_is_skipped_and_the_rows_are_those_of_a_clean_run(encoder, tmp_path,
                                                                                          monkeypatch):
    images, texts = _png_archive(tmp_path / "a")
    clean_images, _ = _png_archive(tmp_path / "b")
    for name in ("s03.png", "s06.png"):
        (clean_images / name).unlink()
    clean = fs.embed(encoder, clean_images, texts, tmp_path / "clean", workers=0, batch_size=3, chunk_rows=4)
    monkeypatch.setattr(pipeline, "read_image", _hostile_read_image(pipeline.read_image))
    result = fs.embed(encoder, images, texts, tmp_path / "s", workers=2, batch_size=3, chunk_rows=4)
    reasons = {s.file: s.reason for s in result.skipped}
    assert set(reasons) == {"s03.png", "s06.png"} and result.rows == clean.rows == 8
    assert reasons["s03.png"].startswith("decoding it killed the decoding process (signal SIGKILL)")
    got, want = _rows(tmp_path / "s"), _rows(tmp_path / "clean")
    assert got[1] == want[1]
    np.testing.assert_allclose(got[0], want[0], atol=1e-6)
    with open(result.skip_log) as f:
        assert [r["file"] for r in csv.DictReader(f)] == ["s03.png", "s06.png"]


def _rle_file_that_panics(tmp_path: Path) -> Path:
    """MR_small_RLE.dcm with bytes of its pixel data replaced until pylibjpeg-rle panics on it
    (a fixed seed: the same file every run)."""
    from pydicom.pixels import pixel_array

    source = Path(dicom_data.get_testdata_file("MR_small_RLE.dcm"))
    raw = source.read_bytes()
    start = pydicom.dcmread(source)["PixelData"].file_tell
    rng = np.random.default_rng(0)
    for trial in range(400):
        damaged = bytearray(raw)
        for at in rng.integers(start, len(raw), int(rng.integers(1, 9))):
            damaged[int(at)] = int(rng.integers(256))
        path = tmp_path / "panics.dcm"
        path.write_bytes(bytes(damaged))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pixel_array(pydicom.dcmread(path), decoding_plugin="pylibjpeg")
        except Exception:  # noqa: BLE001 - an ordinary failure: not what this test needs
            continue
        except BaseException as exc:  # noqa: BLE001 - the panic
            assert not isinstance(exc, Exception)
            return path
    pytest.fail("no damaged RLE file made pylibjpeg-rle panic")


def test_a_real_pylibjpeg_rle_panic_falls_back_to_pydicoms_decoder(encoder, tmp_path):
    pytest.importorskip("rle", reason="pylibjpeg-rle (in the test extra) is the decoder that panics")
    pytest.importorskip("pylibjpeg")
    from pydicom.pixels import pixel_array

    path = _rle_file_that_panics(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frames = read_dicom(path).frames  # pydicom's decoder took over
        own = pixel_array(pydicom.dcmread(path), decoding_plugin="pydicom")
    assert frames[0].shape == own.shape + (3,)
    images = tmp_path / "archive"
    images.mkdir()
    os.replace(path, images / "mr.dcm")
    result = fs.embed(encoder, images, _texts(tmp_path / "t.csv", ["mr"]), tmp_path / "s", workers=2)
    assert result.rows == 1 and not result.skipped


# -- big-endian PALETTE COLOR --------------------------------------------------------------------------------
def _big_endian_copy(source: Path, target: Path) -> Path:
    """The file in Explicit VR Big Endian: OW values (LUT data, 8-bit pixel data) byte-swapped
    per 16-bit word, as the standard stores them."""
    from pydicom.filewriter import dcmwrite

    ds = pydicom.dcmread(source)
    for colour in ("Red", "Green", "Blue"):
        element = ds[f"{colour}PaletteColorLookupTableData"]
        element.value = np.frombuffer(element.value, "<u2").astype(">u2").tobytes()
    ds.PixelData = np.frombuffer(ds.PixelData, np.uint8).reshape(-1, 2)[:, ::-1].tobytes()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRBigEndian
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcmwrite(target, ds, implicit_vr=False, little_endian=False, force_encoding=True)
    return target


def test_big_endian_palette_colour_is_not_black(tmp_path):
    source = Path(dicom_data.get_testdata_file("examples_palette.dcm"))
    big = _big_endian_copy(source, tmp_path / "palette_be.dcm")
    assert not pydicom.dcmread(big).file_meta.TransferSyntaxUID.is_little_endian
    ds = pydicom.dcmread(source)
    index = np.frombuffer(ds.PixelData, np.uint8)[:ds.Rows * ds.Columns].reshape(ds.Rows, ds.Columns)
    lut = np.stack([np.frombuffer(ds[f"{c}PaletteColorLookupTableData"].value, "<u2") for c in ("Red", "Green", "Blue")],
                   axis=-1)  # 256 entries, first mapped value 0, 16 bits
    want = np.rint(lut[index] * (255.0 / 65535.0)).astype(np.uint8)
    for path in (source, big):
        got = read_dicom(path).frames[0]
        assert np.array_equal(got, want), path.name
    assert want.mean() > 10  # not black


# -- reasons ---------------------------------------------------------------------------------------------
def _reason(path) -> str:
    try:
        read_dicom(path)
    except DicomReadError as exc:
        return str(exc)
    return ""


def test_reasons_are_true_and_say_what_to_do(tmp_path):
    ct = Path(dicom_data.get_testdata_file("CT_small.dcm"))
    raw = ct.read_bytes()
    (tmp_path / "cut.dcm").write_bytes(raw[:800])
    assert _reason(tmp_path / "cut.dcm").startswith("the file is truncated (800 bytes): it stops part way through")
    (tmp_path / "cut_pixels.dcm").write_bytes(raw[:10000])
    assert _reason(tmp_path / "cut_pixels.dcm").startswith("the file is truncated (10,000 bytes): it stops before "
                                                            "the end of its pixel data")
    # no preamble: read as a bare data set, which fastsas does itself (there is no force=True to give)
    (tmp_path / "bare.dcm").write_bytes(raw[132:])
    assert np.array_equal(read_dicom(tmp_path / "bare.dcm").frames[0], read_dicom(ct).frames[0])
    (tmp_path / "text.dcm").write_text("patient notes, not an image\n" * 20)
    assert _reason(tmp_path / "text.dcm").startswith("not a DICOM Part 10 file (no 'DICM' marker at byte 128)")
    sr = _reason(dicom_data.get_testdata_file("test-SR.dcm"))
    assert sr.startswith("no pixel data: a ") and "is not an image" in sr
    jpeg_ls = _reason(dicom_data.get_testdata_file("JPEGLSNearLossless_08.dcm"))
    if jpeg_ls:  # no JPEG-LS decoder installed: say which pip packages read it
        assert "JPEG-LS" in jpeg_ls and "pip install" in jpeg_ls and "python-gdcm" in jpeg_ls
        assert "gdcm>=" not in jpeg_ls  # pip names, not import names with version pins
    with pytest.raises(NoPixelDataError):
        read_dicom(dicom_data.get_testdata_file("rtplan.dcm"))


def test_the_pydicom_corpus_never_stops_a_run(encoder, tmp_path):
    """Every test file pydicom ships, as one archive: each file is a row or a logged reason,
    no reason tells the user to pass an option fastsas does not have, and the files that are
    not images are counted."""
    root = tmp_path / "corpus"
    sources = [Path(p) for p in dicom_data.get_testdata_files() if Path(p).is_file()]
    for i, p in enumerate(sources):
        target = root / f"{i:03d}" / p.name
        target.parent.mkdir(parents=True)
        target.write_bytes(p.read_bytes())
    texts = _texts(tmp_path / "t.csv", [f"{i:03d}" for i in range(len(sources))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fs.embed(encoder, root, texts, tmp_path / "s", image_id="parent", workers=2, batch_size=16)
    items, not_images = pipeline.list_images(root, "parent")
    assert result.files_total == len(items) and result.files_not_images == not_images > 0
    rows = open_source(tmp_path / "s").column("image").tolist()
    assert len(set(rows)) + len(result.skipped) == len(items) and len(rows) > 100
    for s in result.skipped:
        assert s.reason and "force=True" not in s.reason, s


# -- workers die with their parent --------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_decoding_workers_die_with_their_parent(model, tmp_path):
    """Without PR_SET_PDEATHSIG, workers whose decoded batches fill the pipe to their killed
    parent stay alive (seen: minutes, 330 MB each): torch's own watchdog cannot end them."""
    images, texts = _png_archive(tmp_path, 40)
    script = textwrap.dedent(f"""
        import time, fastsas as fs
        import fastsas.embedding.pipeline as pipeline
        original = pipeline.read_image
        def slow(path, frames="first"):
            time.sleep(0.5)
            return original(path, frames)
        pipeline.read_image = slow
        import numpy as np
        record = pipeline.ImageDataset.record
        def heavy(self, i):  # large decoded batches: a worker's queue to a dead parent fills and blocks
            return dict(record(self, i), ballast=np.ones(4 << 20, np.uint8))
        pipeline.ImageDataset.record = heavy
        fs.embed({str(model)!r}, {str(images)!r}, {str(texts)!r}, {str(tmp_path / 's')!r}, workers=2,
                 batch_size=2, device="cpu")
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            workers = [p for p in _children(parent.pid) if _alive(p)]
        assert len(workers) >= 2, "the embed run never started its workers"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in workers), "decoding workers outlived their killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()


# -- files that are not images --------------------------------------------------------------------------------
def test_the_summary_counts_files_that_are_not_images(model, tmp_path, capsys):
    images, texts = _png_archive(tmp_path, 3)
    (images / "notes.txt").write_text("x")
    (images / "scan.pdf").write_bytes(b"%PDF-1.4")
    (images / ".hidden").write_text("x")  # hidden files are not counted
    assert main(["embed", "--model", str(model), "--images", str(images), "--texts", str(texts), "--out",
                 str(tmp_path / "s"), "--workers", "0", "--device", "cpu", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "no files skipped; 0 texts have no image; 2 files were not images (ignored)" in " ".join(out.split())


def test_a_loader_read_stuck_after_a_worker_death_is_interrupted(monkeypatch):
    """A worker killed while sending a batch leaves half a message in the shared result pipe:
    the loader's read then never returns. The watcher interrupts that read with an error the
    supervisor recovers from (here a fake loader stands in: one worker dead, next() blocked)."""
    import signal as signal_module
    import time as time_module

    class DeadWorker:
        exitcode = -9
        killed = False

        def is_alive(self):
            return False

        def kill(self):
            self.killed = True

    class StuckIterator:
        _workers = [DeadWorker()]

        def __next__(self):
            time_module.sleep(60)  # a read that never returns (interrupted by the watcher's signal)
            raise AssertionError("the stuck read was not interrupted")

    monkeypatch.setattr(pipeline._StuckLoaderWatch, "STUCK_AFTER", 1.0)
    before = signal_module.getsignal(signal_module.SIGUSR1)
    started = time_module.monotonic()
    with pytest.raises(RuntimeError) as caught:
        with pipeline._StuckLoaderWatch(StuckIterator()) as watch:
            watch.next_batch()
    assert isinstance(caught.value, pipeline._StuckLoaderError) and pipeline._worker_died(caught.value)
    assert time_module.monotonic() - started < 10
    assert signal_module.getsignal(signal_module.SIGUSR1) is before
