"""The ``.snap.jsonl`` format (spl.core.snapshot): a snapshot round-trips, and anything altered is refused.

A snapshot is built here the way the daemon streams one: each record's stored JSON on its own line, then
the manifest line. Every refusal must be an ``InvalidRequest`` with ``SNAPSHOT_MALFORMED`` or
``SIGNATURE_INVALID`` and name the line.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spl.core.errors import InvalidRequest
from spl.core.identity import Identity
from spl.core.record import validate_envelope
from spl.core.snapshot import (
    IdsDigest,
    SnapshotMalformed,
    SnapshotSignatureInvalid,
    manifest_line,
    parse_snapshot,
    records_sha256,
    split_threads,
)
from spl.core.stored import stored_json
from spl.core.verify import verify_pulled

IDENTITY = Identity.generate()
CREATED = "2026-11-30T16:00:00Z"


def stored(thread: str, clock: int, seq: int, **body: Any) -> str:
    raw = {"act": "PUT", "actor": "did:test:snap", "thread": thread, "clock": clock, "body": body or {"n": clock}}
    envelope = validate_envelope(raw)
    return stored_json(
        envelope, signer=IDENTITY.did, sig=IDENTITY.sign_record_id(envelope.id), seq=seq, created_at=1_790_000_000.0
    )


def snapshot_bytes(lines: list[str], threads: list[str], **overrides: Any) -> bytes:
    ids = [json.loads(line)["id"] for line in lines]
    fields: dict[str, Any] = {
        "record_count": len(lines),
        "records_hash": records_sha256(ids),
        "created_at": CREATED,
        "source_did": IDENTITY.did,
    }
    fields.update(overrides)
    return ("".join(line + "\n" for line in lines) + manifest_line(threads, **fields)).encode("ascii")


LINES = [stored("th_a", clock, clock) for clock in range(1, 4)] + [stored("th_b", 7, 4, note="b")]
GOOD = snapshot_bytes(LINES, ["th_a", "th_b"])


def test_round_trip_gives_the_records_in_file_order() -> None:
    snap = parse_snapshot(GOOD)
    assert [record["id"] for record in snap.records] == [json.loads(line)["id"] for line in LINES]
    assert [c.envelope.id for c in snap.candidates] == [r["id"] for r in snap.records]
    assert snap.manifest.threads == ("th_a", "th_b")
    assert snap.manifest.record_count == 4 and snap.manifest.source_did == IDENTITY.did
    assert snap.manifest.to_wire()["records_sha256"] == records_sha256(r["id"] for r in snap.records)


def test_an_empty_thread_is_a_valid_snapshot() -> None:
    snap = parse_snapshot(snapshot_bytes([], ["th_empty"]))
    assert snap.records == () and snap.manifest.threads == ("th_empty",)


def test_ids_digest_is_the_hash_of_sorted_ids_joined_by_newlines() -> None:
    ids = sorted(json.loads(line)["id"] for line in LINES)
    digest = IdsDigest()
    for record_id in ids:
        digest.add(record_id)
    assert digest.hexdigest() == hashlib.sha256("\n".join(ids).encode()).hexdigest() == records_sha256(reversed(ids))
    with pytest.raises(ValueError):
        digest.add(ids[0])


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (b"", "empty"),
        ("".join(line + "\n" for line in LINES).encode(), "line 4 (the last) is not the manifest"),
        (GOOD.replace(b"\n", b"\n\n", 1), "line 2 is not JSON"),
        (snapshot_bytes(LINES, ["th_a"]), "which the manifest does not list"),
        (snapshot_bytes(LINES, ["th_a", "th_b"], record_count=5), "counts 5 records"),
        (snapshot_bytes(LINES, ["th_a", "th_b"], records_hash="0" * 64), "records_sha256 does not match"),
        (snapshot_bytes([LINES[0], LINES[0]], ["th_a"]), "appears twice"),
        (GOOD.replace(b'"threads":["th_a","th_b"]', b'"threads":["th_b","th_a"]'), "sorted"),
        (snapshot_bytes(LINES[:1], ["th_a", "bad thread"]), "not a thread id"),
        (snapshot_bytes(LINES[:1], ["th_a"], created_at="yesterday"), "created_at"),
        (GOOD.replace(b'"snapshot_version":1', b'"snapshot_version":2'), "snapshot_version"),
        (GOOD.replace(b'"snapshot_version":1', b'"snapshot_version":1,"extra":1'), "exactly"),
        (GOOD.replace(b"\n", b"\n" + GOOD.splitlines()[-1] + b"\n", 1), "the manifest must be the last line"),
        (b"[1,2]\n" + GOOD, "line 1 is not a JSON object"),
    ],
)
def test_malformed_snapshots_are_refused_naming_the_line(data: bytes, where: str) -> None:
    with pytest.raises(SnapshotMalformed) as caught:
        parse_snapshot(data)
    assert caught.value.code == "SNAPSHOT_MALFORMED" and caught.value.status == 400
    assert where in caught.value.message and "spl thread snapshot" in caught.value.message


def test_a_forged_signature_is_signature_invalid_naming_the_line() -> None:
    other = Identity.generate()
    record = json.loads(LINES[1])
    record["sig"] = other.sign_record_id(record["id"])
    lines = [LINES[0], json.dumps(record, separators=(",", ":")), *LINES[2:]]
    with pytest.raises(SnapshotSignatureInvalid) as caught:
        parse_snapshot(snapshot_bytes(lines, ["th_a", "th_b"]))
    assert caught.value.code == "SIGNATURE_INVALID" and "line 2" in caught.value.message


def test_bounds_are_checked_before_verifying() -> None:
    with pytest.raises(SnapshotMalformed, match="more than 2 records"):
        parse_snapshot(GOOD, max_records=2)
    with pytest.raises(SnapshotMalformed, match="line 1 is longer than 100 bytes"):
        parse_snapshot(GOOD, max_line_bytes=100)


def test_split_threads_bounds_and_validates() -> None:
    assert split_threads("th_b,th_a,th_b") == ["th_a", "th_b"]
    for bad in ("", ",", "th a", ",".join(f"t{n}" for n in range(101))):
        with pytest.raises(InvalidRequest) as caught:
            split_threads(bad)
        assert caught.value.code == "INVALID_THREAD"


def _identity_set(data: bytes) -> set[tuple[str, str, str]]:
    return {(c.envelope.id, c.signer, c.sig) for c in parse_snapshot(data).candidates}


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_single_byte_change_is_refused_or_yields_the_same_records(data: st.DataObject) -> None:
    """Flip one byte anywhere: the parser refuses (with one of its two codes), or the verified set is unchanged."""
    position = data.draw(st.integers(0, len(GOOD) - 1), label="position")
    value = data.draw(st.integers(0, 255).filter(lambda b: b != GOOD[position]), label="byte")
    changed = GOOD[:position] + bytes([value]) + GOOD[position + 1 :]
    try:
        got = _identity_set(changed)
    except InvalidRequest as exc:
        assert exc.code in ("SNAPSHOT_MALFORMED", "SIGNATURE_INVALID")
        assert "line " in exc.message or "empty" in exc.message
    else:
        assert got == _identity_set(GOOD)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["th_a", "th_b", "th_c"]), st.integers(0, 10**6)), max_size=8, unique=True))
def test_round_trip_property(specs: list[tuple[str, int]]) -> None:
    lines = [stored(thread, clock, seq) for seq, (thread, clock) in enumerate(specs, 1)]
    threads = sorted({thread for thread, _ in specs}) or ["th_a"]
    snap = parse_snapshot(snapshot_bytes(lines, threads))
    assert [r["id"] for r in snap.records] == [json.loads(line)["id"] for line in lines]
    assert all(
        verify_pulled(record) == candidate for record, candidate in zip(snap.records, snap.candidates, strict=True)
    )
