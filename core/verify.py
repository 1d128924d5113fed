"""Verifying a record that arrived from a peer (spec §8.1, §15.12). Pure CPU work.

The id is recomputed from the seven hashed fields and must equal the claimed ``id``;
``sig`` must verify against ``signer`` over the id bytes. The original ``signer``/``sig``
are kept, so a record stays attributable to the instance that first accepted it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spl.core.errors import InvalidRecord
from spl.core.identity import verify_record_signature
from spl.core.record import validate_envelope
from spl.core.reserved import is_reserved
from spl.core.stored import Candidate

__all__ = ["Refusal", "screen_pulled", "screen_pushed", "verify_batch", "verify_pulled"]

# Bounds checked before any decoding: a did:key of an Ed25519 key is 56 characters and a
# base64url Ed25519 signature 86; anything much longer is refused without touching it.
MAX_SIGNER = 128
MAX_SIG = 128


@dataclass(frozen=True, slots=True)
class Refusal:
    """A record that will not be stored, and why (``code`` is one of pairs.REFUSAL_CODES)."""

    record_id: str
    code: str
    reason: str

    def to_wire(self) -> dict[str, str]:
        return {"id": self.record_id, "code": self.code, "reason": self.reason}


def verify_pulled(raw: object) -> Candidate | Refusal:
    """A verified candidate for ingest, or the reason the record is refused."""
    if not isinstance(raw, dict):
        return Refusal("?", "INVALID_RECORD", "not a JSON object")
    claimed = raw.get("id")
    claimed_id = claimed[:64] if isinstance(claimed, str) else "?"  # echoed back and logged: bounded
    try:
        envelope = validate_envelope(raw)
    except InvalidRecord as exc:
        return Refusal(claimed_id, "INVALID_RECORD", exc.message)
    if claimed != envelope.id:
        return Refusal(claimed_id, "ID_MISMATCH", f"content hashes to {envelope.id}, not the claimed id")
    signer, sig = raw.get("signer"), raw.get("sig")
    if not isinstance(signer, str) or not isinstance(sig, str):
        return Refusal(envelope.id, "SIGNATURE_INVALID", "record carries no signer/sig")
    if len(signer) > MAX_SIGNER or len(sig) > MAX_SIG:
        return Refusal(envelope.id, "SIGNATURE_INVALID", "signer or sig longer than an Ed25519 did:key signature")
    if not verify_record_signature(envelope.id, signer, sig):
        return Refusal(envelope.id, "SIGNATURE_INVALID", f"sig does not verify against signer {signer[:32]}…")
    return Candidate(envelope, signer, sig)


def screen_pulled(raws: list[Any], thread: str, namespaces: tuple[str, ...] = ()) -> tuple[list[Any], list[Refusal]]:
    """Split a page pulled for ``thread`` into what may be verified and what is refused outright.

    A pair pulls one thread; a peer's page may only hold records of that thread. Anything
    else — records for another thread, above all for this instance's reserved
    configuration threads — is refused before it costs a signature check, however validly
    it is signed. (The id covers ``thread``, so a record cannot lie about its thread and
    still pass verification.)

    A federation pair pulls namespaces instead (``namespaces`` non-empty): a record of any
    thread but a reserved one, whose ``body.namespace`` (hashed, so verification holds it to
    its word) is one of ``namespaces``.
    """
    if namespaces:
        return _screen_namespaces(raws, namespaces)
    kept: list[Any] = []
    refused: list[Refusal] = []
    for raw in raws:
        claimed = raw.get("thread") if isinstance(raw, dict) else None
        claimed_id = raw.get("id") if isinstance(raw, dict) else None
        record_id = claimed_id if isinstance(claimed_id, str) else "?"
        if is_reserved(claimed):
            refused.append(Refusal(record_id[:64], "RESERVED_THREAD", "record is for a reserved thread"))
        elif claimed != thread:
            refused.append(Refusal(record_id[:64], "THREAD_MISMATCH", f"record is not for {thread}"))
        else:
            kept.append(raw)
    return kept, refused


def _screen_namespaces(raws: list[Any], namespaces: tuple[str, ...]) -> tuple[list[Any], list[Refusal]]:
    kept: list[Any] = []
    refused: list[Refusal] = []
    for raw in raws:
        claimed = raw.get("thread") if isinstance(raw, dict) else None
        claimed_id = raw.get("id") if isinstance(raw, dict) else None
        record_id = claimed_id[:64] if isinstance(claimed_id, str) else "?"
        body = raw.get("body") if isinstance(raw, dict) else None
        namespace = body.get("namespace", "default") if isinstance(body, dict) else "default"
        if is_reserved(claimed):
            refused.append(Refusal(record_id, "RESERVED_THREAD", "record is for a reserved thread"))
        elif namespace not in namespaces:
            refused.append(Refusal(record_id, "NAMESPACE_NOT_PAIRED", "record is outside the pair's namespaces"))
        else:
            kept.append(raw)
    return kept, refused


def screen_pushed(raws: list[Any]) -> tuple[list[Any], list[Refusal]]:
    """Split a pushed batch into what may be verified and the records for reserved threads.

    A push may carry records of any thread but never this instance's configuration
    (spec §15.18): those are refused with ``RESERVED_THREAD`` before any signature check.
    """
    kept: list[Any] = []
    refused: list[Refusal] = []
    for raw in raws:
        thread = raw.get("thread") if isinstance(raw, dict) else None
        if is_reserved(thread):
            refused.append(Refusal(str(raw.get("id"))[:64], "RESERVED_THREAD", f"{thread} is a reserved thread"))
        else:
            kept.append(raw)
    return kept, refused


def verify_batch(raws: list[Any]) -> list[Candidate | Refusal]:
    """Verify a page; runs in a worker thread (libsodium releases the GIL)."""
    return [verify_pulled(raw) for raw in raws]
