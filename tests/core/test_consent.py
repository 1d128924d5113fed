"""Consent: grants, the filter's decision and redacted projections (docs/federation-pairs.md "Consent").

The property test at the end is the acceptance's: over random namespaces, grants, re-issues,
revocations, planted records and records carrying a secret, the filter agrees with a plainly
written reference, no body content crosses a namespace without an L0 grant in force, and every
grant in force delivers what it grants.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from spl.core import consent
from spl.core.consent import (
    CONSENT_THREAD,
    GRANT_KIND,
    HASH_LEVELS,
    PROJECTION_KIND,
    ConsentBook,
    Decision,
    Grant,
    decide,
    grant_body,
    is_grant_id,
    new_grant_id,
    project,
    revoke_body,
    validate_grant_request,
)
from spl.core.errors import Conflict, InvalidRequest, SplError
from spl.core.hashlevels import hash_levels
from spl.core.identity import Identity, InstanceIdentity
from spl.core.record import validate_envelope
from spl.core.rotation import own_keys
from spl.core.stored import Candidate
from spl.core.verify import verify_pulled

NOW = 1_900_000_000.0
OWN = Identity(b"\x01" * 32)
STRANGER = Identity(b"\x02" * 32)
PEER_A = Identity(b"\x03" * 32).did
PEER_B = Identity(b"\x04" * 32).did
SECRET = "s3cr3t!payload"  # "!" appears in no hex, base58, base64url, namespace or thread: only a leak can show it


def grant(**fields: Any) -> Grant:
    base: dict[str, Any] = {
        "grant_id": new_grant_id(),
        "source_namespace": "default",
        "target_namespace": "acme",
        "hash_levels": frozenset({"L1"}),
        "threads": ("*",),
        "purpose": "",
        "expires_at": None,
        "peer_did": None,
        "created_at": NOW - 100,
        "revoked_at": None,
        "seq": 0,
    }
    base.update(fields)
    return Grant(**base)


def grant_record(body: dict[str, Any], signer: Identity = OWN, **overrides: Any) -> dict[str, Any]:
    record = {"thread": CONSENT_THREAD, "act": "LEARN", "body": body, "signer": signer.did}
    record.update(overrides)
    return record


class Book:
    """A ConsentBook fed in sequence order, as the daemon feeds it from the store."""

    def __init__(self) -> None:
        self.book = ConsentBook()
        self.seq = 0

    def apply(self, body: dict[str, Any], signer: Identity = OWN, **overrides: Any) -> bool:
        self.seq += 1
        return self.book.apply(grant_record(body, signer, **overrides), self.seq, OWN.did)

    def issue(self, **fields: Any) -> Grant:
        made = grant(**fields)
        assert self.apply(grant_body(made))
        stored = self.book.get(made.grant_id)
        assert stored is not None
        return stored

    def revoke(self, made: Grant, at: float = NOW - 1) -> None:
        assert self.apply(revoke_body(made, at))


def decision(book: ConsentBook, source: str, target: str = "acme", **fields: Any) -> Decision:
    arguments: dict[str, Any] = {"thread": "th_orders", "peer_did": None, "now": NOW}
    arguments.update(fields)
    return decide(book, record_namespace=source, target_namespace=target, **arguments)


def stored(namespace: str = "default", thread: str = "th_orders", **body: Any) -> dict[str, Any]:
    """A committed record of ``namespace`` as the store holds it (signed by whoever accepted it)."""
    full_body = {"secret": SECRET, **body}
    if namespace != "default":
        full_body["namespace"] = namespace
    envelope = validate_envelope(
        {"act": "DO", "actor": f"did:example:alice{SECRET}", "thread": thread, "clock": 7, "body": full_body}
    )
    return {"object": "record", **envelope.fields(), "namespace": namespace, "signer": STRANGER.did, "sig": "x"}


# -- validation of a grant request ----------------------------------------------------------------


def test_request_defaults_one_level_every_thread_no_expiry() -> None:
    made = validate_grant_request({"target_namespace": "acme"}, now=NOW, grant_id="cg_" + "0" * 16)
    assert made == grant(
        grant_id="cg_" + "0" * 16, created_at=NOW, hash_levels=frozenset({"L1"}), threads=("*",), seq=0
    )


def test_request_with_every_field() -> None:
    made = validate_grant_request(
        {
            "source_namespace": "acme/ops",
            "target_namespace": "default",
            "hash_levels": ["L3", "L0"],
            "threads": ["th_b", "th_a*", "th_b"],
            "purpose": "quarterly audit",
            "expires": "30d",
            "peer_did": PEER_A,
        },
        now=NOW,
        grant_id="cg_" + "1" * 16,
    )
    assert made.hash_levels == {"L0", "L3"}
    assert made.threads == ("th_a*", "th_b")  # sorted, de-duplicated
    assert made.expires_at == NOW + 30 * 86400
    assert made.peer_did == PEER_A and made.purpose == "quarterly audit"


@pytest.mark.parametrize(
    ("expires", "expected"),
    [
        ("12h", NOW + 12 * 3600),
        (" 90m ", NOW + 5400),
        ("1.5d", NOW + 1.5 * 86400),
        (3600, NOW + 3600),
        (0.5, NOW + 0.5),
        ("2031-01-01T00:00:00Z", 1924992000.0),
        ("2031-01-01T01:00:00+01:00", 1924992000.0),
        (None, None),
    ],
)
def test_expires_as_a_duration_or_a_time(expires: object, expected: float | None) -> None:
    made = validate_grant_request({"target_namespace": "acme", "expires": expires}, now=NOW, grant_id=new_grant_id())
    assert made.expires_at == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ([], "request"),
        ({"target_namespace": "acme", "hash_level": ["L0"]}, "hash_level"),  # a misspelling grants nothing
        ({}, "target_namespace"),
        ({"target_namespace": "Acme!"}, "target_namespace"),
        ({"target_namespace": 7}, "target_namespace"),
        ({"target_namespace": "acme", "source_namespace": "a//b"}, "source_namespace"),
        ({"target_namespace": "default"}, "target_namespace"),  # same as the source: needs no grant
        ({"target_namespace": "acme", "hash_levels": "L0,L1"}, "hash_levels"),
        ({"target_namespace": "acme", "hash_levels": []}, "hash_levels"),
        ({"target_namespace": "acme", "hash_levels": ["L4"]}, "hash_levels"),
        ({"target_namespace": "acme", "hash_levels": ["L1"] * 5}, "hash_levels"),
        ({"target_namespace": "acme", "threads": []}, "threads"),
        ({"target_namespace": "acme", "threads": "*"}, "threads"),
        ({"target_namespace": "acme", "threads": ["th a"]}, "threads"),
        ({"target_namespace": "acme", "threads": ["th_*x"]}, "threads"),
        ({"target_namespace": "acme", "threads": ["*th"]}, "threads"),
        ({"target_namespace": "acme", "threads": [None]}, "threads"),
        ({"target_namespace": "acme", "threads": ["th_consent"]}, "threads"),
        ({"target_namespace": "acme", "threads": [f"th_{i}" for i in range(65)]}, "threads"),
        ({"target_namespace": "acme", "purpose": "x" * 257}, "purpose"),
        ({"target_namespace": "acme", "purpose": "line\nbreak"}, "purpose"),
        ({"target_namespace": "acme", "purpose": 3}, "purpose"),
        ({"target_namespace": "acme", "expires": "soon"}, "expires"),
        ({"target_namespace": "acme", "expires": "2020-01-01T00:00:00Z"}, "expires"),  # in the past
        ({"target_namespace": "acme", "expires": "2030-01-01T00:00:00"}, "expires"),  # no zone
        ({"target_namespace": "acme", "expires": 0}, "expires"),
        ({"target_namespace": "acme", "expires": -60}, "expires"),
        ({"target_namespace": "acme", "expires": True}, "expires"),
        ({"target_namespace": "acme", "expires": float("inf")}, "expires"),
        ({"target_namespace": "acme", "expires": "200y"}, "expires"),
        ({"target_namespace": "acme", "expires": "40000d"}, "expires"),  # past the 100-year bound
        ({"target_namespace": "acme", "expires": ["30d"]}, "expires"),
        ({"target_namespace": "acme", "expires": 10**400}, "expires"),  # no OverflowError from float()
        ({"target_namespace": "acme", "expires": float("nan")}, "expires"),
        ({"target_namespace": "acme", "expires": "9" * 65}, "expires"),
        ({"target_namespace": "acme", "peer_did": "alice"}, "peer_did"),
        ({"target_namespace": "acme", "peer_did": "did:key:z" + "1" * 400}, "peer_did"),
        ({"target_namespace": "acme", "peer_did": 5}, "peer_did"),
    ],
)
def test_each_bad_field_is_a_400_naming_it(payload: object, field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_grant_request(payload, now=NOW, grant_id=new_grant_id())
    assert caught.value.status == 400 and caught.value.code == "INVALID_GRANT"
    assert caught.value.message.startswith(f"{field}: ")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats()
    | st.text(max_size=40)
    | st.sampled_from(["30d", "L0", "*", "th_x*", "acme", "default", PEER_A, "2030-01-01T00:00:00Z", "1e999"]),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


request_bodies = (
    st.fixed_dictionaries(
        {"target_namespace": st.sampled_from(["acme", "a/b", "default"]) | json_values},
        optional={
            "source_namespace": st.sampled_from(["default", "a", "acme/x"]) | json_values,
            "hash_levels": st.lists(st.sampled_from(HASH_LEVELS), min_size=1, max_size=4) | json_values,
            "threads": st.lists(st.sampled_from(["*", "th_x*", "th_1"]), min_size=1, max_size=3) | json_values,
            "purpose": st.text(max_size=20) | json_values,
            "expires": st.sampled_from(["30d", "12h", 3600, None, "2031-01-01T00:00:00Z"]) | json_values,
            "peer_did": st.sampled_from([None, PEER_A]) | json_values,
        },
    )
    | st.dictionaries(st.sampled_from(consent.REQUEST_FIELDS) | st.text(max_size=8), json_values)
    | json_values
)


@settings(max_examples=300, deadline=None)
@given(payload=request_bodies)
def test_any_request_body_is_a_grant_or_a_400(payload: object) -> None:
    try:
        made = validate_grant_request(payload, now=NOW, grant_id=new_grant_id())
    except InvalidRequest as exc:
        assert exc.status == 400 and exc.code == "INVALID_GRANT"
        event(exc.message.split(":")[0])
    else:
        event("accepted")  # whatever was accepted folds back to the same grant
        fold = ConsentBook()
        assert fold.apply(grant_record(json.loads(json.dumps(grant_body(made)))), 1, OWN.did)
        assert fold.get(made.grant_id) == replace(made, seq=1)
        assert json.dumps(made.to_wire(NOW))


def test_a_hostile_unknown_key_is_escaped_in_the_message() -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_grant_request({"target_namespace": "acme", "\x1b[31mx\ny": 1}, now=NOW, grant_id=new_grant_id())
    assert "\x1b" not in caught.value.message and "\n" not in caught.value.message


def test_grant_ids() -> None:
    assert is_grant_id(new_grant_id())
    assert new_grant_id(lambda count: "ab" * count) == "cg_" + "ab" * 8
    assert not is_grant_id("cg_" + "A" * 16) and not is_grant_id("cg_" + "0" * 16 + "\n") and not is_grant_id(None)


def test_to_wire_times_and_status() -> None:
    made = grant(created_at=NOW, expires_at=NOW + 60)
    wire = made.to_wire(NOW)
    assert wire["object"] == "consent_grant" and wire["status"] == "active"
    assert wire["created_at"] == "2030-03-17T17:46:40Z" and wire["expires_at"] == "2030-03-17T17:47:40Z"
    assert wire["revoked_at"] is None and wire["hash_levels"] == ["L1"] and wire["threads"] == ["*"]
    assert made.to_wire(NOW + 60)["status"] == "expired"
    assert replace(made, revoked_at=NOW).to_wire(NOW)["status"] == "revoked"
    assert json.dumps(wire)  # JSON-ready as is


# -- the fold --------------------------------------------------------------------------------------


def test_a_grant_record_round_trips_through_the_fold() -> None:
    book = Book()
    made = grant(expires_at=NOW + 10, peer_did=PEER_A, purpose="audit", threads=("th_a*", "th_b"))
    assert book.apply(grant_body(made))
    assert book.book.get(made.grant_id) == replace(made, seq=1)
    assert book.book.grants() == [replace(made, seq=1)] and book.book.version == 1


def test_most_recent_matching_grant_wins() -> None:
    book = Book()
    full = book.issue(hash_levels=frozenset({"L0", "L1"}))
    assert decision(book.book, "default") == Decision("deliver", frozenset({"L0", "L1"}), full.grant_id)
    narrow = book.issue(hash_levels=frozenset({"L2"}))
    assert decision(book.book, "default") == Decision("project", frozenset({"L2"}), narrow.grant_id)
    book.revoke(narrow)
    assert decision(book.book, "default").grant_id == full.grant_id  # the older grant in force applies again


def test_a_reissue_of_the_same_grant_replaces_it() -> None:
    book = Book()
    made = book.issue(hash_levels=frozenset({"L1"}))
    assert book.apply(grant_body(replace(made, hash_levels=frozenset({"L0"}))))
    assert decision(book.book, "default").action == "deliver"
    assert len(book.book.grants()) == 1


def test_revocation_is_final_and_forward_only() -> None:
    book = Book()
    made = book.issue(hash_levels=frozenset({"L0"}))
    before = decision(book.book, "default")
    book.revoke(made, at=NOW - 5)
    assert decision(book.book, "default").action == "withhold"
    assert before.action == "deliver"  # what was decided before stays decided: nothing is recalled
    # a later record of the same grant that is not revoked cannot bring it back
    assert not book.apply(grant_body(made))
    revoked = book.book.get(made.grant_id)
    assert revoked is not None and revoked.status(NOW) == "revoked" and revoked.revoked_at == NOW - 5
    assert decision(book.book, "default").action == "withhold"


def test_expiry_is_honoured_to_the_second() -> None:
    book = Book()
    book.issue(expires_at=NOW + 1)
    assert decision(book.book, "default", now=NOW).action == "project"
    assert decision(book.book, "default", now=NOW + 1).action == "withhold"


def test_same_namespace_flows_and_reserved_threads_never_do() -> None:
    book = Book()
    book.issue(source_namespace="default", target_namespace="acme", hash_levels=frozenset({"L0"}))
    assert decision(book.book, "acme", "acme") == Decision("deliver", frozenset(HASH_LEVELS), None)
    assert decision(book.book, "acme", "acme", thread="th_consent").action == "withhold"
    assert decision(book.book, "default", "acme", thread="th_federation_pairs").action == "withhold"
    assert decision(book.book, "default", "other").action == "withhold"  # no grant to that target
    assert decision(book.book, "acme", "default").action == "withhold"  # grants have a direction


def test_thread_patterns() -> None:
    book = Book()
    book.issue(threads=("th_orders_*", "th_exact"))
    assert decision(book.book, "default", thread="th_orders_2026").action == "project"
    assert decision(book.book, "default", thread="th_exact").action == "project"
    assert decision(book.book, "default", thread="th_exactly").action == "withhold"
    assert decision(book.book, "default", thread="th_order").action == "withhold"


def test_answers_stay_right_across_changes_and_a_full_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consent, "MAX_MEMO", 2)
    book = Book()
    made = book.issue(threads=("th_a*",))
    for round_ in range(3):
        for thread in ("th_a1", "th_a2", "th_b", "th_a3"):
            expected = "project" if thread.startswith("th_a") else "withhold"
            assert decision(book.book, "default", thread=thread).action == expected, round_
    assert decision(book.book, "default", thread="th_a1", now=NOW + 10**9).action == "project"
    book.revoke(made)  # a change is seen at once, whatever was asked before
    assert decision(book.book, "default", thread="th_a1").action == "withhold"


def test_a_grant_for_one_peer_holds_for_that_peer_only() -> None:
    book = Book()
    made = book.issue(peer_did=PEER_A)
    assert decision(book.book, "default", peer_did=PEER_A).grant_id == made.grant_id
    assert decision(book.book, "default", peer_did=PEER_B).action == "withhold"
    assert decision(book.book, "default", peer_did=None).action == "withhold"


@pytest.mark.parametrize(
    "planted",
    [
        {"signer": STRANGER.did},
        {"signer": None},
        {"thread": "th_orders"},
        {"act": "KNOW"},
        {"body": "not an object"},
    ],
)
def test_records_not_written_by_this_instance_change_nothing(planted: dict[str, Any]) -> None:
    book = Book()
    record = {**grant_record(grant_body(grant(hash_levels=frozenset({"L0"})))), **planted}
    assert not book.book.apply(record, 1, OWN.did)
    assert book.book.grants() == [] and book.book.version == 0
    assert decision(book.book, "default").action == "withhold"


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "core.namespace.v1"},
        {"_v": 2},
        {"grant_id": "cg_short"},
        {"hash_levels": ["L9"]},
        {"hash_levels": []},
        {"threads": ["th bad"]},
        {"source_namespace": "acme"},  # equal to the target
        {"created_at": "yesterday"},
        {"created_at": 10**400},
        {"created_at": -1},
        {"expires_at": float("nan")},
        {"expires_at": True},
        {"revoked": True},  # revoked without a time
        {"revoked_at": NOW},  # a time without revoked
        {"peer_did": "nobody"},
        {"purpose": None},
    ],
)
def test_malformed_grant_bodies_are_ignored(change: dict[str, Any]) -> None:
    book = Book()
    assert not book.apply({**grant_body(grant()), **change})
    assert book.book.grants() == [] and not book.book.widened_since(0)


def test_replays_and_older_records_are_ignored() -> None:
    fold = ConsentBook()
    made = grant()
    newer = replace(made, hash_levels=frozenset({"L2"}))
    assert fold.apply(grant_record(grant_body(newer)), 5, OWN.did)
    assert not fold.apply(grant_record(grant_body(newer)), 5, OWN.did)
    assert not fold.apply(grant_record(grant_body(made)), 3, OWN.did)
    current = fold.get(made.grant_id)
    assert current is not None and current.hash_levels == {"L2"} and fold.version == 5


def test_widened_since() -> None:
    book = Book()
    made = book.issue(hash_levels=frozenset({"L1", "L2"}), threads=("th_a",), expires_at=NOW + 10, peer_did=PEER_A)
    assert book.book.widened_since(0) and not book.book.widened_since(book.book.version)

    def widens(**fields: Any) -> bool:
        version = book.book.version
        assert book.apply(grant_body(replace(made, **fields)))
        return book.book.widened_since(version)

    assert not widens(hash_levels=frozenset({"L1"}))  # narrower
    assert widens(hash_levels=frozenset({"L1", "L0"}))  # adds a level
    assert not widens(hash_levels=frozenset({"L1", "L0"}), expires_at=NOW + 5)  # shorter
    assert widens(hash_levels=frozenset({"L1", "L0"}), expires_at=NOW + 50)  # extends expiry
    assert widens(hash_levels=frozenset({"L1", "L0"}), expires_at=None)  # no expiry at all
    assert widens(hash_levels=frozenset({"L1", "L0"}), threads=("th_a", "th_b"))  # adds a thread
    assert widens(hash_levels=frozenset({"L1", "L0"}), threads=("th_a", "th_b"), peer_did=None)  # any peer
    version = book.book.version
    book.revoke(made)
    assert not book.book.widened_since(version)  # a revocation never widens
    assert book.book.version == version + 1
    version = book.book.version
    book.issue()  # a new grant does
    assert book.book.widened_since(version)


def test_room_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consent, "MAX_GRANTS", 2)
    book = Book()
    book.issue()
    expired = book.issue(expires_at=NOW - 1)
    book.book.ensure_room(NOW)  # the expired one does not count
    book.issue()
    with pytest.raises(Conflict) as caught:
        book.book.ensure_room(NOW)
    assert caught.value.status == 409 and caught.value.code == "TOO_MANY_GRANTS"
    assert expired.status(NOW) == "expired"


# -- projections -----------------------------------------------------------------------------------


def projection_of(record: dict[str, Any], levels: frozenset[str], seq: int = 42, target: str = "acme") -> Any:
    chosen = Decision("project", levels, "cg_" + "a" * 16)
    return project(record, source_seq=seq, decision=chosen, target_namespace=target, signer=OWN)


def test_a_projection_verifies_like_any_record() -> None:
    original = stored("default", operation="db.query", domain="billing")
    projection = projection_of(original, frozenset({"L1", "L3"}))
    verified = verify_pulled(json.loads(json.dumps(projection)))  # as a receiver gets it off the wire
    assert isinstance(verified, Candidate) and verified.signer == OWN.did
    assert verified.envelope.namespace == "acme" and projection["namespace"] == "acme"
    assert projection["actor"] == f"{OWN.did}#projection:acme" and projection["act"] == "KNOW"
    assert projection["thread"] == original["thread"] and projection["parents"] == []
    assert projection["clock"] == 42 * 16 + 1 + 4
    levels = hash_levels("DO", original["body"])
    assert projection["body"] == {
        "kind": PROJECTION_KIND,
        "_v": 1,
        "redacted": True,
        "namespace": "acme",
        "original_id": original["id"],
        "original_act": "DO",
        "original_clock": 7,
        "source_namespace": "default",
        "granted_levels": ["L1", "L3"],
        "hash_levels": {"L1": levels["L1"], "L3": levels["L3"]},
    }
    text = json.dumps(projection)
    assert SECRET not in text and "secret" not in text and "db.query" not in text and "billing" not in text


def test_after_a_rotation_projections_verify_and_grants_of_either_key_count() -> None:
    """A rotated instance signs with its new key under the same identifier: what it projects verifies at a peer
    (signer and signature from one key), and its grant fold counts grants either key signed."""
    rotated = InstanceIdentity(OWN.seed)
    successor = Identity(b"\x05" * 32)
    rotated.rotate(successor, {"stand-in": "the statement is checked by the caller"})
    chosen = Decision("project", frozenset({"L1"}), "cg_" + "a" * 16)
    projection = project(stored("default"), source_seq=1, decision=chosen, target_namespace="acme", signer=rotated)
    verified = verify_pulled(json.loads(json.dumps(projection)))
    assert isinstance(verified, Candidate) and verified.signer == successor.did
    assert projection["actor"] == f"{OWN.did}#projection:acme"  # the identifier: the same record across keys

    book = ConsentBook()
    before, after = grant(), grant(target_namespace="partner")
    assert book.apply(grant_record(grant_body(before), OWN), 1, own_keys(rotated))
    assert book.apply(grant_record(grant_body(after), successor), 2, own_keys(rotated))
    assert not book.apply(grant_record(grant_body(grant()), STRANGER), 3, own_keys(rotated))


def test_a_projection_is_deterministic_and_its_levels_name_it() -> None:
    original = stored("default")
    first = projection_of(original, frozenset({"L1"}))
    assert projection_of(original, frozenset({"L1"})) == first
    wider = projection_of(original, frozenset({"L1", "L2"}))
    assert wider["id"] != first["id"] and wider["clock"] != first["clock"]
    assert projection_of(original, frozenset({"L1"}), seq=43)["id"] != first["id"]


def test_a_tampered_projection_does_not_verify() -> None:
    projection = projection_of(stored("default"), frozenset({"L2"}))
    forged = {**projection, "body": {**projection["body"], "granted_levels": ["L0"]}}
    assert not isinstance(verify_pulled(forged), Candidate)


def test_only_a_project_decision_makes_a_projection() -> None:
    for wrong in (
        Decision("deliver", frozenset({"L0"}), "cg_" + "a" * 16),
        Decision("withhold", frozenset(), None),
        Decision("project", frozenset({"L1"}), None),
    ):
        with pytest.raises(SplError):
            project(stored(), source_seq=1, decision=wrong, target_namespace="acme", signer=OWN)


def test_a_projection_clock_out_of_range_is_an_error_not_a_wrap() -> None:
    with pytest.raises(SplError):
        projection_of(stored(), frozenset({"L1"}), seq=2**60)


# -- the acceptance property -----------------------------------------------------------------------

NAMESPACES = ("default", "a", "a/x")
THREADS = ("th_1", "th_2", "th_ab", "th_consent")
PATTERNS = ("*", "*", "th_1", "th_a*", "th_2")
PEERS = (None, PEER_A, PEER_B)
EXPIRIES = (None, None, NOW - 1, NOW, NOW + 1)
GRANT_PEERS = (None, None, PEER_A)

grant_specs = st.fixed_dictionaries(
    {
        "pair": st.permutations(NAMESPACES).map(lambda order: (order[0], order[1])),
        # L0 in about half the grants: the other half project
        "hash_levels": st.sets(st.sampled_from(HASH_LEVELS[1:]))
        .flatmap(lambda levels: st.just(levels | {"L0"}) if not levels else st.sampled_from([levels, levels | {"L0"}]))
        .map(frozenset),
        "threads": st.sets(st.sampled_from(PATTERNS), min_size=1).map(lambda chosen: tuple(sorted(chosen))),
        "expires_at": st.sampled_from(EXPIRIES),
        "peer_did": st.sampled_from(GRANT_PEERS),
    }
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("grant"), grant_specs),
        st.tuples(st.just("grant"), grant_specs),  # twice: new grants are half the operations
        st.tuples(st.just("reissue"), st.integers(0, 20), grant_specs),
        st.tuples(st.just("revoke"), st.integers(0, 20)),
        st.tuples(st.just("planted"), grant_specs),
    ),
    min_size=1,
    max_size=12,
)
requests = st.lists(
    st.tuples(
        st.sampled_from(NAMESPACES),  # the record's namespace
        st.sampled_from(THREADS),
        st.sampled_from(NAMESPACES),  # the requester's
        st.sampled_from(PEERS),
        st.sampled_from(["GET", "DO", "KNOW"]),
    ),
    min_size=1,
    max_size=12,
)


def make_grant(spec: dict[str, Any], grant_id: str) -> Grant:
    source, target = spec["pair"]
    return grant(
        grant_id=grant_id,
        source_namespace=source,
        target_namespace=target,
        hash_levels=spec["hash_levels"],
        threads=spec["threads"],
        expires_at=spec["expires_at"],
        peer_did=spec["peer_did"],
    )


def reference_grant(
    history: list[tuple[int, Grant]], source: str, target: str, thread: str, peer: str | None
) -> Grant | None:
    """The rules, written out plainly: per grant id its latest record (a revocation is final), then among
    those in force that match, the one whose record came last."""
    latest: dict[str, Grant] = {}
    for seq, record in history:
        previous = latest.get(record.grant_id)
        if previous is not None and previous.revoked_at is not None:
            continue
        latest[record.grant_id] = replace(record, seq=seq)
    best: Grant | None = None
    for candidate in latest.values():
        if candidate.revoked_at is not None or (candidate.expires_at is not None and NOW >= candidate.expires_at):
            continue
        if (candidate.source_namespace, candidate.target_namespace) != (source, target):
            continue
        if candidate.peer_did is not None and candidate.peer_did != peer:
            continue
        if not any(
            pattern == "*" or pattern == thread or (pattern.endswith("*") and thread.startswith(pattern[:-1]))
            for pattern in candidate.threads
        ):
            continue
        if best is None or candidate.seq > best.seq:
            best = candidate
    return best


@settings(max_examples=300, deadline=None)
@given(ops=operations, served=requests)
def test_consent_filter_matches_the_rules_and_never_leaks(ops: list[tuple[Any, ...]], served: list[Any]) -> None:
    fold = ConsentBook()
    history: list[tuple[int, Grant]] = []  # (seq, grant as its record states it), own records only
    issued: list[Grant] = []
    for seq, operation in enumerate(ops, start=1):
        kind = operation[0]
        if kind == "grant":
            record = make_grant(operation[1], f"cg_{seq:016x}")
            issued.append(record)
        elif kind == "reissue" and issued:
            record = make_grant(operation[2], issued[operation[1] % len(issued)].grant_id)
        elif kind == "revoke" and issued:
            chosen = issued[operation[1] % len(issued)]
            current = fold.get(chosen.grant_id) or chosen
            record = replace(current, revoked_at=NOW - 1)
        elif kind == "planted":  # a grant record signed by someone else: must change nothing
            planted = make_grant(operation[1], f"cg_{seq:016x}")
            assert not fold.apply(grant_record(grant_body(planted), STRANGER), seq, OWN.did)
            continue
        else:
            continue
        fold.apply(grant_record(grant_body(record)), seq, OWN.did)
        history.append((seq, record))

    # Random requests, plus every thread and peer for each pair a grant names, so grants are really exercised.
    derived = [
        (record.source_namespace, thread, record.target_namespace, peer, "DO")
        for _, record in history
        for thread in THREADS
        for peer in PEERS
    ]
    for index, (source, thread, target, peer, act) in enumerate(served + derived):
        expected = reference_grant(history, source, target, thread, peer)
        got = decide(fold, record_namespace=source, target_namespace=target, thread=thread, peer_did=peer, now=NOW)
        in_force_l0 = expected is not None and "L0" in expected.hash_levels
        event("reserved" if thread == "th_consent" else f"{got.action} ({'same' if source == target else 'across'})")
        if thread == "th_consent":
            assert got.action == "withhold"
            continue
        # withhold iff no grant in force and S != T
        assert (got.action == "withhold") == (source != target and expected is None)
        # the record itself crosses only within its namespace or under an L0 grant in force
        if got.action == "deliver":
            assert source == target or in_force_l0
        if source != target and expected is not None:  # a grant in force keeps its promise
            assert got.grant_id == expected.grant_id
            assert got.levels == expected.hash_levels
            assert got.action == ("deliver" if in_force_l0 else "project")
        if got.action == "project":
            original = stored(source, thread, operation=f"op{SECRET}", domain=SECRET, **{f"k{SECRET}": 1})
            original = {**original, "act": act}
            projection = project(original, source_seq=index + 1, decision=got, target_namespace=target, signer=OWN)
            assert SECRET not in json.dumps(projection)
            assert isinstance(verify_pulled(projection), Candidate)
            assert projection["body"]["granted_levels"] == sorted(got.levels)
            assert projection["body"]["namespace"] == target and projection["body"]["source_namespace"] == source


def test_grant_kind_is_what_the_fold_reads() -> None:
    assert grant_body(grant())["kind"] == GRANT_KIND == "core.consent.v1"
