"""fastsas.dask on a LocalCluster of 2 worker processes: the same numbers as in process
(rounding bounds of the core), identical ranks, a killed worker replaced without changing
the result, and a store with missing chunks refused by name."""
import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest

import fastsas as fs
from fastsas import _core
from fastsas.store import EmbeddingStore, StoreError, open_source

distributed = pytest.importorskip("distributed")  # the `test` extra installs it: never skipped in CI
da = pytest.importorskip("dask.array")
import fastsas.dask as fsd  # noqa: E402
from fastsas.dask.audit_graph import audit_split_every  # noqa: E402
from fastsas.dask.inputs import StoreRows, dask_inputs  # noqa: E402
from fastsas.dask.retrieval_graph import retrieval_ranks  # noqa: E402

from _compare import worst_error  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=40) as cluster, distributed.Client(cluster) as c:
        yield c


def _same_retrieval(got, want):
    assert sorted(got) == sorted(want)
    for k, v in want.items():
        if isinstance(v, np.ndarray):
            assert got[k].dtype == v.dtype and np.array_equal(got[k], v), k
        else:
            assert got[k] == v, k


def _close(got, want, scale_floor, rel, path=""):
    """Equal structure; equal ints, strings and ranks; floats within rel on max(|want|, floor)."""
    if isinstance(want, dict):
        assert sorted(got) == sorted(want), path
        for k in want:
            _close(got[k], want[k], scale_floor, rel, f"{path}/{k}")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            _close(g, w, scale_floor, rel, f"{path}[{i}]")
    elif isinstance(want, float):
        assert abs(got - want) <= rel * max(abs(want), scale_floor) or got == want, (path, got, want)
    else:
        assert got == want, (path, got, want)


@pytest.mark.parametrize("dtype, bound", [(np.float64, 1e-12), (np.float32, 1e-6)])
def test_alignment_equals_in_process(client, dtype, bound):
    x, y = fs.synthetic.paired_embeddings(5000, 24, image_only_factors=2, seed=1, dtype=dtype)
    want = fs.alignment(x, y)
    got = fsd.alignment(x, y, client=client, block_rows=700)  # NumPy input, uneven last block
    assert worst_error(got, want, x, y) <= bound
    assert got["n"] == want["n"] and sorted(got) == sorted(want)
    # Dask arrays with blocks that differ between the two sides are aligned to the images'.
    dx, dy = da.from_array(x, chunks=(1300, 24)), da.from_array(y, chunks=(900, 12))
    assert worst_error(fsd.alignment(dx, dy, client=client, split_every=2), want, x, y) <= bound


def test_moments_is_the_in_process_object(client):
    x, y = fs.synthetic.paired_embeddings(3000, 16, seed=2, dtype=np.float64)
    m = fsd.moments(x, y, client=client, block_rows=500, split_every=3)
    ref = fs.Moments(16).update(x, y)
    assert type(m) is fs.Moments and m.n == ref.n == 3000 and m.dim == 16
    np.testing.assert_allclose(m.covariance(), ref.covariance(), rtol=1e-12, atol=1e-14)
    assert len(m.to_bytes()) == len(ref.to_bytes())


def test_bad_rows_are_named_as_rows_of_the_archive(client):
    x, y = fs.synthetic.paired_embeddings(2000, 12, seed=3, dtype=np.float64)
    x[1234] = np.nan
    with pytest.raises(ValueError, match=r"images has non-finite values .* 1 row: 1234"):
        fsd.alignment(x, y, client=client, block_rows=500)
    y[1501] = 0.0
    with pytest.raises(ValueError, match=r"texts has zero-norm rows .*: 1501"):
        fsd.retrieval(x[:1000], y, client=client, block_rows=400, image_ids=np.arange(1000),
                      text_ids=np.arange(2000) % 1000)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_retrieval_ranks_identical(client, dtype):
    x, y = fs.synthetic.paired_embeddings(3000, 32, seed=4, dtype=dtype)
    want = fs.retrieval(x, y, return_ranks=True)
    _same_retrieval(fsd.retrieval(x, y, return_ranks=True, client=client, block_rows=700), want)


def test_retrieval_several_images_per_id_and_exact_ties(client):
    rng = np.random.default_rng(5)
    texts = rng.standard_normal((800, 16)).astype(np.float32)
    # 3 images per report on average, some reports with none, duplicated rows (exact ties)
    owner = rng.integers(0, 900, 2400)
    images = (texts[np.minimum(owner, 799)] + 0.8 * rng.standard_normal((2400, 16))).astype(np.float32)
    images[100:110] = images[0]
    image_ids, text_ids = owner, np.arange(800)
    want = fs.retrieval(images, texts, image_ids, text_ids, ks=(1, 5), return_ranks=True)
    assert want["i2t_unmatched"] > 0  # ids 800..899 have no report
    got = fsd.retrieval(da.from_array(images, chunks=500), da.from_array(texts, chunks=300), image_ids, text_ids,
                        ks=(1, 5), return_ranks=True, client=client)
    _same_retrieval(got, want)


def test_core_block_counts_sum_to_the_ranks():
    # The C++ entry points alone: any split of both sides gives the in-process ranks.
    rng = np.random.default_rng(6)
    x = rng.standard_normal((700, 12)).astype(np.float32)
    y = (x + 0.7 * rng.standard_normal(x.shape)).astype(np.float32)
    codes = np.arange(700, dtype=np.int32)
    want = _core.retrieval(x, y)
    ithr = _core.retrieval_thresholds(x, y, codes, codes)
    tthr = _core.retrieval_thresholds(y, x, codes, codes)
    ic, tc = np.zeros(700, np.int64), np.zeros(700, np.int64)
    cuts_x, cuts_y = [0, 13, 300, 301, 700], [0, 250, 699, 700]
    for a0, a1 in zip(cuts_x, cuts_x[1:]):
        for b0, b1 in zip(cuts_y, cuts_y[1:]):
            r = _core.retrieval_counts(x[a0:a1], y[b0:b1], codes[a0:a1], codes[b0:b1], ithr[a0:a1], tthr[b0:b1],
                                       tile_rows=7, tile_cols=64)
            ic[a0:a1] += r["image_counts"]
            tc[b0:b1] += r["text_counts"]
    assert np.array_equal(ic + 1, want["image_ranks"]) and np.array_equal(tc + 1, want["text_ranks"])
    with pytest.raises(ValueError, match="image_thresholds must be 1-D with one entry per row"):
        _core.retrieval_counts(x, y, codes, codes, ithr[:5], tthr)
    with pytest.raises(ValueError, match="NaN"):
        _core.retrieval_counts(x, y, codes, codes, np.full(700, np.nan), tthr)


def _numbers(result) -> dict:
    """The audit's findings, without the record of which backend computed them."""
    d = result.to_dict()
    d.pop("backend")
    return d


@pytest.fixture(scope="module")
def demo():
    return fs.synthetic.demo_archive(3000, 24)


def test_audit_equals_in_process(client, demo):
    m = demo["metadata"]
    x, y = demo["images"].astype(np.float64), demo["texts"].astype(np.float64)
    kw = dict(groups=m["modality"], periods=m["year"], image_ids=m["study_id"], text_ids=m["study_id"],
              jackknife_blocks=10)
    want = fs.audit(x, y, chunk_rows=700, **kw)
    got = fsd.audit(x, y, client=client, block_rows=700, **kw)
    assert type(got) is fs.AuditResult
    assert worst_error(got.alignment, want.alignment, x, y) <= 1e-12
    # Everything else: ints, labels, ranks and mismatch rows identical; floats (t statistics
    # of a nearly cancelling imbalance, per-mode rho of tiny modes) within 1e-9.
    _close(_numbers(got), _numbers(want), 1.0, 1e-9)
    assert got.backend == {"moments": "dask", "retrieval": "dask"} and want.backend["moments"] == "cpu"
    assert got.mismatches and got.groups[0]["retrieval_within"]


def test_audit_source_from_a_store(client, demo, tmp_path):
    path = tmp_path / "archive"
    EmbeddingStore.build(path, demo, chunk_rows=512).close()
    source = open_source(path)
    m = source.metadata()
    kw = dict(groups=m["modality"], image_ids=m["study_id"], text_ids=m["study_id"], retrieval="whole")
    want = fs.audit(source, **kw)
    got = fsd.audit_source(path, client=client, **kw)
    assert worst_error(got.alignment, want.alignment, demo["images"], demo["texts"]) <= 1e-6
    _close(_numbers(got), _numbers(want), 1.0, 1e-5)
    assert got.retrieval == want.retrieval  # ranks identical, so every recall is too
    # Without a scheduler or workers nothing changes: the in-process audit itself.
    assert fsd.audit_source(path, **kw).to_dict() == want.to_dict()


def test_cli_audit_on_local_workers_equals_in_process(demo, tmp_path):
    """`fastsas audit STORE --workers 2`: a LocalCluster of 2 processes started and closed by
    the command; the report's numbers are the in-process audit's."""
    import json

    from fastsas.cli import main

    path = tmp_path / "archive"
    EmbeddingStore.build(path, demo, chunk_rows=512).close()
    args = ["audit", str(path), "--group-by", "modality", "--id-column", "study_id", "--retrieval", "whole",
            "--format", "json", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "local")]) == 0
    assert main(args + ["--workers", "2", "--out", str(tmp_path / "dask")]) == 0
    want, got = (json.loads((tmp_path / name / "report.json").read_text()) for name in ("local", "dask"))
    want, got = (d["audit"] if "audit" in d else d for d in (want, got))
    assert got.pop("backend") == {"moments": "dask", "retrieval": "dask"}
    assert want.pop("backend") == {"moments": "cpu", "retrieval": "cpu"}
    assert got["retrieval"] == want["retrieval"] and got["mismatches"] == want["mismatches"]
    _close(got["alignment"], want["alignment"], 1.0, 1e-6)


def test_retrieval_from_a_store_reads_blocks_inside_each_step(tmp_path, monkeypatch):
    """From a store, every (query block, gallery block) step reads its own two blocks, so no
    block of the archive is held in cluster memory between steps; ranks stay identical."""
    import dask

    x, y = fs.synthetic.paired_embeddings(2500, 16, seed=5)
    path = tmp_path / "archive"
    EmbeddingStore.build(path, {"images": x, "texts": y}, chunk_rows=1000).close()
    xs, ys, store = fsd.open_store(path)
    reads = []
    original = StoreRows.read
    monkeypatch.setattr(StoreRows, "read", lambda self: reads.append((self.name, self.start)) or original(self))
    codes = np.arange(2500, dtype=np.int32)
    image_ranks, text_ranks = retrieval_ranks(xs, ys, codes, codes, 8, 1, store)
    done = dask.compute(*(image_ranks + text_ranks), scheduler="sync")
    want = fs.retrieval(x, y, return_ranks=True)
    assert np.array_equal(np.concatenate(done[:3]), want["i2t_ranks"])
    assert np.array_equal(np.concatenate(done[3:]), want["t2i_ranks"])
    steps = 3 * 3  # blocks of 1000, 1000, 500 rows on each side
    assert len(reads) == 2 * steps
    assert sorted(set(reads)) == [(name, s) for name in ("images", "texts") for s in (0, 1000, 2000)]


def test_audit_merges_fewer_states_when_states_are_large():
    """An audit state holds every accumulator's (2d)^2 moments (9.44 MB each at d = 768), so
    merge tasks take fewer states as they grow, keeping a task near AUDIT_MERGE_BYTES (4 GiB)."""
    assert fsd.AUDIT_MERGE_BYTES == 4 << 30
    assert audit_split_every({"blocks": 20, "cells": 0, "periods": 0}, 768, 8) == 8  # 189 MB states
    assert audit_split_every({"blocks": 60, "cells": 0, "periods": 0}, 768, 8) == 5  # 566 MB: 7 - 2
    assert audit_split_every({"blocks": 20, "cells": 100, "periods": 0}, 768, 8) == 2  # 1.1 GB
    assert audit_split_every({"blocks": 20, "cells": 0, "periods": 0}, 64, 3) == 3


def test_store_with_missing_chunks_names_them(client, tmp_path):
    x, y = fs.synthetic.paired_embeddings(2000, 12, seed=8)
    path = tmp_path / "store"
    EmbeddingStore.build(path, x, y, chunk_rows=256).close()
    assert worst_error(fsd.alignment(path, client=client), fs.alignment(x, y), x, y) <= 1e-6
    (path / "images" / "c" / "1" / "0").unlink()
    (path / "texts" / "c" / "6" / "0").unlink()
    with pytest.raises(StoreError) as err:
        fsd.alignment(path, client=client)
    msg = str(err.value)
    assert str(path) in msg and "missing 2 chunk file(s)" in msg
    assert "images/c/1/0" in msg and "texts/c/6/0" in msg


def test_a_killed_worker_is_replaced_and_the_result_is_unchanged(client):
    x, y = fs.synthetic.paired_embeddings(8000, 32, seed=9)
    want = fs.retrieval(x, y, return_ranks=True)
    before = client.run(os.getpid)  # worker address -> worker process id
    out, errors = {}, []

    def run():
        try:
            out["r"] = fsd.retrieval(x, y, return_ranks=True, client=client, block_rows=400)  # 400 tasks
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 60
    busy = {}
    while time.monotonic() < deadline and not busy:
        busy = {w: keys for w, keys in client.processing().items() if keys}
        time.sleep(0.02)
    assert busy, "the run never started on the cluster"
    victim = before[next(iter(busy))]
    os.kill(victim, signal.SIGKILL)
    assert thread.is_alive(), "the run finished before the worker was killed: make it longer"
    thread.join(timeout=300)
    assert not errors, errors
    _same_retrieval(out["r"], want)
    client.wait_for_workers(2, timeout=60)
    after = client.run(os.getpid)
    assert len(after) == 2 and victim not in after.values()


def test_arguments_are_checked(client):
    x, y = fs.synthetic.paired_embeddings(100, 12, seed=10)
    with pytest.raises(TypeError, match="path of an embedding store"):
        fsd.alignment(x)
    with pytest.raises(ValueError, match="block_rows must be a positive integer"):
        fsd.alignment(x, y, block_rows=0)
    with pytest.raises(ValueError, match="at most one of client, scheduler"):
        fsd.alignment(x, y, client=client, scheduler="tcp://127.0.0.1:1")
    with pytest.raises(ValueError, match="paired row by row"):
        fsd.alignment(x, y[:50], client=client)
    with pytest.raises(TypeError, match="float16, float32 or float64"):
        fsd.retrieval(x.astype(np.int32), y, client=client)
    with pytest.raises(ValueError, match="give ids when the counts differ"):
        fsd.retrieval(x, y[:50], client=client)
    with pytest.raises(ValueError, match="workers must be a positive number"):
        fsd.audit_source((x, y), workers=0)
    with pytest.raises(FileNotFoundError, match="no such embedding store"):
        fsd.moments(str(shutil.os.devnull) + "-nothing-here")


def test_retrieval_steps_share_each_blocks_codes():
    """A (query block, gallery block) step refers to its blocks' codes by key: a copy in every
    step made the graph (and its hashing) grow as blocks x n."""
    import pickle

    x = np.random.default_rng(11).standard_normal((4000, 4)).astype(np.float32)
    ix, iy, _ = dask_inputs(x, x, 1000, paired=False)
    codes = np.arange(4000, dtype=np.int32)
    image_ranks, text_ranks = retrieval_ranks(ix, iy, codes, codes, 8, 1)
    graph = {}
    for obj in image_ranks + text_ranks:
        graph.update(dict(obj.__dask_graph__()))
    steps = [task for key, task in graph.items() if "_count_step" in str(key)]
    assert len(steps) == 16
    # 1000 int32 codes of each side would be 8000 bytes; the keys are a few dozen
    assert max(len(pickle.dumps(task, protocol=5)) for task in steps) < 4000


def test_a_progress_hook_gets_the_cluster_steps_instead_of_dasks_bar(capsys):
    x, y = fs.synthetic.paired_embeddings(2000, 16, image_only_factors=2)
    seen = []

    def hook(iterable, description, total):
        seen.append((description, total))
        return iterable

    got = fsd.audit(x, y, groups=np.arange(2000) % 2, block_rows=500, progress=hook, chance_repeats=1)
    descriptions = [d for d, _ in seen]
    assert "moments on the cluster (one pass)" in descriptions and "retrieval on the cluster (row blocks)" in descriptions
    assert any(d.startswith("mismatch statistic") for d in descriptions)  # the client's steps report too
    assert "Completed" not in capsys.readouterr().err  # no Dask ProgressBar interleaved
    assert got.mismatch_test["units_tested"] == 2000 and got.chance["alignment"]["repeats"] == 1


def _same_moment_measures(got, want):
    assert got["fisher_ratio"] == pytest.approx(want["fisher_ratio"], rel=1e-10)
    for key in ("mahalanobis_squared", "euclidean", "cosine", "spread"):
        np.testing.assert_allclose(got["pairwise"][key], want["pairwise"][key], rtol=1e-9, atol=1e-12, err_msg=key)
    assert got["pairwise"]["nearest_class"] == want["pairwise"]["nearest_class"]
    np.testing.assert_array_equal(got.lda_predicted, want.lda_predicted)
    assert got["lda"] == want["lda"] and got["class_counts"] == want["class_counts"]
    np.testing.assert_allclose(got.cosine_silhouettes, want.cosine_silhouettes, rtol=0, atol=1e-12)
    # PCA axes are defined up to sign.
    signs = np.sign(np.sum(got.pca * want.pca, axis=0))
    np.testing.assert_allclose(got.pca * signs, want.pca, rtol=0, atol=1e-4)


def test_separability_moments_on_the_cluster_equal_one_pass_in_process(client, tmp_path):
    rng = np.random.default_rng(11)
    labels = np.array(["effusion", "nodule", "normal", "edema"])[rng.integers(0, 4, 2503)]
    codes = np.unique(labels, return_inverse=True)[1]
    x = rng.normal(size=(2503, 12)) + 3.0 * np.eye(4, 12)[codes] + 5.0  # the mean far from zero
    want = fs.separability(x, labels, ks=(1,), probe=False, euclidean=False, blocks=5)
    # Blocks of 333 rows: their offsets are not multiples of the 5 held-out blocks.
    got = fsd.separability_moments(x, labels, client=client, block_rows=333, blocks=5)
    _same_moment_measures(got, want)
    assert got["knn"] == {} and got.classes == want.classes
    state, classes = fsd.class_moments(x, labels, client=client, block_rows=500)
    assert classes == list(want.classes)
    np.testing.assert_array_equal(state.counts, want.state.counts)
    np.testing.assert_allclose(state.within_scatter(2), want.state.within_scatter(2), rtol=1e-11, atol=1e-9)

    # A store, with the labels named as a metadata column.
    demo = fs.synthetic.demo_archive(700, 32, seed=3)
    EmbeddingStore.build(tmp_path / "s", demo, chunk_rows=256).close()
    got = fsd.separability_moments(tmp_path / "s", "modality", modality="texts", client=client)
    want = fs.separability(demo["texts"], demo["metadata"]["modality"], ks=(1,), probe=False, euclidean=False)
    _same_moment_measures(got, want)


def test_separability_moments_refuse_bad_input_by_name(client):
    x = np.random.default_rng(2).normal(size=(400, 6))
    labels = np.arange(400) % 3
    with pytest.raises(ValueError, match="labels has a single class"):
        fsd.separability_moments(x, np.zeros(400), client=client)
    with pytest.raises(ValueError, match="labels"):
        fsd.separability_moments(x, labels[:300], client=client)
    with pytest.raises(ValueError, match="shrinkage must lie in"):
        fsd.separability_moments(x, labels, shrinkage=2.0, client=client)
    bad = x.copy()
    bad[321] = np.nan
    with pytest.raises(ValueError, match=r"embeddings has non-finite values \(NaN or Inf\) in 1 row: 321;"):
        fsd.separability_moments(bad, labels, client=client, block_rows=100)
    bad[321], bad[7] = 1.0, 0.0
    with pytest.raises(ValueError, match="embeddings has zero-norm rows .* in 1 row: 7;"):
        fsd.class_moments(bad, labels, client=client, block_rows=100)
    with pytest.raises(ValueError, match="modality must be 'images' or 'texts'"):
        fsd.separability_moments("some/store", "modality", modality="both", client=client)
