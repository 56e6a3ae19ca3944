"""The integrity frame of fastsas byte forms (``Moments.to_bytes``, ``AuditState.to_bytes``):
the bytes travel between Dask workers and to disk, so a reader must not trust them.

A byte form is ``magic (7 bytes) | version (1 byte) | the rest of its header | payload |
CRC-32``: the last four bytes are the little-endian CRC-32 (``zlib.crc32``) of everything
before them, header included. A reader checks, in this order, and refuses with a
ValueError that names the form and says what to do: the magic (not a byte form of this
kind), the version (written by another fastsas version), the checksum (damaged in transit
or on disk), then what the header and payload decode to (counts, finiteness: the form's
own checks, with :func:`check_finite` and :func:`corrupt` here). The frame knows nothing of
the payload, so a form that grows new fields keeps the same checks.

>>> from fastsas._byteform import seal, unseal
>>> blob = seal(b"FSASXYZ\\x01payload")
>>> bytes(unseal(blob, b"FSASXYZ", 1, "an example byte form"))
b'FSASXYZ\\x01payload'
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

__all__ = ["CHECKSUM_BYTES", "check_finite", "corrupt", "seal", "unseal"]

_CHECKSUM = struct.Struct("<I")
CHECKSUM_BYTES = _CHECKSUM.size


def seal(framed: bytes) -> bytes:
    """`framed` (magic, version, header, payload) with its CRC-32 appended."""
    return framed + _CHECKSUM.pack(zlib.crc32(framed))


def corrupt(what: str, detail: str) -> ValueError:
    """The error for a form whose checksum matched but whose content is impossible."""
    return ValueError(f"{what} is corrupt: {detail}; it was damaged before it was sealed, or written by a "
                      "faulty writer: recompute it from its data")


def unseal(data, magic: bytes, version: int, what: str, unsealed: tuple[int, ...] = ()) -> memoryview:
    """The checked bytes of a form (everything but the checksum, magic and version
    included), or ValueError: not this kind of form, another version, truncated, or a
    checksum that does not match. A form of a version in `unsealed` (written before forms
    were sealed) is returned whole, unchecked: its content checks are all that guard it.

    Parameters
    ----------
    data : bytes-like
        The whole form.
    magic : bytes
        The 7-byte magic of this kind of form.
    version : int
        The version this fastsas writes and reads sealed.
    what : str
        The form's name in messages ("Moments byte form").
    unsealed : tuple of int
        Earlier versions, without a checksum, still read.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    view = memoryview(data).cast("B")
    head = bytes(view[:len(magic)])
    if not len(view) or head != magic[:len(head)]:
        raise ValueError(f"data is not a fastsas {what} (bad magic)")
    if len(view) < len(magic) + 1:
        raise ValueError(f"{what} is truncated: {len(view)} bytes")
    found = view[len(magic)]
    if found in unsealed:
        return view
    if found != version:
        known = [str(v) for v in (*unsealed, version)]
        reads = f"versions {', '.join(known[:-1])} and {known[-1]}" if unsealed else f"version {version}"
        origin = ("a newer fastsas: upgrade fastsas to read it" if found > version else
                  "an older fastsas: recompute it with this one")
        raise ValueError(f"{what} version {found} is not supported (this fastsas reads {reads}): it was "
                         f"written by {origin}, or it is damaged")
    if len(view) < len(magic) + 1 + CHECKSUM_BYTES:
        raise ValueError(f"{what} is truncated: {len(view)} bytes")
    body = view[:-CHECKSUM_BYTES]
    (stored,) = _CHECKSUM.unpack_from(view, len(view) - CHECKSUM_BYTES)
    actual = zlib.crc32(body)
    if actual != stored:
        raise ValueError(f"{what} is damaged: its CRC-32 is {actual:#010x} but it was sealed with {stored:#010x} "
                         f"({len(view)} bytes; truncated, padded or altered in transit or on disk); recompute it "
                         "from its data, or copy it again")
    return body


def check_finite(values: np.ndarray, what: str, field: str) -> None:
    """Refuse a decoded field holding NaN or infinities (no state of finite rows has them)."""
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise corrupt(what, f"{field} holds {bad.size} NaN or infinite values (first at position {int(bad[0])})")
