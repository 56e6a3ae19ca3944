"""The byte forms of Moments and audit states are not trusted: a CRC-32 over header and
payload (fastsas._byteform) refuses any flipped bit, truncation or padding; another version
is refused by name; and what a correctly sealed form decodes to is checked (counts,
finiteness), so a faulty writer's state is refused instead of giving wrong metrics."""
import struct

import numpy as np
import pytest

import fastsas as fs
from fastsas._byteform import seal
from fastsas.audit import AuditPlan, AuditState

HEADER = struct.Struct("<7sBqqBBd")  # the Moments header: magic, version, dim, count, pilot, unit rows, cosines
PAYLOAD = HEADER.size + 1  # after the header and the fourth-order flag


@pytest.fixture(scope="module")
def moments():
    x, y = fs.synthetic.paired_embeddings(1000, 16, seed=1, dtype=np.float64)
    return fs.Moments(16).update(x, y)


@pytest.fixture(scope="module")
def audit_blob():
    x, y = fs.synthetic.paired_embeddings(600, 12, seed=2, dtype=np.float64)
    plan = AuditPlan(600, 12, groups=np.arange(600) % 3, periods=np.arange(600) % 2, jackknife_blocks=5)
    state = plan.new_state()
    state.accumulate(x, y, plan.codes(0, 600), 1)
    return state.to_bytes()


def _resealed(blob: bytes, offset: int, new: bytes) -> bytes:
    """The form with bytes replaced and a valid checksum: what a faulty writer would send."""
    body = bytearray(blob[:-4])
    body[offset:offset + len(new)] = new
    return seal(bytes(body))


def test_a_flipped_count_bit_is_refused_not_read_as_another_n(moments):
    blob = moments.to_bytes()
    damaged = bytearray(blob)
    damaged[16] ^= 0x08  # count 1000 -> 1008
    with pytest.raises(ValueError, match="Moments byte form is damaged: its CRC-32"):
        fs.Moments.from_bytes(bytes(damaged))
    assert fs.Moments.from_bytes(blob).alignment() == moments.alignment()


def test_every_single_bit_flip_of_a_moments_form_is_refused():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((200, 2)), rng.standard_normal((200, 2))
    blob = fs.Moments(2).update(x, y).to_bytes()
    for byte in range(len(blob)):
        for bit in range(8):
            damaged = bytearray(blob)
            damaged[byte] ^= 1 << bit
            with pytest.raises(ValueError):
                fs.Moments.from_bytes(bytes(damaged))


def test_truncated_padded_and_other_versions_are_refused_by_name(moments):
    blob = moments.to_bytes()
    with pytest.raises(ValueError, match="damaged"):
        fs.Moments.from_bytes(blob[:-1])
    with pytest.raises(ValueError, match="damaged"):
        fs.Moments.from_bytes(blob + b"\0")
    with pytest.raises(ValueError, match=r"version 4 is not supported \(this fastsas reads versions 1, 2 and 3\).*"
                                         "upgrade"):
        fs.Moments.from_bytes(blob[:7] + bytes([4]) + blob[8:])
    with pytest.raises(ValueError, match=r"version 0 is not supported .* older fastsas"):
        fs.Moments.from_bytes(blob[:7] + bytes([0]) + blob[8:])
    # a sealed form whose version byte became an unsealed version's: its length gives it away
    for version in (1, 2):
        with pytest.raises(ValueError, match="Moments byte form is truncated or padded"):
            fs.Moments.from_bytes(blob[:7] + bytes([version]) + blob[8:])
    with pytest.raises(ValueError, match="bad magic"):
        fs.Moments.from_bytes(b"FSASAUD" + blob[7:])
    with pytest.raises(TypeError, match="data must be bytes"):
        fs.Moments.from_bytes("FSASMOM")


def test_forms_written_before_the_checksum_are_read_and_checked(moments):
    unsealed = moments.to_bytes()[:-4]  # version 2: the same layout, no checksum
    old = fs.Moments.from_bytes(unsealed[:7] + bytes([2]) + unsealed[8:])
    assert old.to_bytes() == moments.to_bytes() and old.alignment() == moments.alignment()
    with pytest.raises(ValueError, match="Moments byte form is corrupt: .*the pilot mean holds 1 NaN"):
        damaged = bytearray(unsealed[:7] + bytes([2]) + unsealed[8:])
        damaged[PAYLOAD:PAYLOAD + 8] = struct.pack("<d", float("nan"))
        fs.Moments.from_bytes(bytes(damaged))


@pytest.mark.parametrize("field, offset, value, message", [
    ("count", 16, struct.pack("<q", -3), r"n -3"),
    ("pilot flag", 24, bytes([7]), r"has_pilot 7"),
    ("no pilot with rows", 24, bytes([0]), r"1000 rows but no pilot mean"),
    ("cosine sum beyond n", 26, struct.pack("<d", 5000.0), r"matched cosine sum 5000 .* exceed its 1000 rows"),
    ("NaN cosine sum", 26, struct.pack("<d", float("nan")), r"the matched cosine sum holds 1 NaN"),
    ("NaN in the pilot", PAYLOAD, struct.pack("<d", float("nan")), r"the pilot mean holds 1 NaN"),
    ("Inf in the scatter", PAYLOAD + 8 * 3 * 32, struct.pack("<d", float("inf")), r"the scatter holds 1 NaN"),
    ("NaN in the fourth-order sums", PAYLOAD + 8 * (3 * 32 + 32 * 33 // 2) + 8, struct.pack("<d", float("nan")),
     r"the sums after the scatter holds 1 NaN"),
    ("fourth-order flag", HEADER.size, bytes([5]), r"its fourth-order flag is 5"),
])
def test_a_sealed_state_no_rows_could_give_is_refused(moments, field, offset, value, message):
    with pytest.raises(ValueError, match="Moments byte form is corrupt: .*" + message):
        fs.Moments.from_bytes(_resealed(moments.to_bytes(), offset, value))


def test_an_empty_state_with_sums_is_refused():
    empty = fs.Moments(4).to_bytes()
    assert fs.Moments.from_bytes(empty).n == 0
    with pytest.raises(ValueError, match=r"no rows \(n = 0\) but non-zero sums"):
        fs.Moments.from_bytes(_resealed(empty, 26, struct.pack("<d", 1.0)))


def test_nan_inside_a_state_never_reaches_the_metrics(moments):
    blob = moments.to_bytes()
    offset = PAYLOAD + 8 * 2 * 32 + 8 * 5  # inside the unit-row sum
    with pytest.raises(ValueError, match="the unit-row sum holds 1 NaN"):
        fs.Moments.from_bytes(_resealed(blob, offset, struct.pack("<d", float("nan"))))


def test_audit_state_flipped_bits_and_inconsistent_counts_are_refused(audit_blob):
    assert AuditState.from_bytes(audit_blob).count == 600
    rng = np.random.default_rng(5)
    for position in rng.integers(0, len(audit_blob), 200):
        damaged = bytearray(audit_blob)
        damaged[int(position)] ^= 1 << int(rng.integers(8))
        with pytest.raises(ValueError):
            AuditState.from_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=r"version 1 is not supported"):
        AuditState.from_bytes(audit_blob[:7] + bytes([1]) + audit_blob[8:])
    # a period accumulator emptied by a faulty writer: its rows no longer add up to the blocks'
    state = AuditState.from_bytes(audit_blob)
    state.states("periods")[1] = fs.Moments(12)._core
    with pytest.raises(ValueError, match=r"its periods hold \d+ rows but its jackknife blocks hold 600"):
        AuditState.from_bytes(state.to_bytes())


def test_dask_merges_refuse_a_damaged_state():
    pytest.importorskip("dask")
    from fastsas.dask.moments_graph import merge_states

    x, y = fs.synthetic.paired_embeddings(400, 16, seed=6, dtype=np.float64)
    a, b = fs.Moments(16).update(x[:200], y[:200]).to_bytes(), fs.Moments(16).update(x[200:], y[200:]).to_bytes()
    assert fs.Moments.from_bytes(merge_states(fs.Moments, a, b)).n == 400
    damaged = bytearray(b)
    damaged[40] ^= 1
    with pytest.raises(ValueError, match="damaged"):
        merge_states(fs.Moments, a, bytes(damaged))
