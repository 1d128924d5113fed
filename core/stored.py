"""A record once it is vouched for and once it is committed: the shapes every layer passes around.

``Candidate`` is a validated record plus its signature (what the writer is asked to commit);
``StoredRecord`` is a committed one, carrying the exact JSON text every reader serves, so reads
splice text instead of re-encoding. Both are pure values: the SQL that makes one from the other
lives in ``spl.store``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import msgspec

from spl.core.canonical import is_plain
from spl.core.errors import SplError
from spl.core.record import Envelope

__all__ = [
    "Accepted",
    "Candidate",
    "Outcome",
    "StoredRecord",
    "parked_json",
    "stored_json",
    "stored_json_from_head",
    "stored_json_head",
]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A validated record plus who vouches for it (``signer``/``sig``)."""

    envelope: Envelope
    signer: str
    sig: str


@dataclass(frozen=True, slots=True)
class Accepted:
    record: StoredRecord
    created: bool  # False: it was already stored (idempotent re-submission or replay)


Outcome = Accepted | SplError


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A committed record: its sequence and the exact JSON text every reader serves."""

    seq: int
    id: str
    thread: str
    json: str


def _record_object(envelope: Envelope, *, signer: str, sig: str) -> dict[str, Any]:
    record: dict[str, Any] = {"object": "record", **envelope.fields()}
    if envelope.judged_by is not None:
        record["judged_by"] = envelope.judged_by
    record["namespace"] = envelope.namespace
    record["signer"] = signer
    record["sig"] = sig
    return record


def stored_json(envelope: Envelope, *, signer: str, sig: str, seq: int, created_at: float) -> str:
    """The served form of a record: full fields, signature, sequence; ASCII-only JSON.

    ASCII-only matters for SSE: a raw U+2028 inside a data line is split by the SDK's
    ``splitlines()`` and the record would be lost (spec §3.7).
    """
    record = _record_object(envelope, signer=signer, sig=sig)
    record["sequence"] = seq
    record["created_at"] = _rfc3339(created_at)
    return _ascii_json(record)


def stored_json_head(envelope: Envelope, *, signer: str, sig: str) -> str:
    """:func:`stored_json` up to, not including, its ``sequence`` and ``created_at`` and its closing brace.

    An import's verification workers build this while the record has no sequence yet; the writer finishes it
    with :func:`stored_json_from_head`, which gives exactly the bytes :func:`stored_json` would (a test checks).
    """
    return _ascii_json(_record_object(envelope, signer=signer, sig=sig))[:-1]


def stored_json_from_head(head: str, *, seq: int, created_at: float) -> str:
    """The served form of a record from :func:`stored_json_head`: the two fields the store adds, then the brace."""
    return f'{head},"sequence":{int(seq)},"created_at":"{_rfc3339(created_at)}"}}'


_ENCODER = msgspec.json.Encoder()


def _ascii_json(record: dict[str, Any]) -> str:
    """``json.dumps(record, ensure_ascii=True, separators=(",", ":"), allow_nan=False)``, mostly by msgspec.

    Every committed record passes here, so the common case takes msgspec (several times faster):
    for a value without floats (:func:`spl.core.canonical.is_plain`) msgspec writes the same bytes
    as the standard library, except that it leaves non-ASCII characters and DEL (U+007F) raw where
    ``ensure_ascii`` escapes them. Output holding either, and any value with a float, is encoded
    again by the standard library, which also raises every error.
    """
    if is_plain(record):
        try:
            encoded = _ENCODER.encode(record)
        except ValueError:  # a lone surrogate, an integer too long to print
            pass
        else:
            if encoded.isascii() and b"\x7f" not in encoded:
                return encoded.decode("ascii")
    return json.dumps(record, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def parked_json(envelope: Envelope, *, signer: str, sig: str) -> str:
    """A parked record: the stored form without ``sequence``/``created_at``, which it only gets when applied.

    ``signer``/``sig`` are kept so the record stays what the peer vouched for: it was verified
    before it was parked, and re-applying it must not make it this instance's record.
    """
    return json.dumps(_record_object(envelope, signer=signer, sig=sig), ensure_ascii=True, separators=(",", ":"))


def _rfc3339(timestamp: float) -> str:
    """``created_at`` as served; one transaction gives all its records the same time, so the last one is kept."""
    global _last_rfc3339
    last = _last_rfc3339  # one tuple, replaced whole: a thread never sees one time with another's text
    if last[0] == timestamp:
        return last[1]
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp))
    text = f"{seconds}.{int(timestamp % 1 * 1_000_000):06d}Z"
    _last_rfc3339 = (timestamp, text)
    return text


_last_rfc3339: tuple[float, str] = (float("nan"), "")
