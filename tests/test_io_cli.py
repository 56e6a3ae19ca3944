"""Streaming .npy readers and the `fastsas` command."""
import json

import numpy as np
import pytest

import fastsas as fs
from fastsas.cli import main
from fastsas.io import iter_npy_chunks, iter_npy_pairs


@pytest.fixture
def archive(tmp_path):
    x, y = fs.synthetic.paired_embeddings(10_000, 24, image_only_factors=3, seed=0)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return tmp_path / "x.npy", tmp_path / "y.npy", x, y


@pytest.mark.parametrize("prefetch", [True, False])
@pytest.mark.parametrize("chunk", [1, 999, 10_000, 50_000])
def test_chunks_cover_the_file_in_order(archive, prefetch, chunk):
    px, py, x, y = archive
    got_x, got_y = [], []
    for cx, cy in iter_npy_pairs(px, py, chunk if chunk > 1 else 777, prefetch=prefetch):
        got_x.append(cx.copy()); got_y.append(cy.copy())
    assert np.array_equal(np.concatenate(got_x), x) and np.array_equal(np.concatenate(got_y), y)
    single = np.concatenate([c.copy() for c in iter_npy_chunks(px, 4096, prefetch=prefetch)])
    assert np.array_equal(single, x)


def test_streamed_moments_equal_in_memory(archive):
    px, py, x, y = archive
    m = fs.Moments.from_chunks(iter_npy_pairs(px, py, 1234))
    assert m.to_bytes() == fs.Moments.from_chunks(
        (x[i:i + 1234], y[i:i + 1234]) for i in range(0, len(x), 1234)).to_bytes()


def test_bad_files_are_named(tmp_path, archive):
    px, py, x, _ = archive
    data = px.read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.npy is truncated"):
        next(iter_npy_chunks(tmp_path / "cut.npy"))
    (tmp_path / "junk.npy").write_bytes(b"not a numpy file at all")
    with pytest.raises(ValueError, match=r"junk\.npy is not a valid \.npy file"):
        next(iter_npy_chunks(tmp_path / "junk.npy"))
    np.save(tmp_path / "f.npy", np.asfortranarray(x))
    with pytest.raises(ValueError, match="Fortran-ordered"):
        next(iter_npy_chunks(tmp_path / "f.npy"))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="never unpickles"):
        next(iter_npy_chunks(tmp_path / "obj.npy"))
    np.save(tmp_path / "short.npy", x[:10])
    with pytest.raises(ValueError, match="has 10000 rows but .*short.npy has 10"):
        next(iter_npy_pairs(px, tmp_path / "short.npy"))
    with pytest.raises(FileNotFoundError, match="missing.npy: no such file"):
        next(iter_npy_chunks(tmp_path / "missing.npy"))


def test_cli_align_json_matches_api(archive, capsys):
    px, py, x, y = archive
    assert main(["align", str(px), str(py), "--json", "--chunk-rows", "3000"]) == 0
    out = json.loads(capsys.readouterr().out)
    want = fs.alignment(x, y)
    for k in ("sas_i2t", "sas_t2i", "cka", "svcca", "rmg"):
        assert out[k] == pytest.approx(want[k], rel=1e-6)


def test_cli_demo_prints_every_metric(capsys):
    assert main(["demo", "--n", "3000", "--dim", "32"]) == 0
    out = capsys.readouterr().out
    for k in ("sas_i2t", "sas_t2i", "sas_imbalance", "cka", "coral", "svcca", "delta_cos", "rmg"):
        assert k in out


def test_cli_bad_input_exits_2_with_one_line(archive, tmp_path, capsys):
    px, _, x, _ = archive
    assert main(["align", str(px), str(tmp_path / "nope.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope.npy: no such file" in err
    bad = x.copy(); bad[5, 1] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    assert main(["align", str(tmp_path / "bad.npy"), str(px)]) == 2
    assert "images has non-finite values" in capsys.readouterr().err
    assert main(["align", str(px), str(px), "--topq", "2"]) == 2
    assert "topq must be in (0, 1]" in capsys.readouterr().err
