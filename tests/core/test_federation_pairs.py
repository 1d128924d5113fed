"""A federation pair's records, fold, operator input and lifecycle (docs/federation-pairs.md, "The pair"). Pure."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from spl.core.errors import Conflict, InvalidRequest, SplError
from spl.core.federation_pairs import (
    EVENTS,
    FED_PAIR_KINDS,
    FED_STATES,
    MAX_THREAD_PATTERNS,
    FederationPair,
    check_manifest_snapshot,
    fold_federation_pairs,
    local_pairs,
    maps_from_local,
    pair_from_body,
    transition,
    validate_maps,
    validate_thread_allow,
)
from spl.core.handshake import NamespaceMap, pair_id_for
from spl.core.identity import Identity
from spl.core.pairs import PAIRS_THREAD
from spl.core.reserved import ReservedThread

OWN = Identity(b"\x01" * 32).did
PEER = Identity(b"\x02" * 32).did
NONCE = "0123456789abcdef" * 2
PAIR_ID = pair_id_for(OWN, PEER, NONCE)
NOW = 1_780_000_000.0


def make_pair(**changes: Any) -> FederationPair:
    fields: dict[str, Any] = {
        "pair_id": PAIR_ID,
        "role": "initiator",
        "peer_did": PEER,
        "peer_url": "https://bob.example:9100",
        "maps": (NamespaceMap("default", "default"), NamespaceMap("music", "audio"), NamespaceMap("music", "sound")),
        "mode": "polling",
        "poll_interval": 300.0,
        "state": "establishing",
        "state_reason": "handshake sent",
        "nonce": NONCE,
        "created_at": NOW,
        "updated_at": NOW,
    }
    fields.update(changes)
    return FederationPair(**fields)


_sequence = itertools.count(1)


def record(
    body: dict[str, Any], *, signer: str = OWN, thread: str = PAIRS_THREAD, act: str = "LEARN"
) -> dict[str, Any]:
    sequence = next(_sequence)
    return {"id": f"{sequence:064x}", "thread": thread, "act": act, "signer": signer, "body": body, "clock": sequence}


# -- the pair and its body --------------------------------------------------------------------------------------------


def test_body_round_trips_through_json() -> None:
    pair = make_pair(
        thread_allow=("th_a", "proj.*"),
        our_token_id="a" * 64,
        token_expires_at=NOW + 90 * 86_400,
        peer_manifest={"object": "federation_manifest", "daemon": {"did": PEER}},
        last_refresh_at=NOW + 5,
    )
    body = pair.body("pair.config.v1")
    assert body["kind"] == "pair.config.v1" and body["_v"] == 1
    assert body["maps"][1] == {"initiator": "music", "responder": "audio"}
    assert pair_from_body(json.loads(json.dumps(body))) == pair


def test_body_refuses_an_unknown_kind() -> None:
    with pytest.raises(SplError):
        make_pair().body("pair.surprise.v1")


def test_namespaces_from_each_side() -> None:
    initiator = make_pair()
    assert initiator.local_namespaces() == ["default", "music"]
    assert initiator.peer_namespaces() == ["default", "audio", "sound"]
    assert initiator.target_for("music") == ["audio", "sound"]
    assert initiator.target_for("default") == ["default"] and initiator.target_for("audio") == []
    assert initiator.local_maps()[1] == {"local": "music", "peer": "audio"}
    responder = make_pair(role="responder")
    assert responder.local_namespaces() == ["default", "audio", "sound"]
    assert responder.peer_namespaces() == ["default", "music"]
    assert responder.target_for("sound") == ["music"] and responder.target_for("music") == []
    assert responder.local_maps()[2] == {"local": "sound", "peer": "music"}


def test_thread_allow_patterns() -> None:
    pair = make_pair(thread_allow=("th_exact", "proj.*"))
    assert pair.thread_allowed("th_exact") and pair.thread_allowed("proj.x") and pair.thread_allowed("proj.")
    assert not pair.thread_allowed("th_exact2") and not pair.thread_allowed("other")
    everything = make_pair()
    assert everything.thread_allow == ("*",) and everything.thread_allowed("anything")
    assert not everything.thread_allowed("th_federation_pairs") and not everything.thread_allowed("th_consent")
    assert not make_pair(thread_allow=("th_*",)).thread_allowed("th_consent")


def test_with_changes_only_what_it_is_given() -> None:
    pair = make_pair()
    changed = pair.with_(mode="continuous", poll_interval=60.0)
    assert (changed.mode, changed.poll_interval, changed.maps) == ("continuous", 60.0, pair.maps)
    assert pair.mode == "polling"


# -- operator input --------------------------------------------------------------------------------------------------


def test_validate_thread_allow_accepts_and_dedupes() -> None:
    assert validate_thread_allow(["*"]) == ("*",)
    assert validate_thread_allow(["th_a", "proj.*", "th_a", "th_*"]) == ("th_a", "proj.*", "th_*")


@pytest.mark.parametrize(
    "patterns",
    [
        [],
        None,
        "th_a",
        [1],
        ["**"],
        ["a*b"],
        ["has space"],
        ["*prefix"],
        ["x" * 300],
        ["th_\n"],
        [f"th_{i}" for i in range(MAX_THREAD_PATTERNS + 1)],
    ],
)
def test_validate_thread_allow_refuses(patterns: object) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_thread_allow(patterns)
    assert caught.value.code == "INVALID_THREAD_ALLOW" and len(caught.value.message) < 400


def test_validate_thread_allow_refuses_reserved_threads() -> None:
    with pytest.raises(ReservedThread):
        validate_thread_allow(["th_a", "th_federation_pairs"])


def test_maps_from_the_callers_side() -> None:
    assert local_pairs(None) == [("default", "default")]
    assert local_pairs(["music:audio", {"local": "default", "peer": "org/team"}]) == [
        ("music", "audio"),
        ("default", "org/team"),
    ]
    assert validate_maps(["music:audio"], "initiator") == (NamespaceMap("music", "audio"),)
    assert validate_maps(["music:audio"], "responder") == (NamespaceMap("audio", "music"),)
    assert maps_from_local([("a", "b")], "responder") == (NamespaceMap("b", "a"),)
    # the responder's view of the maps it stored reads back as it gave them
    responder = make_pair(role="responder", maps=validate_maps(["music:audio"], "responder"))
    assert responder.local_maps() == [{"local": "music", "peer": "audio"}]


@pytest.mark.parametrize(
    "value",
    [
        [],
        "default:default",
        ["default"],
        ["a:b:c"],
        ["Default:default"],
        [":default"],
        [{"local": "a"}],
        [{"local": "a", "peer": "b", "extra": 1}],
        [{"local": 1, "peer": "b"}],
        ["a:b", "a:b"],
        [f"n{i}:default" for i in range(17)],
        ["x" * 600],
    ],
)
def test_maps_refused(value: object) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_maps(value)
    assert caught.value.code == "INVALID_NAMESPACE_MAP" and len(caught.value.message) < 400


def test_manifest_snapshot_is_bounded() -> None:
    assert check_manifest_snapshot(None) is None
    assert check_manifest_snapshot({"a": 1}) == {"a": 1}
    deep: Any = {}
    for _ in range(100):
        deep = {"d": deep}
    for bad in ({"big": "x" * 17_000}, [1], "manifest", deep, {"nan": float("nan")}):
        with pytest.raises(InvalidRequest):
            check_manifest_snapshot(bad)


# -- the fold -------------------------------------------------------------------------------------------------------


def test_fold_latest_record_per_pair_wins() -> None:
    other_id = pair_id_for(OWN, PEER, "f" * 32)
    establishing = make_pair()
    active = transition(establishing, "answered", now=NOW + 1)
    other = make_pair(pair_id=other_id, nonce="f" * 32, role="responder")
    records = [
        record(establishing.body("pair.handshake.v1")),
        record(other.body("pair.pending.v1")),
        record(active.body("pair.active.v1")),
    ]
    folded = fold_federation_pairs(records, OWN)
    assert folded == {PAIR_ID: active, other_id: other}


def test_a_planted_record_changes_nothing() -> None:
    active = transition(make_pair(), "answered", now=NOW + 1)
    hijacked = active.with_(peer_url="https://mallory.example", maps=(NamespaceMap("secret", "default"),))
    planted = [
        record(hijacked.body("pair.config.v1"), signer=PEER),  # signed by someone else
        record(hijacked.body("pair.config.v1"), thread="th_elsewhere"),  # our key, but another thread
        record(hijacked.body("pair.config.v1"), act="KNOW"),
        record({**hijacked.body("pair.config.v1"), "kind": "core.sync_pair.v1"}),
        record({**hijacked.body("pair.config.v1"), "_v": True}),
        record({"kind": "pair.config.v1"}),
        {"signer": OWN, "thread": PAIRS_THREAD, "act": "LEARN", "body": "not an object"},
        {"signer": OWN, "thread": PAIRS_THREAD, "act": "LEARN"},
    ]
    base = [record(active.body("pair.active.v1"))]
    assert fold_federation_pairs(base + planted, OWN) == {PAIR_ID: active}
    assert fold_federation_pairs(planted, OWN) == {}


BROKEN_FIELDS: list[tuple[str, Any]] = [
    ("pair_id", "pair_XYZ"),
    ("pair_id", "../../etc/passwd"),
    ("role", "observer"),
    ("peer_did", "did:web:mallory.example"),
    ("peer_url", "file:///etc/passwd"),
    ("maps", []),
    ("maps", [{"initiator": "../x", "responder": "default"}]),
    ("mode", "always"),
    ("poll_interval", None),
    ("poll_interval", 0),
    ("state", "degraded"),  # a runtime overlay, never stored
    ("state_reason", "x" * 300),
    ("state_reason", "line\nbreak"),
    ("nonce", "short"),
    ("created_at", "yesterday"),
    ("updated_at", float("inf")),
    ("updated_at", 10**400),
    ("thread_allow", []),
    ("thread_allow", ["th_consent"]),
    ("our_token_id", ""),
    ("our_token_id", 5),
    ("token_expires_at", "soon"),
    ("peer_manifest", {"big": "x" * 20_000}),
    ("last_refresh_at", True),
    ("pair_id", None),
    ("our_endpoint", "ftp://elsewhere"),
    ("our_endpoint", 7),
]


@pytest.mark.parametrize(("field", "value"), BROKEN_FIELDS)
def test_a_malformed_record_is_skipped_not_raised(field: str, value: Any) -> None:
    active = transition(make_pair(), "answered", now=NOW + 1)
    broken = {**active.body("pair.config.v1"), field: value}
    assert pair_from_body(broken) is None
    assert fold_federation_pairs([record(active.body("pair.active.v1")), record(broken)], OWN) == {PAIR_ID: active}


# Fields added after the first pair records were written: a record without them still folds.
OPTIONAL_FIELDS = ("peer_token_expires_at", "our_endpoint")


def test_a_record_without_our_endpoint_folds_as_unknown_and_never_announces() -> None:
    body = transition(make_pair(), "answered", now=NOW + 1).body("pair.config.v1")
    del body["our_endpoint"]
    folded = fold_federation_pairs([record(body)], OWN)[PAIR_ID]
    assert folded.our_endpoint is None
    assert not folded.endpoint_moved("http://127.0.0.1:9300")


def test_a_live_pair_whose_peer_knows_another_endpoint_must_announce_the_move() -> None:
    pair = transition(make_pair(), "answered", now=NOW + 1).with_(our_endpoint="http://127.0.0.1:9100")
    assert fold_federation_pairs([record(pair.body("pair.config.v1"))], OWN)[PAIR_ID] == pair
    assert pair.endpoint_moved("http://127.0.0.1:9300")
    assert not pair.endpoint_moved("http://127.0.0.1:9100")
    assert pair.with_(state="paused").endpoint_moved("http://127.0.0.1:9300")  # a paused pair still keeps its URL
    assert not transition(pair, "revoke", now=NOW + 2).endpoint_moved("http://127.0.0.1:9300")
    assert not make_pair(our_endpoint="http://127.0.0.1:9100").endpoint_moved("http://x:1")  # establishing


@pytest.mark.parametrize("field", [f for f in make_pair().body("pair.config.v1") if f not in OPTIONAL_FIELDS])
def test_a_record_missing_any_field_is_skipped(field: str) -> None:
    body = make_pair().body("pair.config.v1")
    del body[field]
    assert fold_federation_pairs([record(body)], OWN) == {}


def test_revoked_is_terminal_in_the_fold() -> None:
    revoked = transition(make_pair(), "revoke", now=NOW + 1)
    resurrected = make_pair(state="active")
    folded = fold_federation_pairs(
        [record(revoked.body("pair.revoke.v1")), record(resurrected.body("pair.active.v1"))], OWN
    )
    assert folded[PAIR_ID].state == "revoked"


# -- the lifecycle --------------------------------------------------------------------------------------------------

LEGAL = {
    ("establishing", "approved"): "active",
    ("establishing", "answered"): "active",
    ("establishing", "rejected"): "revoked",
    ("establishing", "refused"): "revoked",
    ("establishing", "revoke"): "revoked",
    ("active", "pause"): "paused",
    ("active", "revoke"): "revoked",
    ("paused", "resume"): "active",
    ("paused", "revoke"): "revoked",
}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(FED_STATES, EVENTS)))
def test_every_move_of_the_lifecycle(state: str, event: str) -> None:
    pair = make_pair(state=state)
    if (state, event) in LEGAL:
        moved = transition(pair, event, now=NOW + 10)
        assert moved.state == LEGAL[state, event] and moved.updated_at == NOW + 10 and moved.state_reason
        assert (moved.created_at, moved.maps, moved.peer_url) == (pair.created_at, pair.maps, pair.peer_url)
        assert pair_from_body(moved.body(FED_PAIR_KINDS[4])) == moved  # a legal move always records cleanly
        return
    with pytest.raises(Conflict) as caught:
        transition(pair, event, now=NOW + 10)
    assert caught.value.status == 409
    if state == "revoked":
        assert caught.value.code == "PAIR_REVOKED" and "new pair" in caught.value.message
    else:
        assert caught.value.code == "INVALID_PAIR_STATE"
        allowed = [name for (source, name) in LEGAL if source == state]
        assert state in caught.value.message and all(name in caught.value.message for name in allowed)


def test_transition_records_the_reason_bounded_and_escaped() -> None:
    paused = transition(make_pair(state="active"), "pause", now=NOW, reason="maintenance window")
    assert paused.state_reason == "maintenance window"
    hostile = transition(make_pair(state="active"), "revoke", now=NOW, reason="\x1b[2J" + "x" * 1000)
    assert "\x1b" not in hostile.state_reason and len(hostile.state_reason) <= 256
    assert pair_from_body(hostile.body("pair.revoke.v1")) == hostile


def test_an_unknown_event_is_a_bug_not_a_409() -> None:
    with pytest.raises(SplError) as caught:
        transition(make_pair(), "explode", now=NOW)
    assert caught.value.status == 500


def test_a_record_without_the_later_optional_fields_still_folds() -> None:
    body = make_pair().body("pair.config.v1")
    for field in OPTIONAL_FIELDS:
        del body[field]
    assert fold_federation_pairs([record(body)], OWN) == {PAIR_ID: make_pair()}
