"""Thread snapshots: the ``.snap.jsonl`` format (spec §9, issue 11, seed 001 "Whole-pair recovery"). Pure.

A snapshot is a few threads' records as one text file, one JSON object per line::

    {"object":"record","id":…,"act":…,"actor":…,"thread":…,"clock":…,"body":…,"signer":…,"sig":…,…}
    …
    {"object":"thread_snapshot","snapshot_version":1,"threads":[…],"record_count":N,
     "records_sha256":…,"created_at":…,"source_did":…}

Every line but the last is a record exactly as the daemon serves it (its stored JSON); the last is the
manifest. ``records_sha256`` is the SHA-256 (lowercase hex) of the record ids, sorted, joined with
``"\\n"``: it depends only on *which* records the file holds, so two instances holding the same records
of a thread agree on it whatever their sequence numbers, and a file that lost or gained a record says so.

Why there is no signature over the file
---------------------------------------
Every record carries its own signature and its id is the hash of its content, so a record cannot be
altered without :func:`parse_snapshot` noticing; the manifest only has to pin the *set* (its hash) and
say where it came from. A snapshot is forensic material and a way to move threads, not an identity:
``source_did`` is informative. Whole instances move in signed bundles (``spl export``).

The parser treats the file as hostile: lines and records are bounded before they are decoded, every
record is verified (id recomputed, signature checked: :func:`spl.core.verify.verify_pulled`), duplicates
and records of unlisted threads are refused, and the manifest's counts and hash must match. Every
failure names the line.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from spl.core.config import DEFAULT_MAX_BODY
from spl.core.errors import InvalidRequest
from spl.core.record import THREAD
from spl.core.stored import Candidate
from spl.core.verify import verify_pulled

__all__ = [
    "MAX_LINE_BYTES",
    "MAX_RECORDS",
    "MAX_THREADS",
    "SNAPSHOT_OBJECT",
    "SNAPSHOT_VERSION",
    "IdsDigest",
    "Snapshot",
    "SnapshotMalformed",
    "SnapshotManifest",
    "SnapshotSignatureInvalid",
    "manifest_line",
    "parse_snapshot",
    "records_sha256",
    "split_threads",
]

SNAPSHOT_OBJECT = "thread_snapshot"
SNAPSHOT_VERSION = 1
MAX_THREADS = 100
"""At most this many threads in one snapshot (and one ``?threads=`` query)."""
MAX_RECORDS = 1_000_000
"""The parser's default record bound; a caller with a tighter budget (the restore route) passes its own."""
MAX_LINE_BYTES = DEFAULT_MAX_BODY + 64 * 1024
"""One line is one stored record: its emitted body (at most ``max_body_bytes``) plus envelope and signature."""
MAX_MANIFEST_LINE = 64 * 1024  # 100 threads of 256 characters is ~26 KB
MAX_DID = 128

_SHA256_HEX = re.compile(r"\A[0-9a-f]{64}\Z")
_RFC3339 = re.compile(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})\Z")
_MANIFEST_KEYS = frozenset(
    {"object", "snapshot_version", "threads", "record_count", "records_sha256", "created_at", "source_did"}
)
_DECODER = msgspec.json.Decoder()


class SnapshotMalformed(InvalidRequest):
    """A snapshot that is not what ``spl thread snapshot`` writes: refused whole, before anything is written."""

    code = "SNAPSHOT_MALFORMED"

    def __init__(self, message: str) -> None:
        super().__init__(
            f"snapshot malformed: {message}. Take the snapshot again with `spl thread snapshot THREAD… --out FILE`"
        )


class SnapshotSignatureInvalid(InvalidRequest):
    """A record in a snapshot whose signature does not verify: the file was altered or the record forged."""

    code = "SIGNATURE_INVALID"

    def __init__(self, message: str) -> None:
        super().__init__(
            f"signature verification failed: {message}. The snapshot was altered after it was taken; "
            "take it again from the source"
        )


def _shown(text: object, limit: int = 80) -> str:
    """Hostile text echoed in a message: bounded and escaped (``repr``), so it cannot forge log lines."""
    value = text if isinstance(text, str) else type(text).__name__
    return repr(value[:limit]) + ("…" if len(value) > limit else "")


# -- writing -------------------------------------------------------------------------------------


class IdsDigest:
    """``records_sha256`` fed one id at a time, in ascending order, with O(1) memory.

    The daemon streams a snapshot and reads the ids back sorted from its index; it never holds them all.
    Out-of-order or repeated ids are a bug in the caller, so they raise ``ValueError``.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._last = ""
        self.count = 0

    def add(self, record_id: str) -> None:
        if record_id <= self._last:
            raise ValueError("record ids must be fed in strictly ascending order")
        self._hash.update(record_id.encode("ascii") if not self.count else b"\n" + record_id.encode("ascii"))
        self._last = record_id
        self.count += 1

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def records_sha256(record_ids: Iterable[str]) -> str:
    """SHA-256 hex of the ids, sorted and de-duplicated, joined with ``"\\n"`` (the manifest's ``records_sha256``)."""
    digest = IdsDigest()
    for record_id in sorted(set(record_ids)):
        digest.add(record_id)
    return digest.hexdigest()


def manifest_line(
    threads: Iterable[str], *, record_count: int, records_hash: str, created_at: str, source_did: str
) -> str:
    """The last line of a snapshot (with its newline), keys in a fixed order."""
    manifest = {
        "object": SNAPSHOT_OBJECT,
        "snapshot_version": SNAPSHOT_VERSION,
        "threads": sorted(set(threads)),
        "record_count": record_count,
        "records_sha256": records_hash,
        "created_at": created_at,
        "source_did": source_did,
    }
    return msgspec.json.encode(manifest).decode("ascii") + "\n"


def split_threads(text: str | None) -> list[str]:
    """``?threads=T1,T2`` or the CLI's arguments: 1-100 valid thread ids, sorted, each once.

    Raises InvalidRequest 400 ``INVALID_THREAD`` naming the bad one (a thread is 1-256 of A-Z a-z 0-9 _ . : @ -).
    """
    names = [name for name in (text or "").split(",") if name]
    if not names or len(names) > MAX_THREADS:
        raise InvalidRequest(
            f"name 1-{MAX_THREADS} threads, comma-separated: ?threads=th_a,th_b (split larger snapshots)",
            code="INVALID_THREAD",
        )
    for name in names:
        if not THREAD.fullmatch(name):
            raise InvalidRequest(
                f"{_shown(name)} is not a thread id (1-256 of A-Z a-z 0-9 _ . : @ -)", code="INVALID_THREAD"
            )
    return sorted(set(names))


# -- reading -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotManifest:
    threads: tuple[str, ...]
    record_count: int
    records_sha256: str
    created_at: str
    source_did: str

    def to_wire(self) -> dict[str, Any]:
        return {
            "object": SNAPSHOT_OBJECT,
            "snapshot_version": SNAPSHOT_VERSION,
            "threads": list(self.threads),
            "record_count": self.record_count,
            "records_sha256": self.records_sha256,
            "created_at": self.created_at,
            "source_did": self.source_did,
        }


@dataclass(frozen=True)
class Snapshot:
    """A verified snapshot: its manifest, each record as served (``records``) and ready for the writer (``candidates``).

    ``records[i]`` and ``candidates[i]`` are the same record, in file order (the source's sequence order).
    Only the hashed and signed fields of ``records`` are vouched for; the rest (``sequence``, ``created_at``)
    is what the source said.
    """

    manifest: SnapshotManifest
    records: tuple[dict[str, Any], ...]
    candidates: tuple[Candidate, ...]


def _lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Numbered lines without their ``\\n``; the last may lack one."""
    start, number = 0, 0
    while start < len(data):
        end = data.find(b"\n", start)
        if end < 0:
            end = len(data)
        number += 1
        yield number, data[start:end]
        start = end + 1


def parse_snapshot(data: bytes, *, max_records: int = MAX_RECORDS, max_line_bytes: int = MAX_LINE_BYTES) -> Snapshot:
    """Verify a whole ``.snap.jsonl``; :class:`SnapshotMalformed` / :class:`SnapshotSignatureInvalid` naming the line.

    Checked: each line at most ``max_line_bytes`` and a JSON object; at most ``max_records`` records, each
    verified and each once; the last line a manifest of this version whose thread list is sorted, each
    thread once and valid, naming every record's thread; its count and ``records_sha256`` those of the records.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SnapshotMalformed("not bytes")
    data = bytes(data)
    records: list[dict[str, Any]] = []
    candidates: list[Candidate] = []
    seen: set[str] = set()
    last: tuple[int, bytes] | None = None
    for number, line in _lines(data):
        if last is not None:
            records_line, raw = last
            if len(records) >= max_records:
                raise SnapshotMalformed(f"line {records_line}: more than {max_records} records")
            record, candidate = _record(records_line, raw, max_line_bytes)
            if candidate.envelope.id in seen:
                raise SnapshotMalformed(f"line {records_line}: record {candidate.envelope.id} appears twice")
            seen.add(candidate.envelope.id)
            records.append(record)
            candidates.append(candidate)
        if len(line) > max(max_line_bytes, MAX_MANIFEST_LINE):
            raise SnapshotMalformed(f"line {number} is longer than {max(max_line_bytes, MAX_MANIFEST_LINE)} bytes")
        last = (number, line)
    if last is None:
        raise SnapshotMalformed("the file is empty; a snapshot ends with its manifest line")
    manifest = _manifest(*last)
    listed = set(manifest.threads)
    for index, candidate in enumerate(candidates):
        if candidate.envelope.thread not in listed:
            raise SnapshotMalformed(
                f"line {index + 1}: record {candidate.envelope.id} is of thread "
                f"{_shown(candidate.envelope.thread)}, which the manifest does not list"
            )
    if manifest.record_count != len(records):
        raise SnapshotMalformed(
            f"line {last[0]}: the manifest counts {manifest.record_count} records, the file holds {len(records)}"
        )
    if records_sha256(seen) != manifest.records_sha256:
        raise SnapshotMalformed(f"line {last[0]}: records_sha256 does not match the records the file holds")
    return Snapshot(manifest, tuple(records), tuple(candidates))


def _decode(number: int, line: bytes) -> dict[str, Any]:
    try:
        value = _DECODER.decode(line)
    except (msgspec.DecodeError, ValueError, RecursionError):
        raise SnapshotMalformed(f"line {number} is not JSON") from None
    if not isinstance(value, dict):
        raise SnapshotMalformed(f"line {number} is not a JSON object")
    return value


def _record(number: int, line: bytes, max_line_bytes: int) -> tuple[dict[str, Any], Candidate]:
    if len(line) > max_line_bytes:
        raise SnapshotMalformed(f"line {number} is longer than {max_line_bytes} bytes")
    raw = _decode(number, line)
    if raw.get("object") == SNAPSHOT_OBJECT:
        raise SnapshotMalformed(f"line {number} is a manifest, but the manifest must be the last line")
    outcome = verify_pulled(raw)
    if isinstance(outcome, Candidate):
        return raw, outcome
    if outcome.code == "SIGNATURE_INVALID":
        raise SnapshotSignatureInvalid(f"line {number}: record {outcome.record_id}: {outcome.reason}")
    raise SnapshotMalformed(f"line {number}: {outcome.code}: {outcome.reason}")


def _manifest(number: int, line: bytes) -> SnapshotManifest:
    where = f"line {number} (the last)"
    raw = _decode(number, line)
    if raw.get("object") != SNAPSHOT_OBJECT:
        raise SnapshotMalformed(f"{where} is not the manifest: the file was cut short")
    if set(raw) != _MANIFEST_KEYS:
        raise SnapshotMalformed(f"{where}: a manifest holds exactly {', '.join(sorted(_MANIFEST_KEYS))}")
    if type(raw["snapshot_version"]) is not int or raw["snapshot_version"] != SNAPSHOT_VERSION:
        raise SnapshotMalformed(f"{where}: snapshot_version must be {SNAPSHOT_VERSION}; upgrade spl to read it")
    threads = raw["threads"]
    if not isinstance(threads, list) or not 0 < len(threads) <= MAX_THREADS:
        raise SnapshotMalformed(f"{where}: threads must list 1-{MAX_THREADS} thread ids")
    if not all(isinstance(thread, str) and THREAD.fullmatch(thread) for thread in threads):
        raise SnapshotMalformed(f"{where}: threads holds something that is not a thread id")
    if threads != sorted(set(threads)):
        raise SnapshotMalformed(f"{where}: threads must be sorted, each once")
    count = raw["record_count"]
    if type(count) is not int or count < 0:
        raise SnapshotMalformed(f"{where}: record_count must be a non-negative integer")
    digest, created, source = raw["records_sha256"], raw["created_at"], raw["source_did"]
    if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
        raise SnapshotMalformed(f"{where}: records_sha256 must be 64 lowercase hex")
    if not isinstance(created, str) or not _RFC3339.fullmatch(created):
        raise SnapshotMalformed(f"{where}: created_at must be an RFC 3339 time")
    if not isinstance(source, str) or not 0 < len(source) <= MAX_DID or not (source.isascii() and source.isprintable()):
        raise SnapshotMalformed(f"{where}: source_did must be a DID")
    return SnapshotManifest(tuple(threads), count, digest, created, source)
