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

from spl.core.errors import SplError
from spl.core.record import Envelope

__all__ = ["Accepted", "Candidate", "Outcome", "StoredRecord", "parked_json", "stored_json"]


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
    return json.dumps(record, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def parked_json(envelope: Envelope, *, signer: str, sig: str) -> str:
    """A parked record: the stored form without ``sequence``/``created_at``, which it only gets when applied.

    ``signer``/``sig`` are kept so the record stays what the peer vouched for: it was verified
    before it was parked, and re-applying it must not make it this instance's record.
    """
    return json.dumps(_record_object(envelope, signer=signer, sig=sig), ensure_ascii=True, separators=(",", ":"))


def _rfc3339(timestamp: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp))
    return f"{seconds}.{int(timestamp % 1 * 1_000_000):06d}Z"
