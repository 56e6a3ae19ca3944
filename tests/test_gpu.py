"""The GPU backend. Tests marked `gpu` need a CUDA GPU and CuPy (conftest skips them
otherwise, and FASTSAS_REQUIRE_GPU=1 turns that skip into an error); the rest run anywhere:
backend selection and errors, results saying which backend ran, and a NumPy emulation of the
GPU's fast-precision tiles that checks the rounding-band proof and the exact re-check against
the CPU engine's ranks."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

import fastsas as fs
from fastsas import gpu
from fastsas.gpu.retrieval import PRECISIONS, rounding_band

NO_GPU = not gpu.available()


# --------------------------------------------------------------------------- plumbing (CPU)
def _pair(n=300, d=16, seed=0):
    return fs.synthetic.paired_embeddings(n, d, seed=seed)


@pytest.mark.parametrize("call", [
    lambda x, y, b: fs.alignment(x, y, backend=b), lambda x, y, b: fs.sas(x, y, backend=b),
    lambda x, y, b: fs.cka(x, y, backend=b), lambda x, y, b: fs.rmg(x, y, backend=b),
    lambda x, y, b: fs.retrieval(x, y, backend=b), lambda x, y, b: fs.mmd(x, y, backend=b),
    lambda x, y, b: fs.gap.sweep(x, y, lams=(0, 1), backend=b),
    lambda x, y, b: fs.Moments.from_chunks([(x, y)], backend=b),
])
def test_bad_backend_is_named(call):
    x, y = _pair()
    for bad in ("gpu", "CUDA", None, 1):
        with pytest.raises(ValueError, match=r"backend must be one of 'auto', 'cpu', 'cuda'"):
            call(x, y, bad)


@pytest.mark.skipif(not NO_GPU, reason="checks the message given when no GPU is usable")
def test_cuda_without_gpu_says_how_to_fix():
    x, y = _pair()
    for call in (fs.alignment, fs.retrieval, fs.mmd, fs.delta_cos):
        with pytest.raises(RuntimeError, match=r"backend='cuda' needs a CUDA GPU.*fastsas\[gpu\].*backend='cpu'"):
            call(x, y, backend="cuda")


def test_available_never_raises_and_explains():
    ok = gpu.available()
    assert isinstance(ok, bool)
    assert (gpu.unavailable_reason() == "") == ok


@pytest.mark.skipif(not NO_GPU, reason="auto picks the GPU when there is one")
def test_auto_falls_back_to_cpu_and_results_say_so():
    x, y = _pair()
    a = fs.alignment(x, y)
    assert a.backend == "cpu" and a == fs.alignment(x, y, backend="cpu")
    r = fs.retrieval(x, y)
    assert r.backend == "cpu"
    assert fs.mmd(x, y).backend == "cpu"
    assert fs.sas(x, y).backend == "cpu"
    assert fs.gap.sweep(x, y, lams=(0,)).settings["backend"] == "cpu"


def test_backend_carrier_keeps_keys_values_and_json():
    x, y = _pair()
    a = fs.alignment(x, y, backend="cpu")
    assert "backend" not in a and set(a) == set(fs.Moments(16).update(x, y).alignment())
    assert json.loads(json.dumps(a)) == dict(a)
    back = pickle.loads(pickle.dumps(a))
    assert back == a and back.backend == "cpu"
    v = fs.sas(x, y, backend="cpu")
    assert isinstance(v, float) and v.backend == "cpu" and json.dumps(v) == json.dumps(float(v))
    assert pickle.loads(pickle.dumps(v)).backend == "cpu"


def test_importing_fastsas_does_not_import_cupy():
    import subprocess
    import sys

    code = "import sys, fastsas; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# --------------------------------------------------------------------------- margin emulation (CPU)
def _normalise_like_cpu(x: np.ndarray) -> np.ndarray:
    """The CPU engine's pack_rows for float32: sequential float64 sum of squares, 1/sqrt,
    float64 product rounded to float32 (what cuda/rows.cu reproduces)."""
    norm = np.zeros(x.shape[0])
    for j in range(x.shape[1]):
        v = x[:, j].astype(np.float64)
        norm += v * v
    inv = 1.0 / np.sqrt(norm)
    return (x.astype(np.float64) * inv[:, None]).astype(np.float32)


def _canonical(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All canonical similarities a_i . b_j: exact products, four float64 lanes, (s0+s1)+(s2+s3)."""
    d = a.shape[1]
    lanes = np.zeros((4, a.shape[0], b.shape[0]))
    full = d - d % 4
    for k in range(0, full, 4):
        for lane in range(4):
            lanes[lane] += np.outer(a[:, k + lane].astype(np.float64), b[:, k + lane].astype(np.float64))
    for k in range(full, d):
        lanes[0] += np.outer(a[:, k].astype(np.float64), b[:, k].astype(np.float64))
    return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])


def _to_fast(x32: np.ndarray, precision: str) -> np.ndarray:
    """Rows as the tensor cores see them, as float32 values (fp16 scaled by 2^15)."""
    if precision == "fp16":
        return (x32 * np.float32(PRECISIONS["fp16"][2])).astype(np.float16).astype(np.float32)
    bits = x32.view(np.uint32)
    if precision == "bf16":  # round to nearest even, as cuda/rows.cu to_bf16
        return ((((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16).astype(np.uint32)).view(np.float32)
    return (bits & np.uint32(0xFFFFE000)).view(np.float32)  # tf32, truncated (the worst case)


def _emulated_ranks(x, y, codes_i, codes_t, precision):
    xn, yn = _normalise_like_cpu(x), _normalise_like_cpu(y)
    exact = _canonical(xn, yn)
    scale = PRECISIONS[precision][2]
    tile = (_to_fast(xn, precision) @ _to_fast(yn, precision).T) * np.float32(1.0 / (scale * scale))
    band = rounding_band(x.shape[1], precision)
    assert np.max(np.abs(tile.astype(np.float64) - exact)) <= band  # the proof's claim, on this data
    match = codes_i[:, None] == codes_t[None, :]
    thr_i = np.where(match, exact, -np.inf).max(axis=1)
    thr_t = np.where(match, exact, -np.inf).max(axis=0)
    undecided = 0
    ranks = []
    for thr, axis in ((thr_i, 1), (thr_t, 0)):
        t = thr[:, None] if axis == 1 else thr[None, :]
        lo = np.nextafter((t - band).astype(np.float32), np.float32(-np.inf))
        hi = np.nextafter((t + band).astype(np.float32), np.float32(np.inf))
        above = (tile > hi) & ~match
        inside = (tile >= lo) & (tile <= hi) & ~match
        undecided += int(inside.sum())
        count = above.sum(axis=axis) + (inside & (exact > t)).sum(axis=axis)
        ranks.append(np.where(np.isfinite(thr), 1 + count, 0))
    return ranks[0], ranks[1], undecided


def _near_ties(seed=3, n=120, d=24):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n // 4, d)).astype(np.float32)
    # Every text has three near-copies a few float32 ulps away, and exact duplicates: many
    # candidates sit within the band of a query's threshold, some exactly on it.
    texts = np.repeat(base, 4, axis=0)
    texts += (rng.integers(-3, 4, texts.shape) * np.spacing(np.abs(texts))).astype(np.float32)
    texts[::8] = texts[1::8]
    images = texts + np.float32(1e-4) * rng.standard_normal(texts.shape).astype(np.float32)
    return images, texts


@pytest.mark.parametrize("precision", ["fp16", "bf16", "tf32"])
@pytest.mark.parametrize("ids", ["rows", "coco"])
def test_emulated_fast_tiles_give_the_cpu_ranks(precision, ids):
    images, texts = _near_ties()
    n = images.shape[0]
    if ids == "rows":
        ci = ct = np.arange(n)
        kw = {}
    else:  # several texts per image id, some images without any text
        ci = np.arange(n)
        ct = (np.arange(n) // 3) * 2
        kw = {"image_ids": ci, "text_ids": ct}
    ri, rt, undecided = _emulated_ranks(images, texts, ci, ct, precision)
    assert undecided > 50  # the re-check path is exercised, not just the fast decisions
    cpu = fs.retrieval(images, texts, return_ranks=True, ks=(1,), backend="cpu", **kw)
    np.testing.assert_array_equal(ri[ri > 0], cpu["i2t_ranks"])
    np.testing.assert_array_equal(np.flatnonzero(ri > 0), cpu["i2t_queries"])
    np.testing.assert_array_equal(rt[rt > 0], cpu["t2i_ranks"])


def test_emulated_canonical_normalisation_matches_cpu_bits():
    # If this fails, the CPU's normalisation changed and cuda/rows.cu must follow it.
    images, texts = _near_ties(seed=5)
    xn = _normalise_like_cpu(images)
    exact = _canonical(xn, _normalise_like_cpu(texts))
    # The CPU's ranks are the canonical ranks exactly, including exact ties.
    cpu = fs.retrieval(images, texts, return_ranks=True, ks=(1,), backend="cpu")
    diag = np.diag(exact)
    expected = 1 + ((exact > diag[:, None]) & ~np.eye(len(diag), dtype=bool)).sum(axis=1)
    np.testing.assert_array_equal(cpu["i2t_ranks"], expected)


def test_band_grows_with_dimension_and_coarser_formats():
    assert rounding_band(768, "fp16") < rounding_band(768, "tf32") < rounding_band(768, "bf16")
    assert rounding_band(64) < rounding_band(768) < 2e-3
    assert rounding_band(768, "fp16", np.float64) > rounding_band(768, "fp16", np.float32)
    with pytest.raises(ValueError, match="precision must be one of"):
        rounding_band(768, "fp8")


# --------------------------------------------------------------------------- on a GPU
gpu_only = pytest.mark.gpu


def _rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


def _assert_cov_close(got, want):
    # Float32 block products summed in another order (cuBLAS vs OpenBLAS SYRK, or other block
    # boundaries) differ by ~5e-8 of the largest entry: entrywise rtol=1e-6 fails on the small
    # off-diagonal entries even between two CPU passes chunked differently, so the absolute
    # part is relative to the matrix's scale.
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * np.abs(want).max())


@gpu_only
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_moment_metrics_match_cpu(dtype):
    x, y = fs.synthetic.paired_embeddings(20000, 64, seed=1, dtype=dtype)
    cpu = fs.alignment(x, y, backend="cpu")
    out = fs.alignment(x, y, backend="cuda")
    assert out.backend == "cuda"
    for key, value in cpu.items():
        assert _rel(out[key], value) <= 1e-6 or abs(out[key] - value) <= 1e-9, key


@gpu_only
def test_gpu_moments_state_merges_and_streams_like_cpu():
    import cupy as cp

    x, y = fs.synthetic.paired_embeddings(70000, 32, seed=2)
    host = gpu.GpuMoments(32, chunk_rows=9000).update(x, y).to_moments()
    device = gpu.GpuMoments(32).update(cp.asarray(x), cp.asarray(y)).to_moments()
    chunks = fs.Moments.from_chunks(((x[i:i + 6000], y[i:i + 6000]) for i in range(0, 70000, 6000)),
                                    backend="cuda")
    cpu = fs.Moments(32).update(x, y)
    for m in (host, device, chunks):
        assert m.n == cpu.n
        _assert_cov_close(m.covariance(), cpu.covariance())
        for key, value in cpu.alignment().items():
            assert _rel(m.alignment()[key], value) <= 1e-6 or abs(m.alignment()[key] - value) <= 1e-9, key


@gpu_only
def test_gpu_moments_bad_rows_named_and_nothing_added():
    x, y = fs.synthetic.paired_embeddings(5000, 16, seed=3)
    x[[7, 4100]] = np.nan
    m = gpu.GpuMoments(16)
    with pytest.raises(ValueError, match=r"images has non-finite values \(NaN or Inf\) in 2 rows: 7, 4100"):
        m.update(x, y)
    assert m.n == 0


@gpu_only
@pytest.mark.parametrize("kind", ["random", "near_ties", "coco"])
def test_gpu_ranks_identical_to_cpu(kind):
    if kind == "near_ties":
        x, y = _near_ties(n=4000, d=64)
        kw = {}
    else:
        x, y = fs.synthetic.paired_embeddings(6000, 96, seed=4)
        kw = {} if kind == "random" else {"image_ids": np.arange(6000) // 5, "text_ids": np.arange(6000) // 4}
    cpu = fs.retrieval(x, y, return_ranks=True, backend="cpu", **kw)
    for tile in (None, (1000, 1700)):
        out = fs.retrieval(x, y, return_ranks=True, backend="cuda", tile=tile, **kw)
        assert out.backend == "cuda"
        for key in ("i2t_ranks", "t2i_ranks", "i2t_queries", "t2i_queries"):
            np.testing.assert_array_equal(out[key], cpu[key])


@gpu_only
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_exact_ties_of_integer_rows_are_the_cpu_ranks(dtype):
    """Sign-quantised rows (-1, 0, 1) of unequal support: many mathematically equal cosines,
    decided by the exact rule on both backends (CPU: tests/test_retrieval_exact_ties.py)."""
    rng = np.random.default_rng(6)
    z = rng.standard_normal((3000, 16))
    q = lambda a: np.sign(a) * (np.abs(a) > 0.6)  # noqa: E731
    x, y = q(z + 0.3 * rng.standard_normal(z.shape)), q(z + 0.8 * rng.standard_normal(z.shape))
    x[np.abs(x).sum(1) == 0, 0] = 1
    y[np.abs(y).sum(1) == 0, 0] = 1
    cpu = fs.retrieval(x.astype(dtype), y.astype(dtype), return_ranks=True, backend="cpu")
    out = fs.retrieval(x.astype(dtype), y.astype(dtype), return_ranks=True, backend="cuda", tile=(1000, 1700))
    for key in ("i2t_ranks", "t2i_ranks"):
        np.testing.assert_array_equal(out[key], cpu[key])


@gpu_only
@pytest.mark.parametrize("precision", ["fp16", "bf16", "tf32"])
def test_gpu_ranks_every_precision_and_candidate_overflow(precision):
    from fastsas.gpu.retrieval import retrieval_ranks

    x, y = _near_ties(n=2000, d=32)
    cpu = fs._core.retrieval(x, y, None, None, 0, 0, 1, 0)
    stats: dict = {}
    ri, rt = retrieval_ranks(x, y, None, None, precision=precision, capacity=16, tile=(512, 768), stats=stats)
    assert stats["rechecked"] > 16  # the buffer overflowed and grew; nothing was dropped
    np.testing.assert_array_equal(ri, cpu["image_ranks"])
    np.testing.assert_array_equal(rt, cpu["text_ranks"])


@gpu_only
def test_gpu_normalised_rows_are_the_cpu_bits():
    # 300 rows: a partial 128-row block; 45 columns: a partial 32-column slab. Subnormal
    # float32 entries must survive CuPy's -ftz=true compile (cuda/fastsas_common.cuh to_f64).
    import cupy as cp

    from fastsas.gpu._arrays import BadRowCollector
    from fastsas.gpu.retrieval import normalise

    x = np.random.default_rng(9).standard_normal((300, 45)).astype(np.float32)
    x[5, :7] = np.float32(1e-40)  # subnormal entries in an ordinary row
    x[6] = np.float32(3e-39)      # a row of subnormals only: a positive norm on the CPU
    bad = BadRowCollector([("x", "non-finite"), ("x", "zero-norm")])
    got = cp.asnumpy(normalise(cp.asarray(x), bad, (0, 1)))
    assert not bad.any
    np.testing.assert_array_equal(got.view(np.uint32), _normalise_like_cpu(x).view(np.uint32))


@gpu_only
@pytest.mark.parametrize("precision", ["fp16", "bf16", "tf32"])
def test_gpu_tiles_lie_within_the_proven_band(precision):
    # The cuBLAS tile (orientation, fp16 scale and alpha, compute type) against exact products
    # of the stored rows: every entry within rounding_band (the premise of exact ranks).
    import cupy as cp

    from fastsas.gpu._blas import gemm_nt
    from fastsas.gpu.retrieval import _fast_copy

    x, y = fs.synthetic.paired_embeddings(1500, 768, seed=10)
    xn, yn = _normalise_like_cpu(x), _normalise_like_cpu(y[:1300])
    exact = xn.astype(np.float64) @ yn.astype(np.float64).T
    xf, ftype, compute = _fast_copy(cp.asarray(xn), precision)
    yf, _, _ = _fast_copy(cp.asarray(yn), precision)
    scale = PRECISIONS[precision][2]
    tile = cp.empty((1500, 1300), dtype=cp.float32)
    gemm_nt(xf, yf, tile, a_type=ftype, compute=compute, alpha=1.0 / (scale * scale))
    err = np.abs(cp.asnumpy(tile).astype(np.float64) - exact).max()
    band = rounding_band(768, precision)
    print(f"{precision}: max |tile - exact| = {err:.3e}, band {band:.3e} ({err / band:.1%})")
    assert err <= band


@gpu_only
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_mmd_matches_cpu(dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3000, 48)).astype(dtype)
    y = (rng.standard_normal((2500, 48)) + 0.3).astype(dtype)
    for sigma in (1.0, 10.0):
        out = fs.mmd(x, y, sigma, backend="cuda")
        assert out.backend == "cuda"
        assert _rel(out, fs.mmd(x, y, sigma, backend="cpu")) <= 1e-5


@gpu_only
def test_device_inputs_used_without_copy():
    import cupy as cp

    from fastsas.gpu._arrays import as_device

    a = cp.asarray(np.random.default_rng(6).standard_normal((100, 8)), dtype=cp.float32)
    assert as_device(a, "x").data.ptr == a.data.ptr
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("this torch build has no CUDA")
    t = torch.randn(100, 8, device="cuda", requires_grad=True)
    assert as_device(t, "x").data.ptr == t.data_ptr()
    x, y = fs.synthetic.paired_embeddings(3000, 16, seed=7)
    tx, ty = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()
    assert fs.retrieval(tx, ty)["rsum"] == fs.retrieval(x, y, backend="cpu")["rsum"]
    assert _rel(fs.alignment(tx, ty)["sas_i2t"], fs.alignment(x, y, backend="cpu")["sas_i2t"]) <= 1e-6


@gpu_only
def test_host_streaming_equals_in_memory(tmp_path):
    import cupy as cp

    x, y = fs.synthetic.paired_embeddings(50000, 24, seed=8)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    mx, my = np.load(tmp_path / "x.npy", mmap_mode="r"), np.load(tmp_path / "y.npy", mmap_mode="r")
    streamed = gpu.GpuMoments(24, chunk_rows=7000)
    streamed.update(mx, my)
    assert streamed.bytes_from_host == x.nbytes + y.nbytes
    resident = gpu.GpuMoments(24).update(cp.asarray(x), cp.asarray(y))
    _assert_cov_close(streamed.to_moments().covariance(), resident.to_moments().covariance())
