"""``spl debug thread-diff``'s comparison (spl.core.thread_diff): records only on one side, and fold differences.

Records are built as the daemon serves them (signed, with a ``sequence`` that differs by instance), so the
tests also show that instance-specific numbering never shows as a difference.
"""

from __future__ import annotations

from typing import Any

from spl.core.federation_pairs import FederationPair
from spl.core.handshake import NamespaceMap, pair_id_for
from spl.core.identity import Identity
from spl.core.pairs import PAIRS_THREAD
from spl.core.record import validate_envelope
from spl.core.thread_diff import diff_threads, pair_signer

ALICE = Identity(b"\x01" * 32)
BOB = Identity(b"\x02" * 32)
NONCE = "0123456789abcdef" * 2
PAIR_ID = pair_id_for(ALICE.did, BOB.did, NONCE)
NOW = 1_780_000_000.0


def served(identity: Identity, raw: dict[str, Any], sequence: int) -> dict[str, Any]:
    envelope = validate_envelope(raw)
    return {
        "object": "record",
        **envelope.fields(),
        "signer": identity.did,
        "sig": identity.sign_record_id(envelope.id),
        "sequence": sequence,
    }


def put(thread: str, act: str, clock: int, sequence: int, **body: Any) -> dict[str, Any]:
    return served(
        ALICE, {"act": act, "actor": "did:test:actor", "thread": thread, "clock": clock, "body": body}, sequence
    )


def pair(side: Identity, peer: Identity, role: str, **changes: Any) -> FederationPair:
    fields: dict[str, Any] = {
        "pair_id": PAIR_ID,
        "role": role,
        "peer_did": peer.did,
        "peer_url": "https://peer.example:9100",
        "maps": (NamespaceMap("default", "default"),),
        "mode": "polling",
        "poll_interval": 300.0,
        "state": "active",
        "state_reason": "approved",
        "nonce": NONCE,
        "created_at": NOW,
        "updated_at": NOW,
    }
    fields.update(changes)
    return FederationPair(**fields)


def pair_record(side: Identity, value: FederationPair, kind: str, clock: int, sequence: int) -> dict[str, Any]:
    raw = {"act": "LEARN", "actor": side.did, "thread": PAIRS_THREAD, "clock": clock, "body": value.body(kind)}
    return served(side, raw, sequence)


def test_identical_sides_are_the_same_even_with_other_sequences() -> None:
    a = [put("th_x", "INTEND", 1, 10, goal="g"), put("th_x", "DO", 2, 11)]
    b = [{**record, "sequence": record["sequence"] + 500} for record in a]
    diff = diff_threads(a, b)
    assert not diff.differs
    assert diff.to_wire() == {
        "object": "thread_diff",
        "differs": False,
        "only_in_a": [],
        "only_in_b": [],
        "fold_differences": [],
    }


def test_a_record_only_on_one_side_and_the_fold_it_changes() -> None:
    opened = put("th_x", "INTEND", 1, 1, goal="g")
    done = put("th_x", "KNOW", 2, 2, summary="ok", fulfills=opened["id"])
    diff = diff_threads([opened, done], [opened])
    assert diff.differs and diff.only_in_b == ()
    (only,) = diff.only_in_a
    assert (only.id, only.act, only.clock, only.thread) == (done["id"], "KNOW", 2, "th_x")
    texts = [difference.text() for difference in diff.fold]
    assert "thread th_x: state done (A) vs open (B)" in texts
    assert "thread th_x: record_count 2 (A) vs 1 (B)" in texts
    assert f"thread th_x: closed_by {done['id']} (A) vs none (B)" in texts


def test_the_two_ends_of_a_pair_compare_only_what_they_share() -> None:
    """Alice paused her end; Bob's still says active. Role and peer differ by design and are not reported."""
    ours = [
        pair_record(ALICE, pair(ALICE, BOB, "initiator"), "pair.active.v1", 1, 3),
        pair_record(ALICE, pair(ALICE, BOB, "initiator", state="paused"), "pair.config.v1", 2, 4),
    ]
    theirs = [pair_record(BOB, pair(BOB, ALICE, "responder"), "pair.active.v1", 1, 9)]
    assert pair_signer(ours) == ALICE.did and pair_signer(theirs) == BOB.did
    diff = diff_threads(ours, theirs)
    pair_texts = [d.text() for d in diff.fold if d.scope == PAIR_ID]
    assert pair_texts == [f"{PAIR_ID}: state paused (A) vs active (B)"]


def test_the_same_instance_over_time_compares_every_pair_field() -> None:
    before = [pair_record(ALICE, pair(ALICE, BOB, "initiator"), "pair.active.v1", 1, 1)]
    changed = pair(ALICE, BOB, "initiator", mode="continuous", peer_url="https://moved.example:9100")
    after = [*before, pair_record(ALICE, changed, "pair.config.v1", 2, 2)]
    fields = {d.field: (d.a, d.b) for d in diff_threads(before, after).fold if d.scope == PAIR_ID}
    assert fields == {
        "mode": ("polling", "continuous"),
        "peer_url": ("https://peer.example:9100", "https://moved.example:9100"),
    }


def test_a_pair_only_one_side_knows_and_a_planted_record_is_not_folded() -> None:
    ours = [pair_record(ALICE, pair(ALICE, BOB, "initiator"), "pair.active.v1", 1, 1)]
    planted = pair_record(BOB, pair(ALICE, BOB, "initiator", state="revoked"), "pair.revoke.v1", 2, 2)
    diff = diff_threads([*ours, planted], [], did_a=ALICE.did)
    assert [d.text() for d in diff.fold if d.scope == PAIR_ID] == [f"{PAIR_ID}: pair present (A) vs absent (B)"]
    assert {r.id for r in diff.only_in_a} == {ours[0]["id"], planted["id"]}
