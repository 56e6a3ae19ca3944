"""Kill tests: a child process writing an embedding store, or running `fastsas embed` (with
a decoder that kills its worker among the files), is killed with SIGKILL at random points,
again and again; after every kill the store opens and holds exactly the rows committed so
far, and resuming until done gives what one uninterrupted run gives. The default suite kills
a few times; the slow versions (-m slow) many times."""
import csv
import filecmp
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from fastsas.store import EmbeddingStore, layout

sys.path.insert(0, str(Path(__file__).parent))
import _tiny_models as tm  # noqa: E402

N, DIM, CHUNK = 4000, 16, 32


def _data():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    y = rng.standard_normal((N, DIM)).astype(np.float32)
    meta = {"row": np.arange(N, dtype=np.int64), "label": np.array([f"r{i % 17}" for i in range(N)])}
    return x, y, meta


# Appends rows from where the store stands to the end, in steps of varying size; a store
# that does not exist yet, or whose creation was cut short, is created.
WRITER = textwrap.dedent(f"""
    import sys
    import numpy as np
    from fastsas.store import EmbeddingStore, layout
    from pathlib import Path
    rng = np.random.default_rng(11)
    x = rng.standard_normal(({N}, {DIM})).astype(np.float32)
    y = rng.standard_normal(({N}, {DIM})).astype(np.float32)
    meta = {{"row": np.arange({N}, dtype=np.int64), "label": np.array([f"r{{i % 17}}" for i in range({N})])}}
    path = Path(sys.argv[1])
    if (path / layout.MANIFEST).exists():
        store = EmbeddingStore.open(path, mode="a")
    else:
        store = EmbeddingStore.create(path, {DIM}, chunk_rows={CHUNK}, columns={{"row": "int64", "label": "string"}})
    start = store.n_done
    print("ready", flush=True)
    steps = [37, 5, 128, 1, 64, 200, 13]
    k = 0
    while start < {N}:
        stop = min({N}, start + steps[k % len(steps)])
        store.append(x[start:stop], y[start:stop], {{c: v[start:stop] for c, v in meta.items()}})
        start, k = stop, k + 1
    store.close()
""")


def _run_until_ready(args: list[str]) -> tuple[subprocess.Popen, float]:
    """A child started and past its imports (it prints "ready"), and when that was."""
    child = subprocess.Popen([sys.executable, "-c", *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True)
    line = child.stdout.readline()
    assert line.strip() == "ready" or child.wait(timeout=60) == 0, line
    return child, time.monotonic()


def _work_time(args: list[str]) -> float:
    """How long a child works after it is ready, run to its end: the range of the kills."""
    child, ready = _run_until_ready(args)
    assert child.wait(timeout=600) == 0
    return time.monotonic() - ready


def _write_uninterrupted(path: Path) -> float:
    """Write the store in one run; returns how long the writing took."""
    return _work_time([WRITER, str(path)])


def _check_prefix(path: Path, x, y, meta) -> int:
    """The store after a kill opens (if its first commit happened) and holds a prefix of the rows."""
    if not (path / layout.MANIFEST).exists():
        assert not path.exists() or layout.is_half_created(path) or not any(path.iterdir())
        return 0
    store = EmbeddingStore.open(path)
    n = store.n
    if n:
        a, b = (np.asarray(v) for v in store.arrays())
        assert np.array_equal(a, x[:n]) and np.array_equal(b, y[:n])
        got = store.metadata()
        assert np.array_equal(got["row"], meta["row"][:n]) and np.array_equal(got["label"], meta["label"][:n])
    return n


def _assert_same_store(path: Path, reference: Path) -> None:
    a, b = EmbeddingStore.open(path), EmbeddingStore.open(reference)
    assert (a.n, a.chunks_done, a.complete) == (b.n, b.chunks_done, b.complete) == (N, -(-N // CHUNK), True)
    for name in layout.ARRAY_NAMES:
        for i in range(a.chunks_done):
            assert filecmp.cmp(layout.chunk_file(path, name, i), layout.chunk_file(reference, name, i), shallow=False)
    ma, mb = a.metadata(), b.metadata()
    assert all(np.array_equal(ma[k], mb[k]) for k in mb) and list(ma) == list(mb)


def _kill_store_writer_repeatedly(tmp_path: Path, kills: int, seed: int) -> list[list[int]]:
    """Kill a store writer `kills` times at random points, resuming after each kill; a store
    that a run completed is checked against the uninterrupted one and written again from
    nothing, so the kills cover the whole write however fast the machine. Returns the rows
    committed after each kill, per pass over the write."""
    x, y, meta = _data()
    reference = tmp_path / "reference"
    duration = _write_uninterrupted(reference)
    path = tmp_path / "killed"
    rng = np.random.default_rng(seed)
    passes: list[list[int]] = [[]]
    for _ in range(kills):
        child, _ = _run_until_ready([WRITER, str(path)])
        time.sleep(float(rng.uniform(0.0, duration)))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        passes[-1].append(_check_prefix(path, x, y, meta))
        if passes[-1][-1] == N and (path / layout.MANIFEST).exists() and EmbeddingStore.open(path).complete:
            _assert_same_store(path, reference)
            shutil.rmtree(path)
            passes.append([])
    _write_uninterrupted(path)  # resume to the end
    _assert_same_store(path, reference)
    return [p for p in passes if p]


def test_a_store_writer_killed_at_random_points_resumes_to_the_uninterrupted_store(tmp_path):
    passes = _kill_store_writer_repeatedly(tmp_path, kills=4, seed=0)
    assert all(p == sorted(p) for p in passes)  # committed rows never go back


@pytest.mark.slow
def test_a_store_writer_killed_many_times_resumes_to_the_uninterrupted_store(tmp_path):
    passes = _kill_store_writer_repeatedly(tmp_path, kills=60, seed=1)
    assert all(p == sorted(p) for p in passes)
    assert len({n for p in passes for n in p}) > 5  # the kills fell at many points of the write


# -- fastsas embed ---------------------------------------------------------------------------------------------
# `fastsas embed` as a user runs it, with one hostile decoder: the file "kill.png" kills the
# worker process decoding it.
EMBED = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import fastsas.embedding.pipeline as pipeline
    from fastsas.cli import main
    original = pipeline.read_image
    def read_image(path, frames="first"):
        if Path(path).name == "kill.png":
            os.kill(os.getpid(), signal.SIGKILL)
        return original(path, frames)
    pipeline.read_image = read_image
    print("ready", flush=True)
    sys.exit(main(sys.argv[1:]))
""")


@pytest.fixture(scope="module")
def embed_archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed-kill")
    model = tm.save_tiny_clip(root / "model")
    images = root / "images"
    ids = []
    for i in range(30):
        study = f"st{i:02d}"
        tm.save_image(images / study / "a.png", i)
        ids.append(study)
    tm.save_image(images / "st12" / "kill.png", 99)
    tm.write_dicom(images / "st07" / "frames.dcm", tm.dicom_pixels(3, frames=3))
    with open(root / "reports.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["study_id", "report"])
        w.writerows((i, t) for i, t in zip(ids, tm.reports(len(ids), seed=5)))
    return {"model": model, "images": images, "texts": root / "reports.csv"}


def _embed_args(archive, out: Path) -> list[str]:
    return ["embed", "--model", str(archive["model"]), "--images", str(archive["images"]), "--texts",
            str(archive["texts"]), "--out", str(out), "--image-id", "parent", "--frames", "all", "--workers", "2",
            "--batch-size", "3", "--chunk-rows", "4", "--device", "cpu", "--quiet"]




def _descendants_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def _store_rows(path: Path):
    store = EmbeddingStore.open(path)
    x, y = (np.asarray(v) for v in store.arrays())
    meta = store.metadata()
    return x, y, [(i, f) for i, f in zip(meta["image"], meta["frame"])]


def _kill_embed_repeatedly(archive, tmp_path: Path, kills: int, seed: int) -> list[list[int]]:
    """As _kill_store_writer_repeatedly, for fastsas embed: rows after each kill, per pass."""
    reference = tmp_path / "reference"
    duration = _work_time([EMBED, *_embed_args(archive, reference)])
    rx, ry, rrows = _store_rows(reference)
    with open(reference / "skipped.csv") as f:
        assert [r["file"] for r in csv.DictReader(f)] == ["st12/kill.png"]
    out = tmp_path / "killed"
    rng = np.random.default_rng(seed)
    passes: list[list[int]] = [[]]
    for _ in range(kills):
        child, _ = _run_until_ready([EMBED, *_embed_args(archive, out)])
        time.sleep(float(rng.uniform(0.0, duration)))
        workers = _children(child.pid)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        deadline = time.monotonic() + 15
        while _descendants_alive(workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _descendants_alive(workers), "decoding workers outlived the killed fastsas embed"
        passes[-1].append(0)
        if (out / layout.MANIFEST).exists():
            x, _, rows = _store_rows(out)
            assert rows == rrows[:len(rows)]  # a prefix of the rows, in order
            np.testing.assert_allclose(x, rx[:len(rows)], atol=1e-6)
            passes[-1][-1] = len(rows)
            if len(rows) == len(rrows):  # this run finished: embed again from nothing
                shutil.rmtree(out)
                passes.append([])
    _work_time([EMBED, *_embed_args(archive, out)])  # resume to the end
    x, y, rows = _store_rows(out)
    assert rows == rrows
    np.testing.assert_allclose(x, rx, atol=1e-6)
    np.testing.assert_allclose(y, ry, atol=1e-6)
    with open(out / "skipped.csv") as f:
        assert [r["file"] for r in csv.DictReader(f)] == ["st12/kill.png"]
    return [p for p in passes if p]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_fastsas_embed_killed_at_random_points_resumes_to_the_uninterrupted_store(embed_archive, tmp_path):
    passes = _kill_embed_repeatedly(embed_archive, tmp_path, kills=2, seed=0)
    assert all(p == sorted(p) for p in passes)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_fastsas_embed_killed_many_times_resumes_to_the_uninterrupted_store(embed_archive, tmp_path):
    passes = _kill_embed_repeatedly(embed_archive, tmp_path, kills=25, seed=1)
    assert all(p == sorted(p) for p in passes)
    points = {n for p in passes for n in p}
    # Some kills fell inside the run, between commits (most of a run is loading the model, and
    # its rows come in few chunks, so how many distinct points there are depends on the machine).
    assert points - {0, max(points)}, points
