"""Streaming, merging, thread-count determinism and the byte form of Moments."""
import pickle

import numpy as np
import pytest

import fastsas as fs
from fastsas import reference as ref

from _compare import worst_error, worst_key


def _close(got, want, rel, x, y):
    assert worst_error(got, want, x, y) <= rel, worst_key(got, want, x, y)


def _stream(x, y, chunk, threads=None):
    m = fs.Moments(x.shape[1], threads=threads)
    for i in range(0, len(x), chunk):
        m.update(x[i:i + chunk], y[i:i + chunk])
    return m


@pytest.mark.parametrize("dtype,rel", [(np.float64, 1e-12), (np.float32, 1e-6)])
@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_chunked_equals_one_pass(dtype, rel, chunk):
    n = 1500 if chunk == 1 else 5000
    x, y = fs.synthetic.paired_embeddings(n, 32, image_only_factors=3, cone=6.0, seed=3, dtype=dtype)
    whole = fs.alignment(x, y)
    _close(_stream(x, y, chunk).alignment(), whole, rel, x, y)
    if dtype == np.float64:
        _close(whole, ref.alignment(x, y), 1e-9, x, y)


@pytest.mark.parametrize("dtype,rel", [(np.float64, 1e-12), (np.float32, 1e-6)])
def test_merge_in_any_order_equals_one_pass(dtype, rel):
    x, y = fs.synthetic.paired_embeddings(9000, 48, text_only_factors=2, seed=4, dtype=dtype)
    cuts = [0, 1, 2500, 2501, 6000, 9000]
    parts = [fs.Moments(48).update(x[a:b], y[a:b]) for a, b in zip(cuts, cuts[1:])]
    forward = parts[0].copy()
    for p in parts[1:]:
        forward.merge(p)
    backward = parts[-1].copy()
    for p in reversed(parts[:-1]):
        backward.merge(p)
    tree = parts[0].copy().merge(parts[1]).merge(parts[2].copy().merge(parts[3])).merge(parts[4])
    whole = fs.alignment(x, y)
    for m in (forward, backward, tree):
        assert m.n == 9000
        _close(m.alignment(), whole, rel, x, y)
    # merging into an empty Moments and merging an empty one are no-ops
    assert fs.Moments(48).merge(forward).alignment() == forward.alignment()
    assert forward.copy().merge(fs.Moments(48)).alignment() == forward.alignment()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_identical_bits_for_any_thread_count(dtype):
    x, y = fs.synthetic.paired_embeddings(3 * fs._core.BLOCK_ROWS + 123, 40, image_only_factors=2,
                                          seed=5, dtype=dtype)
    one, two, three = (fs.Moments(40, threads=t).update(x, y) for t in (1, 2, 3))
    assert one.to_bytes() == two.to_bytes() == three.to_bytes()
    assert fs.alignment(x, y, threads=1) == fs.alignment(x, y, threads=2)
    s1 = _stream(x, y, 5000, threads=1).to_bytes()
    assert s1 == _stream(x, y, 5000, threads=2).to_bytes()


def test_byte_form_and_pickle_round_trip():
    x, y = fs.synthetic.paired_embeddings(3000, 24, seed=6)
    m = fs.Moments(24).update(x[:1000], y[:1000])
    data = m.to_bytes()
    back = fs.Moments.from_bytes(data)
    assert back.to_bytes() == data and back.n == 1000
    # a restored state keeps accumulating exactly as the original would
    m.update(x[1000:], y[1000:]); back.update(x[1000:], y[1000:])
    assert m.to_bytes() == back.to_bytes()
    again = pickle.loads(pickle.dumps(m))
    assert again.alignment() == m.alignment()
    # compact: upper triangle only, then the flag and fourth-order sums, then a CRC-32
    assert len(data) == 8 * (3 * 48 + 48 * 49 // 2) + 34 + 1 + 8 * (3 + 2 * 48) + 4
    with pytest.raises(ValueError, match="bad magic"):
        fs.Moments.from_bytes(b"nonsense" * 10)
    with pytest.raises(ValueError, match="truncated"):
        fs.Moments.from_bytes(data[:-8])
    bad_version = data[:7] + bytes([99]) + data[8:]
    with pytest.raises(ValueError, match="version 99"):
        fs.Moments.from_bytes(bad_version)


def test_failed_update_leaves_state_untouched():
    x, y = fs.synthetic.paired_embeddings(10000, 16, seed=7, dtype=np.float64)
    m = fs.Moments(16).update(x[:3000], y[:3000])
    before = m.to_bytes()
    bad = y[3000:].copy()
    bad[6000, 3] = np.nan  # in a late block of a multi-block chunk
    with pytest.raises(ValueError, match=r"texts has non-finite .* 1 row: 6000 \(rows of this chunk; 3000 rows"):
        m.update(x[3000:], bad)
    assert m.to_bytes() == before
    first = fs.Moments(16)
    with pytest.raises(ValueError):
        first.update(np.full((5, 16), np.nan), y[:5])
    first.update(x[:5], y[:5])  # the failed first chunk left no pilot behind
    assert first.alignment(topq=1.0)["sas_i2t"] == pytest.approx(ref.sas(x[:5], y[:5], 1.0), rel=1e-9)


def test_moments_statistics():
    x, y = fs.synthetic.paired_embeddings(1200, 12, seed=8, dtype=np.float64)
    m = fs.Moments(12).update(x, y)
    assert np.allclose(m.mean_images(), x.mean(0), rtol=1e-12)
    assert np.allclose(m.mean_texts(), y.mean(0), rtol=1e-12)
    z = np.hstack([x, y])
    assert np.allclose(m.covariance(), np.cov(z.T, bias=True), rtol=1e-10, atol=1e-12)
    assert m.alignment() is not m.alignment()  # plain dicts, not shared state


def test_from_chunks():
    x, y = fs.synthetic.paired_embeddings(2000, 16, seed=9)
    chunks = ((x[i:i + 300], y[i:i + 300]) for i in range(0, 2000, 300))
    m = fs.Moments.from_chunks(chunks)
    assert m.n == 2000
    _close(m.alignment(), fs.alignment(x, y), 1e-6, x, y)


def test_concurrent_updates_from_python_threads():
    from concurrent.futures import ThreadPoolExecutor

    x, y = fs.synthetic.paired_embeddings(8000, 24, seed=10, dtype=np.float64)
    m = fs.Moments(24)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: m.update(x[i:i + 500], y[i:i + 500]), range(0, 8000, 500)))
    assert m.n == 8000
    _close(m.alignment(), fs.alignment(x, y), 1e-12, x, y)


def test_merge_with_itself_doubles_the_data():
    x, y = fs.synthetic.paired_embeddings(1000, 12, seed=11, dtype=np.float64)
    m = fs.Moments(12).update(x, y).merge(fs.Moments(12).update(x, y))
    s = fs.Moments(12).update(x, y)
    s.merge(s)
    assert s.n == 2000
    _close(s.alignment(), m.alignment(), 1e-12, x, y)
