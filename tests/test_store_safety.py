"""The store loses and damages nothing: non-finite rows are refused at append (before and
after the float32 conversion), create(overwrite=True) takes the writer lock before removing
anything and replaces only what fastsas made a store, a creation interrupted before its
first commit is recoverable; and a compressed .npz is checked from its headers before a
byte is extracted."""
import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from fastsas.io import NpzPairSource, StoreError
from fastsas.store import EmbeddingStore, layout

DIM = 8


def _rows(n, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, DIM)).astype(dtype), rng.standard_normal((n, DIM)).astype(dtype)


# -- non-finite rows -------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, message", [
    (np.nan, r"images has non-finite values \(NaN or Inf\) in 2 rows: 3, 7 \(rows of this append\)"),
    (np.inf, r"images has non-finite values \(NaN or Inf\) in 2 rows: 3, 7 \(rows of this append\)"),
    (1e300, r"images has values beyond float32's range .* in 2 rows: 3, 7 \(rows of this append\)"),
])
def test_append_refuses_non_finite_rows_and_changes_nothing(tmp_path, bad, message):
    store = EmbeddingStore.create(tmp_path / "s", DIM, chunk_rows=4)
    x, y = _rows(10)
    x[3, 1] = x[7, 5] = bad
    with pytest.raises(ValueError, match=message + ".*a store holds finite embeddings only"):
        store.append(x, y)
    assert store.n_pending == 0 and store.n_done == 0
    with pytest.raises(ValueError, match=r"texts has .* in 2 rows: 3, 7"):
        store.append(y, x)
    store.append(*_rows(10, seed=1))
    store.close()
    reopened = EmbeddingStore.open(tmp_path / "s")
    assert reopened.n == 10 and all(np.isfinite(np.asarray(a)).all() for a in reopened.arrays())


def test_float32_max_is_kept_and_beyond_it_is_refused(tmp_path):
    store = EmbeddingStore.create(tmp_path / "s", DIM, chunk_rows=4)
    edge = np.full((2, DIM), float(np.finfo(np.float32).max))
    store.append(edge, -edge)  # exactly representable: stored as it is
    with pytest.raises(ValueError, match="beyond float32's range"):
        store.append(edge * 1.0001, edge)
    store.close()
    assert np.all(np.asarray(EmbeddingStore.open(tmp_path / "s").arrays()[0]) == np.finfo(np.float32).max)


# -- overwrite, the lock, foreign directories, half-created stores ---------------------------------------
def test_overwrite_takes_the_lock_before_removing_anything(tmp_path):
    path = tmp_path / "s"
    a = EmbeddingStore.create(path, DIM, chunk_rows=4)
    a.append(*_rows(6))  # one chunk committed, two rows buffered
    with pytest.raises(StoreError, match="open for writing by another writer"):
        EmbeddingStore.create(path, DIM, chunk_rows=4, overwrite=True)
    assert EmbeddingStore.open(path).n == 4  # A's committed chunk is still there
    a.append(*_rows(2, seed=2))
    a.close()
    x, _ = _rows(6)
    stored = np.asarray(EmbeddingStore.open(path).arrays()[0])
    assert stored.shape == (8, DIM) and np.array_equal(stored[:6], x.astype(np.float32))
    b = EmbeddingStore.create(path, DIM, chunk_rows=4, overwrite=True)  # A closed: now it may
    b.append(*_rows(3, seed=3))
    b.close()
    assert EmbeddingStore.open(path).n == 3


def test_overwrite_never_deletes_a_directory_fastsas_did_not_make_a_store(tmp_path):
    zarr_dataset = tmp_path / "other"
    (zarr_dataset / "arr").mkdir(parents=True)
    (zarr_dataset / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    (zarr_dataset / "arr" / "zarr.json").write_text("{}")
    with pytest.raises(FileExistsError, match="is not empty and is not an embedding store"):
        EmbeddingStore.create(zarr_dataset, DIM, overwrite=True)
    assert sorted(p.name for p in zarr_dataset.iterdir()) == ["arr", "zarr.json"]  # untouched, no marker


def test_a_store_written_before_the_marker_is_still_replaceable(tmp_path):
    path = tmp_path / "old"
    EmbeddingStore.build(path, *_rows(5), chunk_rows=4).close()
    (path / layout.MARKER).unlink()  # as stores were written before the marker existed
    assert layout.is_store_directory(path)
    EmbeddingStore.create(path, DIM, overwrite=True).close()
    assert EmbeddingStore.open(path).n == 0


def _die_in_create(path, when):
    """A child process that dies (os._exit) inside EmbeddingStore.create."""
    child = textwrap.dedent(f"""
        import os, sys
        import fastsas.store.embedding_store as es
        original = es.write_json
        def dying(target, obj):
            if target.name == {when!r}:
                os._exit(9)
            original(target, obj)
        es.write_json = dying
        es.EmbeddingStore.create(sys.argv[1], {DIM}, overwrite=True)
    """)
    done = subprocess.run([sys.executable, "-c", child, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 9, done.stderr


def test_a_crash_inside_create_leaves_a_recoverable_store(tmp_path):
    path = tmp_path / "half"
    _die_in_create(path, "manifest.json")
    assert layout.is_half_created(path)
    with pytest.raises(StoreError, match="creation .* was interrupted before its first commit.*holds no rows"):
        EmbeddingStore.open(path)
    store = EmbeddingStore.create(path, DIM, chunk_rows=4)  # no overwrite needed: it holds no rows
    store.append(*_rows(5))
    store.close()
    assert EmbeddingStore.open(path).n == 5


def test_a_crash_while_overwriting_leaves_a_recoverable_store(tmp_path):
    path = tmp_path / "s"
    EmbeddingStore.build(path, *_rows(9), chunk_rows=4).close()
    _die_in_create(path, "zarr.json")  # the old store emptied, the new one not yet written
    assert layout.is_half_created(path)
    EmbeddingStore.create(path, DIM).close()
    assert EmbeddingStore.open(path).n == 0


def test_a_store_that_lost_its_manifest_is_not_called_half_created(tmp_path):
    path = tmp_path / "s"
    EmbeddingStore.build(path, *_rows(9), chunk_rows=4).close()
    (path / "manifest.json").unlink()
    with pytest.raises(StoreError, match="is damaged \\(it has chunk files but no manifest"):
        EmbeddingStore.open(path)
    with pytest.raises(FileExistsError, match="already holds an embedding store"):
        EmbeddingStore.create(path, DIM)
    assert (path / "images" / "c" / "0" / "0").exists()


# -- .npz checks before extraction -----------------------------------------------------------------------
def test_a_compression_bomb_is_refused_before_extraction(tmp_path):
    path = tmp_path / "bomb.npz"
    zeros = np.zeros((140000, 128), np.float32)  # 72 MB of zeros: a few hundred KB compressed
    np.savez_compressed(path, images=zeros, texts=zeros)
    assert os.path.getsize(path) < 1 << 20
    extract = tmp_path / "extract"
    extract.mkdir()
    with pytest.raises(StoreError, match=r"would expand to 71,680,128 \(\d[\d,]* to 1.*not extracted.*np\.savez"):
        NpzPairSource(path, extract_dir=extract)
    assert not any(extract.iterdir())


def test_members_that_do_not_pair_are_refused_before_extraction(tmp_path):
    path = tmp_path / "unpaired.npz"
    x, y = _rows(100, dtype=np.float32)
    np.savez_compressed(path, images=x, texts=y[:90])
    extract = tmp_path / "extract"
    extract.mkdir()
    with pytest.raises(StoreError, match="images has 100 rows but texts has 90"):
        NpzPairSource(path, extract_dir=extract)
    assert not any(extract.iterdir())


def test_a_member_larger_than_its_header_says_is_refused(tmp_path):
    import io

    buf = io.BytesIO()
    np.save(buf, _rows(10, dtype=np.float32)[0])
    member = buf.getvalue() + b"\0" * 4096
    path = tmp_path / "padded.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("images.npy", member)
        zf.writestr("texts.npy", buf.getvalue())
    with pytest.raises(StoreError, match=r"\(array 'images'\) holds 4544 bytes but its \.npy header describes 448"):
        NpzPairSource(path)


def test_extraction_that_does_not_fit_is_refused(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    path = tmp_path / "pairs.npz"
    np.savez_compressed(path, images=_rows(200, dtype=np.float32)[0], texts=_rows(200, dtype=np.float32)[1])
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(10 ** 6, 10 ** 6 - 1000, 1000))
    with pytest.raises(StoreError, match=r"expand to 13,056 bytes, but .* has only 1,000 bytes free; pass extract_dir="):
        NpzPairSource(path)


def test_corrupt_compressed_npz_raises_store_error_only(tmp_path):
    path = tmp_path / "pairs.npz"
    np.savez_compressed(path, images=_rows(300, dtype=np.float32)[0], texts=_rows(300, dtype=np.float32)[1])
    raw = path.read_bytes()
    rng = np.random.default_rng(7)
    for trial in range(150):
        damaged = bytearray(raw)
        for at in rng.integers(0, len(raw), int(rng.integers(1, 4))):
            damaged[int(at)] = int(rng.integers(256))
        (tmp_path / "bad.npz").write_bytes(bytes(damaged))
        try:
            with NpzPairSource(tmp_path / "bad.npz") as source:
                for _ in source.iter_chunks(128):
                    pass
        except StoreError as exc:  # ColumnNotFoundError is one too
            assert str(tmp_path / "bad.npz") in str(exc)
