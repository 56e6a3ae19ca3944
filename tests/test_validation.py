"""Every bad input gets a clear error naming the argument."""
import numpy as np
import pytest

import fastsas as fs


@pytest.fixture
def pair():
    return fs.synthetic.paired_embeddings(50, 16, seed=0)


def test_not_two_dimensional(pair):
    x, y = pair
    with pytest.raises(ValueError, match=r"images must be 2-D \(n_samples, dim\), got shape \(800,\)"):
        fs.alignment(x.ravel(), y)
    with pytest.raises(ValueError, match="texts must be 2-D"):
        fs.alignment(x, y[None])


def test_mismatched_rows_and_dims(pair):
    x, y = pair
    with pytest.raises(ValueError, match="paired row by row: got 50 and 49 rows"):
        fs.alignment(x, y[:-1])
    with pytest.raises(ValueError, match="same embedding space: got dims 16 and 15"):
        fs.alignment(x, y[:, :-1])
    with pytest.raises(ValueError, match="images has dim 16 but this Moments was created with dim 8"):
        fs.Moments(8).update(x, y)


def test_too_few_rows(pair):
    x, y = pair
    with pytest.raises(ValueError, match="images needs at least 2 rows, got 1"):
        fs.alignment(x[:1], y[:1])
    with pytest.raises(ValueError, match="anchor needs at least 2 rows"):
        fs.sas(x[:1], y[:1])
    with pytest.raises(ValueError, match="at least 2 pairs"):
        fs.Moments(16).update(x[:1], y[:1]).alignment()


def test_non_finite_rows_are_named(pair):
    x, y = pair
    x = x.copy(); x[3, 0] = np.nan; x[17, 5] = np.inf
    with pytest.raises(ValueError, match=r"images has non-finite values \(NaN or Inf\) in 2 rows: 3, 17"):
        fs.alignment(x, y)
    y2 = y.copy(); y2[40] = -np.inf
    with pytest.raises(ValueError, match="other has non-finite values .* 1 row: 40"):
        fs.sas(pair[0], y2)


def test_zero_norm_rows_are_named(pair):
    x, y = pair
    y = y.copy(); y[[4, 9]] = 0.0
    with pytest.raises(ValueError, match="texts has zero-norm rows .* in 2 rows: 4, 9"):
        fs.alignment(x, y)
    # SAS does not normalise rows, so it accepts them
    assert 0.0 <= fs.sas(x, y) <= 1.0


def test_float64_overflow_is_refused(pair):
    x, y = pair
    x = x.astype(np.float64); x[2] = 1e300
    with pytest.raises(ValueError, match=r"images has values too large for float64 second moments .* 1 row: 2; "
                                         r"rescale"):
        fs.alignment(x, y.astype(np.float64))


@pytest.mark.parametrize("dtype,word", [(np.int64, "integer"), (np.complex128, "complex"), (object, "object"),
                                        (bool, "boolean"), (np.uint8, "unsigned integer")])
def test_bad_dtypes(pair, dtype, word):
    x, y = pair
    with pytest.raises(TypeError, match=f"images must hold float16, float32 or float64 values, got {word}"):
        fs.alignment(x.astype(dtype), y)


@pytest.mark.parametrize("q", [0, -0.1, 1.5, float("nan")])
def test_topq_out_of_range(pair, q):
    with pytest.raises(ValueError, match=r"topq must be in \(0, 1\]"):
        fs.alignment(*pair, topq=q)
    with pytest.raises(ValueError, match=r"topq must be in \(0, 1\]"):
        fs.sas(*pair, topq=q)


def test_topq_wrong_type(pair):
    with pytest.raises(TypeError, match="topq must be a number"):
        fs.alignment(*pair, topq="0.1")


def test_constant_anchor_is_refused():
    x = np.ones((20, 4)); y = np.random.default_rng(0).standard_normal((20, 4))
    with pytest.raises(ValueError, match="zero variance"):
        fs.sas(x, y)


def test_other_arguments(pair):
    x, y = pair
    with pytest.raises(ValueError, match='variant must be "symmetric" or "paper"'):
        fs.rmg(x, y, variant="published")
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        fs.alignment(x, y, threads=0)
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        fs.Moments(0)
    with pytest.raises(ValueError, match='direction must be "i2t" or "t2i"'):
        fs.Moments(16).update(x, y).spectral_profile("x2y")
    with pytest.raises(TypeError, match="other must be a fastsas.Moments"):
        fs.Moments(16).merge(object())
    with pytest.raises(ValueError, match="cannot merge Moments of dim 8"):
        fs.Moments(16).merge(fs.Moments(8))
    with pytest.raises(ValueError, match="track_unit_rows"):
        fs.Moments(16, track_unit_rows=False).update(x, y).alignment()
