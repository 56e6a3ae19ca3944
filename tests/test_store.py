"""The embedding store (write in chunks, interrupt, resume, read back bit-identical) and
the one reader interface over every input (store, .npy pair, .npz, Parquet, arrays)."""
import filecmp
import gc
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastsas as fs
from fastsas.store import (ColumnNotFoundError, EmbeddingStore, NpzPairSource, ParquetPairSource, StoreArray,
                           StoreError, open_source)

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

N, DIM, CR = 3000, 32, 512  # 512 x 32 float32 = 64 KiB per chunk: whole pages, so arrays() maps
COLUMNS = ("study_id", "modality", "body_part", "site", "year")


@pytest.fixture(scope="module")
def demo():
    return fs.synthetic.demo_archive(N, DIM)


def _rows(demo, start, stop):
    return (demo["images"][start:stop], demo["texts"][start:stop],
            {k: v[start:stop] for k, v in demo["metadata"].items()})


def _write(path, demo, start=0, stop=N, step=700, store=None, close=True, **kw):
    store = store or EmbeddingStore.create(path, DIM, chunk_rows=kw.pop("chunk_rows", CR), **kw)
    for s in range(start, stop, step):
        store.append(*_rows(demo, s, min(s + step, stop)))
    if close:
        store.close()
    return store


def _same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def _assert_same_store(path, reference, demo):
    a, b = EmbeddingStore.open(path), EmbeddingStore.open(reference)
    assert (a.n, a.chunks_done, a.complete) == (b.n, b.chunks_done, b.complete) == (N, 6, True)
    for name in ("images", "texts"):
        for i in range(a.chunks_done):  # the chunk files themselves are byte-identical
            assert filecmp.cmp(a._chunk_file(name, i), b._chunk_file(name, i), shallow=False)
    x, y = a.arrays()
    assert _same_bits(x, demo["images"]) and _same_bits(y, demo["texts"])
    got = a.metadata()
    assert list(got) == list(COLUMNS)
    for key in COLUMNS:
        assert np.array_equal(got[key], demo["metadata"][key]), key


@pytest.fixture(scope="module")
def written(demo, tmp_path_factory):
    path = tmp_path_factory.mktemp("stores") / "reference"
    _write(path, demo, model="demo-encoder", notes="synthetic")
    return path


# -- round trip --------------------------------------------------------------------------------
def test_round_trip_bit_identical(written, demo):
    store = EmbeddingStore.open(written)
    assert (store.n, store.dim, store.chunk_rows, store.chunks_done) == (N, DIM, CR, 6)
    assert store.complete and store.model == "demo-encoder" and store.notes == "synthetic"
    m = json.loads((written / "manifest.json").read_text())
    assert m["format_version"] == 1 and m["dtype"] == "float32" and m["chunks_done"] == 6 and m["n"] == N
    assert (written / "metadata.parquet").exists() and not any((written / "metadata").iterdir())
    assert not list(written.rglob("*.partial"))

    x, y = store.arrays()
    assert isinstance(x, np.ndarray) and not x.flags.writeable  # chunk files mapped into one range
    assert _same_bits(x, demo["images"]) and _same_bits(y, demo["texts"])
    for chunk_rows in (97, 512, 1000, 5000):
        for prefetch in (True, False):
            parts = [(cx.copy(), cy.copy()) for cx, cy in store.iter_chunks(chunk_rows, prefetch=prefetch)]
            assert [len(p[0]) for p in parts[:-1]] == [chunk_rows] * (len(parts) - 1)
            assert _same_bits(np.concatenate([p[0] for p in parts]), demo["images"])
            assert _same_bits(np.concatenate([p[1] for p in parts]), demo["texts"])

    # random access without the contiguous map: per-chunk memory maps
    sx, sy = store.arrays(mapped=False)
    assert isinstance(sx, StoreArray) and sx.shape == (N, DIM) and len(sy) == N
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(N, 200, replace=False))
    for key in (rows, rows[::-1], np.arange(N) % 7 == 0, slice(100, 2900, 3), -1, (rows, slice(0, 5))):
        for arr, ref in ((x, demo["images"]), (sx, demo["images"]), (sy, demo["texts"])):
            assert _same_bits(np.asarray(arr[key]), ref[key])
    assert _same_bits(np.asarray(sx), demo["images"])

    # any Zarr v3 reader sees the same arrays
    zarr = pytest.importorskip("zarr")
    zx, zy = store.zarr_arrays()
    assert zx.shape == (N, DIM) and zx.chunks == (CR, DIM)
    assert _same_bits(zx[:], demo["images"]) and _same_bits(zy[:], demo["texts"])
    assert _same_bits(zx[rows], demo["images"][rows])
    assert zarr.open_group(str(written), mode="r").attrs["fastsas"]["format_version"] == 1

    meta = store.metadata()
    assert store.columns == list(COLUMNS) == list(meta)
    for key in COLUMNS:
        assert np.array_equal(meta[key], demo["metadata"][key])
    assert meta["study_id"].dtype.kind == "U" and meta["year"].dtype == np.int64
    assert np.array_equal(store.column("modality"), demo["metadata"]["modality"])
    assert store.metadata_table().num_rows == N
    assert pq.read_table(written / "metadata.parquet").num_rows == N


def test_build_from_any_source_and_no_metadata(tmp_path, demo):
    store = EmbeddingStore.build(tmp_path / "b", demo, chunk_rows=1024)
    assert _same_bits(store.arrays()[1], demo["texts"]) and store.columns == list(COLUMNS)
    bare = EmbeddingStore.build(tmp_path / "bare", demo["images"][:1500], demo["texts"][:1500], chunk_rows=1000)
    assert bare.metadata() == {} and bare.columns == [] and bare.chunks_done == 2
    assert isinstance(bare.arrays()[0], StoreArray)  # 1000 x 32 x 4 bytes is not whole pages
    assert _same_bits(np.asarray(bare.arrays()[0]), demo["images"][:1500])
    with pytest.raises(FileExistsError, match="already holds an embedding store"):
        EmbeddingStore.create(tmp_path / "bare", DIM)
    EmbeddingStore.create(tmp_path / "bare", DIM, overwrite=True).close()
    assert EmbeddingStore.open(tmp_path / "bare").n == 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "precious.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not an embedding store"):
        EmbeddingStore.create(tmp_path / "other", DIM, overwrite=True)


def test_refused_appends_change_nothing(tmp_path, demo):
    x, y, meta = _rows(demo, 0, 100)
    store = EmbeddingStore.create(tmp_path / "s", DIM, chunk_rows=CR, columns={
        "study_id": "string", "modality": "string", "body_part": "string", "site": "string", "year": "int64"})
    with pytest.raises(ValueError, match=r"images must have shape \(rows, 32\)"):
        store.append(x[:, :16], y, meta)
    with pytest.raises(ValueError, match="paired row by row: got 100 and 99"):
        store.append(x, y[:99], meta)
    with pytest.raises(TypeError, match="float16, float32 or float64"):
        store.append(x.astype(np.int32), y, meta)
    with pytest.raises(ValueError, match=r"missing \['site'\]"):
        store.append(x, y, {k: v for k, v in meta.items() if k != "site"})
    with pytest.raises(ValueError, match="column 'year' has 99 values but there are 100 rows"):
        store.append(x, y, {**meta, "year": meta["year"][:99]})
    with pytest.raises(ValueError, match="has metadata columns"):
        store.append(x, y)
    assert store.n_pending == 0 and store.n_done == 0
    store.append(x, y, pa.table(meta))  # an Arrow table works as well
    assert store.n_pending == 100
    store.close()
    with pytest.raises(ValueError, match="this writer is closed"):
        store.append(x, y, meta)
    with pytest.raises(ValueError, match="open for reading"):
        EmbeddingStore.open(tmp_path / "s").append(x, y, meta)


# -- interrupt and resume ------------------------------------------------------------------------
def test_interrupted_write_resumes_bit_identical(tmp_path, demo, written):
    path = tmp_path / "interrupted"
    store = _write(path, demo, 0, 1700, close=False)  # 3 chunks of 512 finished, 164 rows buffered
    assert (store.n_done, store.n_pending, store.chunks_done) == (1536, 164, 3)
    # the writer dies while writing chunk 3: a half-written temporary images chunk, a chunk
    # file already renamed into place for texts, a half-written metadata part
    size = CR * DIM * 4
    (path / "images" / "c" / "3").mkdir()
    (path / "images" / "c" / "3" / "0.partial").write_bytes(b"\x01" * (size // 2))
    (path / "texts" / "c" / "3").mkdir()
    (path / "texts" / "c" / "3" / "0").write_bytes(b"\x02" * size)
    (path / "metadata" / "part-000003.parquet.partial").write_bytes(b"PAR1 half")
    del store  # no close(): the process is gone, and with it the lock
    gc.collect()

    reader = EmbeddingStore.open(path)  # readable meanwhile: the finished chunks
    assert reader.n == 1536 and not reader.complete
    assert _same_bits(reader.arrays()[0], demo["images"][:1536])
    assert np.array_equal(reader.column("study_id"), demo["metadata"]["study_id"][:1536])

    resumed = EmbeddingStore.open(path, mode="a")
    assert (resumed.n_done, resumed.chunks_done, resumed.n_pending) == (1536, 3, 0)
    assert not list(path.rglob("*.partial")) and not (path / "texts" / "c" / "3").exists()
    with pytest.raises(StoreError, match="open for writing by another writer"):
        EmbeddingStore.open(path, mode="a")
    _write(path, demo, resumed.n_done, N, step=333, store=resumed)
    _assert_same_store(path, written, demo)


def test_crashed_process_resumes_bit_identical(tmp_path, demo, written):
    """A real crash: a child process dies (os._exit) half way through writing a chunk file."""
    path = tmp_path / "crashed"
    child = textwrap.dedent(f"""
        import os, sys
        import fastsas as fs
        import fastsas.store as st
        import fastsas.store.embedding_store as writer
        demo = fs.synthetic.demo_archive({N}, {DIM})
        rows = lambda a, b: (demo["images"][a:b], demo["texts"][a:b],
                             {{k: v[a:b] for k, v in demo["metadata"].items()}})
        store = st.EmbeddingStore.create(sys.argv[1], {DIM}, chunk_rows={CR})
        store.append(*rows(0, 2100))          # chunks 0..3 finished, 52 rows buffered

        def dying_write(path, data):          # writes half of the next file, then the process dies
            with open(path.with_name(path.name + ".partial"), "wb") as f:
                f.write(bytes(memoryview(data))[: len(memoryview(data)) // 2] if not callable(data) else b"PAR1")
            os._exit(3)

        writer.write_atomic = dying_write
        store.append(*rows(2100, 2600))       # fills chunk 4: dies while writing it
    """)
    done = subprocess.run([sys.executable, "-c", child, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert list(path.rglob("*.partial"))
    store = EmbeddingStore.open(path, mode="a")
    assert (store.n_done, store.chunks_done) == (2048, 4)
    _write(path, demo, store.n_done, N, step=500, store=store)
    _assert_same_store(path, written, demo)


def test_closed_store_with_short_last_chunk_grows(tmp_path, demo, written):
    path = tmp_path / "grown"
    _write(path, demo, 0, 1000)  # closed: 488-row last chunk, metadata compacted
    first = EmbeddingStore.open(path)
    assert (first.n, first.chunks_done, first.complete) == (1000, 2, True)
    store = EmbeddingStore.open(path, mode="a")
    assert (store.n_done, store.n_pending, store.complete) == (1000, 0, False)
    _write(path, demo, 1000, N, step=640, store=store)
    _assert_same_store(path, written, demo)


# -- every reader, the same audit -----------------------------------------------------------------
def _vector_column(x, fixed):
    values = pa.array(x.reshape(-1))
    if fixed:
        return pa.FixedSizeListArray.from_arrays(values, x.shape[1])
    return pa.ListArray.from_arrays(pa.array(np.arange(0, x.size + 1, x.shape[1], dtype=np.int32)), values)


def _parquet(path, demo, fixed=True, row_group_size=None, images=None):
    columns = {"image_embedding": _vector_column(demo["images"] if images is None else images, fixed),
               "text_embedding": _vector_column(demo["texts"], fixed), **demo["metadata"]}
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def test_every_reader_gives_the_same_audit(tmp_path, demo, written):
    x, y, meta = demo["images"], demo["texts"], demo["metadata"]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.savez(tmp_path / "stored.npz", images=x, texts=y)
    np.savez_compressed(tmp_path / "compressed.npz", images=x, texts=y)
    sources = {
        "store": open_source(written),
        "npy pair": open_source(tmp_path / "x.npy", tmp_path / "y.npy", metadata=meta),
        "npz": open_source(tmp_path / "stored.npz", metadata=meta),
        "npz compressed": open_source(tmp_path / "compressed.npz", metadata=pa.table(meta)),
        "parquet fixed-size lists": open_source(_parquet(tmp_path / "f.parquet", demo)),
        "parquet lists, small row groups": open_source(_parquet(tmp_path / "l.parquet", demo, False, 700)),
        "arrays": open_source(x, y, metadata=meta),
        "demo dict": open_source(demo),
        "arrays tuple": open_source((x, y), metadata=meta),
    }
    reference = fs.audit(x, y, groups=meta["modality"], periods=meta["year"], image_ids=meta["study_id"],
                         text_ids=meta["study_id"], chunk_rows=1000, jackknife_blocks=10)
    expected = json.dumps(reference.to_dict(), sort_keys=True)
    assert reference.groups and reference.mismatches and reference.drift
    for name, source in sources.items():
        assert (source.n, source.dim) == (N, DIM), name
        assert list(source.metadata()) == list(COLUMNS), name
        ids = source.column("study_id")
        result = fs.audit(source, groups=source.column("modality"), periods=source.metadata()["year"],
                          image_ids=ids, text_ids=ids, chunk_rows=1000, jackknife_blocks=10)
        assert json.dumps(result.to_dict(), sort_keys=True) == expected, name
        sx, sy = source.arrays()
        assert _same_bits(np.asarray(sx[np.arange(0, N, 5)]), x[::5]), name
    stored = sources["npz"]
    assert all(path == tmp_path / "stored.npz" for path, *_ in stored._parts)  # mapped in place, not copied
    compressed = sources["npz compressed"]
    tmp = compressed._tmpdir
    assert tmp and os.path.isdir(tmp)
    compressed.close()
    assert not os.path.exists(tmp)


# -- clear errors -----------------------------------------------------------------------------------
def _damage_missing_chunk(p):
    (p / "images" / "c" / "2" / "0").unlink()
    return r"images/c/2/0 is missing: chunk 2 of images \(rows 1024\.\.1535\)"


def _damage_short_chunk(p):
    f = p / "texts" / "c" / "5" / "0"
    f.write_bytes(f.read_bytes()[:1000])
    return r"texts/c/5/0 has 1000 bytes but a chunk of 512 x 32 float32 takes 65536"


def _damage_manifest_garbage(p):
    (p / "manifest.json").write_text('{"format": "fastsas-embedding-st')
    return r"manifest\.json is unreadable, not valid JSON"


def _damage_manifest_version(p):
    m = json.loads((p / "manifest.json").read_text())
    (p / "manifest.json").write_text(json.dumps({**m, "format_version": 99}))
    return r"manifest\.json has format version 99; this fastsas reads version 1"


def _damage_manifest_counts(p):
    m = json.loads((p / "manifest.json").read_text())
    (p / "manifest.json").write_text(json.dumps({**m, "chunks_done": 9}))
    return r"manifest\.json: n=3000 rows do not fill chunks_done=9 chunks"


def _damage_manifest_missing(p):
    (p / "manifest.json").unlink()
    return r"manifest\.json is missing: the embedding store .* is damaged \(it has chunk files"


def _damage_zarr_dtype(p):
    meta = json.loads((p / "images" / "zarr.json").read_text())
    (p / "images" / "zarr.json").write_text(json.dumps({**meta, "data_type": "float64"}))
    return r"images/zarr\.json does not describe this store's images: data_type is 'float64'"


def _damage_metadata_missing(p):
    (p / "metadata.parquet").unlink()
    return r"metadata\.parquet is missing"


@pytest.mark.parametrize("damage", [_damage_missing_chunk, _damage_short_chunk, _damage_manifest_garbage,
                                    _damage_manifest_version, _damage_manifest_counts, _damage_manifest_missing,
                                    _damage_zarr_dtype, _damage_metadata_missing])
def test_corrupt_or_truncated_store_names_the_file(tmp_path, written, damage):
    path = tmp_path / "damaged"
    shutil.copytree(written, path)
    pattern = damage(path)
    for mode in ("r", "a"):
        with pytest.raises(StoreError, match=pattern) as info:
            EmbeddingStore.open(path, mode=mode)
        assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    with pytest.raises(StoreError, match=pattern):
        fs.audit(open_source(path))


def test_unreadable_metadata_parquet_names_the_file(tmp_path, written):
    path = tmp_path / "damaged"
    shutil.copytree(written, path)
    (path / "metadata.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    store = EmbeddingStore.open(path)  # the embeddings are fine
    with pytest.raises(StoreError, match=r"metadata\.parquet is unreadable as Parquet"):
        store.metadata()
    with pytest.raises(StoreError, match=r"metadata\.parquet is unreadable as Parquet"):
        store.column("modality")


def test_missing_columns_are_named_with_the_available_ones(tmp_path, demo, written):
    store = EmbeddingStore.open(written)
    with pytest.raises(ColumnNotFoundError, match="has no column 'ward'; available columns: study_id, modality, "
                                                  "body_part, site, year") as info:
        store.column("ward")
    assert isinstance(info.value, KeyError) and str(info.value).startswith(str(written))
    path = _parquet(tmp_path / "p.parquet", demo)
    with pytest.raises(ColumnNotFoundError, match=r"p\.parquet has no column 'img'; available columns: "
                                                  r"image_embedding, text_embedding, study_id"):
        open_source(path, vector_columns=("img", "text_embedding"))
    with pytest.raises(ColumnNotFoundError, match=r"has no column 'ward'"):
        open_source(path).column("ward")
    src = open_source(path, vector_columns=("text_embedding", "image_embedding"))  # any two columns
    assert _same_bits(src.arrays()[0], demo["texts"])
    with pytest.raises(StoreError, match=r"column 'modality' holds string, not a list of floats"):
        open_source(path, vector_columns=("image_embedding", "modality"))
    np.savez(tmp_path / "other.npz", a=demo["images"], texts=demo["texts"])
    with pytest.raises(ColumnNotFoundError, match=r"other\.npz has no array 'images'; it holds: a, texts"):
        open_source(tmp_path / "other.npz")
    with pytest.raises(ColumnNotFoundError, match="has no column 'ward'; available columns: study_id"):
        open_source(demo).column("ward")


def test_ragged_vector_column_is_refused(tmp_path, demo):
    images = pa.array([list(v) for v in demo["images"][:50]] + [list(demo["images"][50][:31])]
                      + [list(v) for v in demo["images"][51:60]], type=pa.list_(pa.float32()))
    table = pa.table({"image_embedding": images,
                      "text_embedding": _vector_column(demo["texts"][:60], fixed=False)})
    pq.write_table(table, tmp_path / "ragged.parquet")
    source = open_source(tmp_path / "ragged.parquet")
    assert (source.n, source.dim) == (60, DIM)
    pattern = r"ragged\.parquet: vector column 'image_embedding' is ragged: row 50 has 31 values but the " \
              r"embeddings have 32"
    with pytest.raises(StoreError, match=pattern):
        source.arrays()
    with pytest.raises(StoreError, match=pattern):
        fs.audit(source, jackknife_blocks=5)
    nulls = pa.table({"image_embedding": pa.array([list(v) for v in demo["images"][:3]] + [None],
                                                  type=pa.list_(pa.float32(), DIM)),
                      "text_embedding": _vector_column(demo["texts"][:4], fixed=True)})
    pq.write_table(nulls, tmp_path / "nulls.parquet")
    with pytest.raises(StoreError, match=r"nulls\.parquet: column 'image_embedding' has no embedding \(null\) "
                                         r"at row 3"):
        next(open_source(tmp_path / "nulls.parquet").iter_chunks())


def test_open_source_refuses_what_it_cannot_read(tmp_path, demo):
    np.save(tmp_path / "x.npy", demo["images"])
    with pytest.raises(ValueError, match=r"x\.npy is one \.npy file"):
        open_source(tmp_path / "x.npy")
    with pytest.raises(FileNotFoundError, match=r"nowhere\.npz: no such file"):
        open_source(tmp_path / "nowhere.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match=r"empty/manifest\.json is missing"):
        open_source(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(StoreError, match=r"notes\.txt: not a kind of archive"):
        open_source(tmp_path / "notes.txt")
    data = (tmp_path / "x.npy").read_bytes()
    np.savez(tmp_path / "cut.npz", images=demo["images"], texts=demo["texts"])
    whole = (tmp_path / "cut.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(StoreError, match=r"cut\.npz is not a readable \.npz file"):
        open_source(tmp_path / "cut.npz")
    (tmp_path / "junk.parquet").write_bytes(data[:100])
    with pytest.raises(StoreError, match=r"junk\.parquet is unreadable as Parquet"):
        open_source(tmp_path / "junk.parquet")
    np.savez(tmp_path / "obj.npz", images=np.array([{"a": 1}], dtype=object), texts=demo["texts"])
    with pytest.raises(StoreError, match="never unpickles"):
        NpzPairSource(tmp_path / "obj.npz")
    assert isinstance(open_source(_parquet(tmp_path / "p.bin", demo)), ParquetPairSource)  # told by its bytes
