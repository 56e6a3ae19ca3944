"""One dtype policy for every input (fastsas._validate.computed_dtype): big-endian floats are
converted to native order, float16 to float32, a pair of two precisions computed in float64;
the same whether the arrays are in memory, in .npy/.npz files read by fs.audit, fastsas
audit, fastsas align or fastsas.dask. Each result equals the audit of the converted arrays."""
import json

import numpy as np
import pytest

import fastsas as fs
from fastsas.cli import main
from fastsas.io import NpyPairSource, NpzPairSource

N, DIM = 600, 16
CASES = {"big-endian f4": (">f4", ">f4"), "big-endian f8": (">f8", ">f8"), "float16": ("<f2", "<f2"),
         "mixed f4/f8": ("<f4", "<f8"), "big-endian f8 with f4": (">f8", "<f4")}


@pytest.fixture(scope="module")
def pair():
    return fs.synthetic.paired_embeddings(N, DIM, image_only_factors=2, seed=4, dtype=np.float64)


def _converted(x, y, kinds):
    """What the policy says the pair is computed as, written out independently."""
    a, b = x.astype(kinds[0]), y.astype(kinds[1])
    a = a.astype(np.float32) if a.dtype.itemsize == 2 else a.astype(a.dtype.newbyteorder("="))
    b = b.astype(np.float32) if b.dtype.itemsize == 2 else b.astype(b.dtype.newbyteorder("="))
    if a.dtype != b.dtype:
        a, b = a.astype(np.float64), b.astype(np.float64)
    return a, b


@pytest.mark.parametrize("case", CASES)
def test_in_memory_arrays_of_any_byte_order_and_precision(pair, case):
    x, y = pair
    kinds = CASES[case]
    a, b = _converted(x, y, kinds)
    assert fs.sas(x.astype(kinds[0]), y.astype(kinds[1])) == fs.sas(a, b)
    got = fs.retrieval(x.astype(kinds[0]), y.astype(kinds[1]))
    assert got["rsum"] == fs.retrieval(a, b)["rsum"]


@pytest.mark.parametrize("case", CASES)
def test_audit_of_npy_and_npz_sources_follows_the_same_policy(pair, tmp_path, case):
    x, y = pair
    kinds = CASES[case]
    np.save(tmp_path / "x.npy", x.astype(kinds[0]))
    np.save(tmp_path / "y.npy", y.astype(kinds[1]))
    np.savez(tmp_path / "p.npz", images=x.astype(kinds[0]), texts=y.astype(kinds[1]))
    a, b = _converted(x, y, kinds)
    want = fs.audit(a, b, jackknife_blocks=5, chunk_rows=250).to_dict()
    for source in (NpyPairSource(tmp_path / "x.npy", tmp_path / "y.npy"), NpzPairSource(tmp_path / "p.npz")):
        got = fs.audit(source, jackknife_blocks=5, chunk_rows=250).to_dict()
        assert got["alignment"] == want["alignment"] and got["retrieval"] == want["retrieval"]


@pytest.mark.parametrize("case", ["big-endian f4", "float16", "mixed f4/f8"])
def test_cli_audit_and_align_accept_what_the_library_accepts(pair, tmp_path, capsys, case):
    x, y = pair
    kinds = CASES[case]
    np.save(tmp_path / "x.npy", x.astype(kinds[0]))
    np.save(tmp_path / "y.npy", y.astype(kinds[1]))
    a, b = _converted(x, y, kinds)
    assert main(["audit", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--out", str(tmp_path / "r"),
                 "--format", "json", "--jackknife-blocks", "5", "--quiet"]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    want = fs.audit(a, b, jackknife_blocks=5, chunk_rows=32768).alignment
    assert report["alignment"]["sas_i2t"] == pytest.approx(want["sas_i2t"], rel=1e-12)
    capsys.readouterr()
    assert main(["align", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--json"]) == 0
    aligned = json.loads(capsys.readouterr().out)
    assert aligned["sas_i2t"] == pytest.approx(fs.alignment(a, b)["sas_i2t"], rel=1e-12)


def test_dask_audit_of_a_big_endian_source(pair, tmp_path):
    pytest.importorskip("dask")
    import fastsas.dask as fd

    x, y = pair
    np.save(tmp_path / "x.npy", x.astype(">f4"))
    np.save(tmp_path / "y.npy", y.astype(">f4"))
    a, b = _converted(x, y, CASES["big-endian f4"])
    got = fd.audit_source(NpyPairSource(tmp_path / "x.npy", tmp_path / "y.npy"), jackknife_blocks=5,
                          chunk_rows=250)
    want = fs.audit(a, b, jackknife_blocks=5, chunk_rows=250)
    assert got.alignment["sas_i2t"] == pytest.approx(want.alignment["sas_i2t"], rel=1e-9)
    assert got.retrieval["rsum"] == want.retrieval["rsum"]
