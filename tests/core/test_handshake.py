"""The pair handshake's signed documents and token sealing (docs/federation-pairs.md, "Wire format").

Pure: ``now`` is a number the test passes. Every document is built by one identity and checked as the other
side would check it; every failure path asserts the error class, so the HTTP status and code the peer sees.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spl.core.errors import SplError
from spl.core.handshake import (
    DEFAULT_MAPS,
    MAX_MAPS,
    TOKEN_SCOPES,
    WINDOW,
    BadHandshakeSignature,
    HandshakeInvalid,
    NamespaceMap,
    NonceReplayed,
    PairRequest,
    StaleHandshake,
    WrongResponder,
    build_notice,
    build_pair_request,
    build_pair_response,
    build_poll,
    check_notice,
    check_pair_request,
    check_pair_response,
    check_poll,
    new_nonce,
    pair_id_for,
    parse_rfc3339,
    seal_for,
    unseal,
)
from spl.core.identity import Identity, did_from_public_key
from spl.core.manifest import rfc3339

ALICE = Identity(b"\x01" * 32)  # the initiator
BOB = Identity(b"\x02" * 32)  # the responder
CAROL = Identity(b"\x03" * 32)  # a third party
NOW = 1_780_000_000.0
DAY = 86_400.0
TOKEN = "spl_live_sa-bob_" + "ab" * 32
BACK_TOKEN = "spl_live_sa-alice_" + "cd" * 32
NONCE = "0123456789abcdef" * 2
DEEP: Any = []
for _ in range(5000):
    DEEP = [DEEP]


def request_doc(**changes: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "responder_did": BOB.did,
        "initiator_url": "https://alice.example:9100",
        "maps": DEFAULT_MAPS,
        "mode": "polling",
        "poll_interval": 300.0,
        "token": TOKEN,
        "token_expires_at": NOW + 90 * DAY,
        "now": NOW,
        "nonce": NONCE,
    }
    arguments.update(changes)
    return build_pair_request(ALICE, **arguments)


def checked_request(**changes: Any) -> PairRequest:
    return check_pair_request(request_doc(**changes), own_did=BOB.did, now=NOW)


def response_doc(status: str = "active", **changes: Any) -> dict[str, Any]:
    active = status == "active"
    arguments: dict[str, Any] = {
        "request": checked_request(),
        "status": status,
        "maps": DEFAULT_MAPS,
        "token": BACK_TOKEN if active else None,
        "token_expires_at": NOW + 90 * DAY if active else None,
        "poll_endpoint": "https://bob.example:9100/v1/federation/pair/poll",
        "now": NOW,
    }
    arguments.update(changes)
    return build_pair_response(BOB, **arguments)


def check_response(doc: object, **changes: Any) -> Any:
    arguments: dict[str, Any] = {
        "initiator": ALICE,
        "responder_did": BOB.did,
        "pair_id": pair_id_for(ALICE.did, BOB.did, NONCE),
        "nonce": NONCE,
        "now": NOW,
    }
    arguments.update(changes)
    return check_pair_response(doc, **arguments)


def poll_doc(**changes: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {"pair_id": pair_id_for(ALICE.did, BOB.did, NONCE), "responder_did": BOB.did}
    arguments.update(changes)
    return build_poll(ALICE, now=arguments.pop("now", NOW), **arguments)


def notice_doc(**changes: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "pair_id": pair_id_for(ALICE.did, BOB.did, NONCE),
        "receiver_did": BOB.did,
        "event": "revoke",
        "reason": "operator revoked the pair",
        "now": NOW,
    }
    arguments.update(changes)
    return build_notice(ALICE, **arguments)


def resign(doc: dict[str, Any], identity: Identity, **changes: Any) -> dict[str, Any]:
    """``doc`` with ``changes`` and a valid signature by ``identity``: reaches the checks after the signature."""
    from spl.core.canonical import canonical_json

    changed = {key: value for key, value in {**doc, **changes}.items() if key != "signature"}
    return {**changed, "signature": identity.sign(canonical_json(changed))}


# Each check as the receiving side calls it, with the document its builder makes.
CHECKS: dict[str, tuple[Any, Any]] = {
    "pair_request": (request_doc, lambda doc: check_pair_request(doc, own_did=BOB.did, now=NOW)),
    "pair_response": (response_doc, check_response),
    "pair_poll": (poll_doc, lambda doc: check_poll(doc, own_did=BOB.did, now=NOW)),
    "pair_notice": (notice_doc, lambda doc: check_notice(doc, own_did=BOB.did, now=NOW)),
}
SIGNERS = {"pair_request": ALICE, "pair_response": BOB, "pair_poll": ALICE, "pair_notice": ALICE}


# -- round trips ----------------------------------------------------------------------------------------------------


def test_pair_request_round_trip() -> None:
    maps = (NamespaceMap("default", "default"), NamespaceMap("music", "audio/raw"))
    doc = request_doc(maps=maps, mode="continuous", poll_interval=30)
    assert json.loads(json.dumps(doc)) == doc  # JSON-ready
    request = check_pair_request(json.loads(json.dumps(doc)), own_did=BOB.did, now=NOW)
    assert request.pair_id == pair_id_for(ALICE.did, BOB.did, NONCE) == doc["pair_id"]
    assert (request.initiator_did, request.responder_did) == (ALICE.did, BOB.did)
    assert request.initiator_url == "https://alice.example:9100"
    assert request.maps == maps and request.mode == "continuous" and request.poll_interval == 30.0
    assert request.issued_at == NOW and request.token_expires_at == NOW + 90 * DAY
    assert request.token_scopes == TOKEN_SCOPES
    assert unseal(BOB, request.token_sealed) == TOKEN
    assert TOKEN not in json.dumps(doc) and request.token_sealed not in repr(request)


def test_a_fresh_nonce_makes_a_fresh_pair_id() -> None:
    first, second = new_nonce(), new_nonce()
    assert len(first) == 32 and int(first, 16) >= 0 and first == first.lower() and first != second
    one = build_pair_request(
        ALICE,
        responder_did=BOB.did,
        initiator_url="http://a:1",
        poll_interval=300,
        token=TOKEN,
        token_expires_at=NOW + DAY,
        now=NOW,
    )
    assert one["pair_id"] == pair_id_for(ALICE.did, BOB.did, one["nonce"])
    assert request_doc(nonce=new_nonce())["pair_id"] != one["pair_id"]


def test_active_response_round_trip_unseals_the_token() -> None:
    doc = response_doc(maps=(NamespaceMap("default", "default"),))
    response = check_response(json.loads(json.dumps(doc)), requested_maps=DEFAULT_MAPS)
    assert response.status == "active" and response.token == BACK_TOKEN
    assert response.pair_id == pair_id_for(ALICE.did, BOB.did, NONCE) and response.maps == DEFAULT_MAPS
    assert response.token_scopes == TOKEN_SCOPES and response.token_expires_at == NOW + 90 * DAY
    assert response.poll_endpoint == "https://bob.example:9100/v1/federation/pair/poll"
    assert response.poll_after_ms == 2000
    assert doc["nonce"] == NONCE  # always the request's nonce
    assert BACK_TOKEN not in repr(response) and BACK_TOKEN not in json.dumps(doc)


def test_pending_response_round_trip_carries_no_token() -> None:
    doc = response_doc("pending")
    assert not {"token_sealed", "token_scopes", "token_expires_at"} & set(doc)
    response = check_response(doc)
    assert response.status == "pending" and response.token is None
    assert response.token_scopes == () and response.token_expires_at is None


def test_poll_and_notice_round_trips() -> None:
    poll = check_poll(poll_doc(), own_did=BOB.did, now=NOW)
    assert poll.pair_id == pair_id_for(ALICE.did, BOB.did, NONCE) and poll.initiator_did == ALICE.did
    assert poll.issued_at == NOW and len(poll.nonce) == 32 and poll.nonce != NONCE
    notice = check_notice(notice_doc(event="sync", reason=""), own_did=BOB.did, now=NOW)
    assert (notice.sender_did, notice.event, notice.reason) == (ALICE.did, "sync", "")
    assert notice.pair_id == poll.pair_id and notice.issued_at == NOW


def test_builders_refuse_what_the_peer_would_refuse() -> None:
    with pytest.raises(HandshakeInvalid):
        request_doc(initiator_url="ftp://alice")
    with pytest.raises(HandshakeInvalid):
        request_doc(maps=())
    with pytest.raises(HandshakeInvalid):
        request_doc(token="has space")
    with pytest.raises(HandshakeInvalid):
        request_doc(responder_did=ALICE.did)  # pairing with oneself
    with pytest.raises(HandshakeInvalid):
        notice_doc(event="explode")
    with pytest.raises(SplError):
        response_doc("active", token=None)
    with pytest.raises(SplError):  # the request is for bob, not for carol
        build_pair_response(
            CAROL,
            request=checked_request(),
            status="pending",
            maps=DEFAULT_MAPS,
            token=None,
            token_expires_at=None,
            poll_endpoint="http://c:1",
            now=NOW,
        )


# -- sealing --------------------------------------------------------------------------------------------------------


def test_sealed_token_opens_only_for_its_receiver() -> None:
    sealed = seal_for(BOB.did, TOKEN)
    assert unseal(BOB, sealed) == TOKEN
    assert seal_for(BOB.did, TOKEN) != sealed  # an ephemeral key per seal
    with pytest.raises(HandshakeInvalid) as caught:
        unseal(CAROL, sealed)
    assert TOKEN not in caught.value.message and "another" in caught.value.message


@pytest.mark.parametrize(
    "sealed",
    ["", "a" * 2049, "not base64!", "AAAA", "é" * 10, seal_for(BOB.did, TOKEN)[:-4]],
)
def test_unseal_refuses_garbage(sealed: str) -> None:
    with pytest.raises(HandshakeInvalid):
        unseal(BOB, sealed)


@pytest.mark.parametrize(
    "did",
    [
        "did:web:bob.example",
        "did:key:z" + "1" * 500,
        did_from_public_key(b"\xff" * 32),  # a did:key whose bytes are no point of the curve
        "",
    ],
)
def test_seal_refuses_a_did_it_cannot_seal_to(did: str) -> None:
    with pytest.raises(HandshakeInvalid):
        seal_for(did, TOKEN)


@pytest.mark.parametrize("token", ["", "a" * 513, "tab\there", "ünïcode"])
def test_seal_refuses_tokens_that_are_no_bearer_token(token: str) -> None:
    with pytest.raises(HandshakeInvalid):
        seal_for(BOB.did, token)


def test_a_token_sealed_to_another_did_fails_the_response() -> None:
    doc = resign(response_doc(), BOB, token_sealed=seal_for(CAROL.did, BACK_TOKEN))
    with pytest.raises(HandshakeInvalid, match="does not open"):
        check_response(doc)


# -- the checks' order and failure paths ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        ("pair_request", "mode", "continuous"),
        ("pair_request", "initiator_url", "https://mallory.example"),
        ("pair_request", "poll_interval", 5),
        ("pair_request", "namespaces", [{"initiator": "secret", "responder": "default"}]),
        ("pair_response", "status", "pending"),
        ("pair_response", "namespaces", [{"initiator": "secret", "responder": "default"}]),
        ("pair_poll", "nonce", "f" * 32),
        ("pair_notice", "event", "sync"),
        ("pair_notice", "reason", "something else"),
    ],
)
def test_a_tampered_field_breaks_the_signature(kind: str, field: str, value: Any) -> None:
    build, check = CHECKS[kind]
    doc = build()
    doc[field] = value
    if kind == "pair_response" and value == "pending":
        for key in ("token_sealed", "token_scopes", "token_expires_at"):
            del doc[key]
    with pytest.raises(BadHandshakeSignature) as caught:
        check(doc)
    assert caught.value.status == 401 and caught.value.code == "HANDSHAKE_SIGNATURE_INVALID"


@pytest.mark.parametrize("kind", list(CHECKS))
def test_a_document_signed_by_another_key_is_refused(kind: str) -> None:
    build, check = CHECKS[kind]
    forged = resign(build(), CAROL)  # claims alice's (or bob's) DID, signed with carol's key
    with pytest.raises(BadHandshakeSignature):
        check(forged)
    unsigned = build()
    unsigned["signature"] = "A" * 86
    with pytest.raises(BadHandshakeSignature):
        check(unsigned)


@pytest.mark.parametrize("kind", ["pair_request", "pair_poll", "pair_notice"])
def test_a_document_for_another_daemon_is_refused_before_its_signature(kind: str) -> None:
    build, _ = CHECKS[kind]
    check = {"pair_request": check_pair_request, "pair_poll": check_poll, "pair_notice": check_notice}[kind]
    doc = build()
    doc["signature"] = "A" * 86  # not even valid: the responder check comes first
    with pytest.raises(WrongResponder) as caught:
        check(doc, own_did=CAROL.did, now=NOW)
    assert caught.value.status == 400 and caught.value.code == "HANDSHAKE_WRONG_RESPONDER"
    assert CAROL.did in caught.value.message


def test_a_response_for_another_initiator_or_from_another_responder_is_refused() -> None:
    with pytest.raises(WrongResponder):
        check_response(response_doc(), initiator=CAROL)
    with pytest.raises(WrongResponder):
        check_response(response_doc(), responder_did=CAROL.did)


@pytest.mark.parametrize("kind", list(CHECKS))
@pytest.mark.parametrize("skew", [-WINDOW - 1, WINDOW + 1])
def test_stale_documents_are_refused(kind: str, skew: float) -> None:
    build, check = CHECKS[kind]
    if kind == "pair_response":
        doc = resign(response_doc(), BOB, issued_at=rfc3339(NOW + skew))
    else:
        doc = resign(build(), SIGNERS[kind], issued_at=rfc3339(NOW + skew))
    with pytest.raises(StaleHandshake) as caught:
        check(doc)
    assert caught.value.status == 401 and caught.value.code == "HANDSHAKE_STALE"
    assert "301 s" in caught.value.message and "clock" in caught.value.message
    assert ("ahead" in caught.value.message) == (skew > 0)


@pytest.mark.parametrize("skew", [-WINDOW, WINDOW])
def test_the_window_edge_is_accepted(skew: float) -> None:
    assert check_pair_request(request_doc(now=NOW + skew), own_did=BOB.did, now=NOW).nonce == NONCE


def test_a_pair_id_that_is_not_the_hash_of_the_request_is_refused() -> None:
    doc = resign(request_doc(), ALICE, pair_id="pair_0000000000000000")
    with pytest.raises(HandshakeInvalid, match="hash"):
        check_pair_request(doc, own_did=BOB.did, now=NOW)


def test_a_response_that_answers_another_request_is_refused() -> None:
    with pytest.raises(HandshakeInvalid, match="answers pair"):
        check_response(response_doc(), pair_id="pair_0000000000000000")
    with pytest.raises(HandshakeInvalid, match="nonce"):
        check_response(response_doc(), nonce="f" * 32)
    assert check_response(response_doc(), nonce=None).status == "active"  # the echo is checked only when asked


def test_a_response_may_narrow_the_maps_but_never_widen_them() -> None:
    requested = (NamespaceMap("default", "default"), NamespaceMap("music", "music"))
    narrowed = check_response(response_doc(maps=(NamespaceMap("music", "music"),)), requested_maps=requested)
    assert narrowed.maps == (NamespaceMap("music", "music"),)
    with pytest.raises(HandshakeInvalid, match="not requested"):
        check_response(response_doc(maps=(NamespaceMap("secret", "default"),)), requested_maps=requested)


def test_active_and_pending_responses_carry_their_token_keys_or_none() -> None:
    active = response_doc()
    stripped = resign({k: v for k, v in active.items() if k != "token_sealed"}, BOB)
    with pytest.raises(HandshakeInvalid, match="active"):
        check_response(stripped)
    pending = resign(response_doc("pending"), BOB, token_sealed=active["token_sealed"])
    with pytest.raises(HandshakeInvalid, match="pending"):
        check_response(pending)


def test_a_token_that_is_born_expired_is_refused() -> None:
    doc = resign(request_doc(), ALICE, token_expires_at=rfc3339(NOW - 1))
    with pytest.raises(HandshakeInvalid, match="token_expires_at"):
        check_pair_request(doc, own_did=BOB.did, now=NOW)


def test_a_daemon_cannot_pair_with_itself() -> None:
    doc = resign(request_doc(), ALICE, responder_did=ALICE.did)
    with pytest.raises(HandshakeInvalid, match="itself"):
        check_pair_request(doc, own_did=ALICE.did, now=NOW)


@pytest.mark.parametrize("kind", list(CHECKS))
def test_unknown_and_missing_keys_are_refused(kind: str) -> None:
    build, check = CHECKS[kind]
    with pytest.raises(HandshakeInvalid, match="unknown key"):
        check(resign(build(), SIGNERS[kind], extra=1))
    with pytest.raises(HandshakeInvalid, match="unknown key"):
        check({**build(), "\x1b[31m" + "k" * 10_000: DEEP})
    doc = build()
    del doc["issued_at"]
    with pytest.raises(HandshakeInvalid, match="lacks issued_at"):
        check(doc)


@pytest.mark.parametrize("payload", [None, [], "pair_request", 1, DEEP, {}])
@pytest.mark.parametrize("kind", list(CHECKS))
def test_anything_but_an_object_is_refused(kind: str, payload: object) -> None:
    with pytest.raises(HandshakeInvalid):
        CHECKS[kind][1](payload)


BAD_VALUES = [None, True, -1, [], {}, DEEP, "x" * 5000, "\x1b[2J\n", 1e400]


@pytest.mark.parametrize("kind", list(CHECKS))
def test_a_wrong_value_at_every_key_is_a_400(kind: str) -> None:
    build, check = CHECKS[kind]
    doc = build()
    for key in doc:
        for value in BAD_VALUES:
            broken = {**doc, key: value}  # shape and bounds are checked before the signature
            with pytest.raises(HandshakeInvalid) as caught:
                check(broken)
            assert caught.value.status == 400, (key, value)
            assert len(caught.value.message) < 400 and "\x1b" not in caught.value.message, (key, value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("initiator_did", "did:web:alice.example"),
        ("initiator_did", "did:key:z" + "1" * 600),
        ("initiator_did", "did:key:zNotBase58!"),
        ("responder_did", "did:example:bob"),
        ("pair_id", "pair_ABCDEF0123456789"),
        ("pair_id", "pair_0123456789abcdef\n"),
        ("nonce", "0123456789ABCDEF" * 2),
        ("nonce", "abc"),
        ("issued_at", "2026-11-30T14:00:00"),  # no zone
        ("issued_at", "2026-13-30T14:00:00Z"),
        ("issued_at", "yesterday"),
        ("token_expires_at", "2027-02-28"),
        ("mode", "sometimes"),
        ("poll_interval", 0.01),
        ("poll_interval", 86_401),
        ("version", 2),
        ("version", 1.0),
        ("object", "pair_response"),
        ("namespaces", [{"initiator": "Default", "responder": "default"}]),
        ("namespaces", [{"initiator": "default"}]),
        ("namespaces", [{"initiator": "default", "responder": "default"}] * 2),
        ("namespaces", [{"initiator": f"n{i}", "responder": "default"} for i in range(MAX_MAPS + 1)]),
        ("token_scopes", ["federation:sync", "federation:sync"]),
        ("token_scopes", ["root"]),
        ("token_sealed", "=" * 10),
        ("initiator_url", "http://user:pw@alice.example"),
        ("initiator_url", "javascript:alert(1)"),
    ],
)
def test_malformed_request_fields_are_a_400(field: str, value: Any) -> None:
    doc = resign(request_doc(), ALICE, **{field: value})
    with pytest.raises(HandshakeInvalid) as caught:
        check_pair_request(doc, own_did=BOB.did, now=NOW)
    assert caught.value.code == "INVALID_HANDSHAKE"


def test_a_valid_request_with_an_offset_zone_is_accepted() -> None:
    doc = resign(request_doc(), ALICE, issued_at="2026-05-28T22:06:40+02:00")
    moment = parse_rfc3339("2026-05-28T22:06:40+02:00")
    assert moment is not None
    assert check_pair_request(doc, own_did=BOB.did, now=moment).issued_at == moment


def test_nonce_replayed_is_a_410() -> None:
    error = NonceReplayed("pair pair_0123456789abcdef was requested before; send a fresh nonce")
    assert (error.status, error.code) == (410, "NONCE_REPLAYED")


# -- property: hostile input raises only our errors -----------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from(list(CHECKS)), payload=JSON)
def test_arbitrary_json_raises_only_spl_errors(kind: str, payload: object) -> None:
    with pytest.raises(SplError):
        CHECKS[kind][1](payload)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(list(CHECKS)), data=st.data())
def test_a_valid_document_with_arbitrary_values_raises_only_spl_errors(kind: str, data: st.DataObject) -> None:
    build, check = CHECKS[kind]
    doc = build()
    keys = data.draw(st.lists(st.sampled_from(sorted(doc)), min_size=1, max_size=3, unique=True))
    for key in keys:
        doc[key] = data.draw(JSON | st.text(max_size=80))
    if data.draw(st.booleans()) and "signature" not in keys:
        try:
            doc = resign(doc, SIGNERS[kind])  # reach the checks after the signature too
        except ValueError:  # a value with no canonical JSON form (NaN, nesting) cannot be signed
            pass
    try:
        check(doc)
    except SplError:
        pass
