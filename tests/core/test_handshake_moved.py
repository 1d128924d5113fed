"""The ``endpoint_moved`` notice and its acknowledgement (docs/federation-pairs.md, "When a steward moves").

Pure: ``now`` is a number the test passes. The mover (ALICE, after a migration) signs the notice; the peer (BOB)
checks it against the DID its pair already trusts, never one the notice names; the peer's signed answer must
acknowledge exactly the notice and the endpoint the mover sent.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spl.core.errors import SplError
from spl.core.handshake import (
    MAX_ENDPOINT,
    WINDOW,
    BadHandshakeSignature,
    HandshakeInvalid,
    StaleHandshake,
    UnknownPair,
    WrongResponder,
    build_endpoint_moved,
    build_endpoint_moved_ack,
    check_endpoint_moved,
    check_endpoint_moved_ack,
    unseal,
)
from spl.core.identity import Identity

ALICE = Identity(b"\x01" * 32)  # the steward that moved
BOB = Identity(b"\x02" * 32)  # its pair's peer
CAROL = Identity(b"\x03" * 32)  # a stranger
NOW = 1_780_000_000.0
DAY = 86_400.0
PAIR = "pair_0123456789abcdef"
NEW_URL = "https://alice-new.example:9100"
TOKEN = "spl_live_sa-0123456789abcdef_" + "ab" * 32
BACK = "spl_live_sa-0123456789abcdef_" + "cd" * 32
NONCE = "0123456789abcdef" * 2


def notice(signer: Identity = ALICE, **changes: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "pair_id": PAIR,
        "receiver_did": BOB.did,
        "endpoint": NEW_URL,
        "token": TOKEN,
        "token_expires_at": NOW + 90 * DAY,
        "now": NOW,
        "nonce": NONCE,
    }
    arguments.update(changes)
    return build_endpoint_moved(signer, **arguments)


def trusted(did: str = ALICE.did) -> Any:
    return lambda pair_id: did if pair_id == PAIR else None


def check(payload: object, *, own: Identity = BOB, now: float = NOW, peer: str = ALICE.did) -> Any:
    return check_endpoint_moved(payload, own_did=own.did, now=now, peer_did_of=trusted(peer))


def resign(doc: dict[str, Any], signer: Identity = ALICE) -> dict[str, Any]:
    from spl.core.canonical import canonical_json

    unsigned = {key: value for key, value in doc.items() if key != "signature"}
    return {**unsigned, "signature": signer.sign(canonical_json(unsigned))}


def test_a_notice_round_trips_and_its_token_opens_only_for_the_peer() -> None:
    checked = check(notice())
    assert (checked.pair_id, checked.sender_did, checked.endpoint, checked.nonce) == (PAIR, ALICE.did, NEW_URL, NONCE)
    assert TOKEN not in json.dumps(notice()) and TOKEN not in repr(checked)
    assert unseal(BOB, checked.token) == TOKEN
    with pytest.raises(HandshakeInvalid):
        unseal(CAROL, checked.token)


def test_only_the_did_the_pair_trusts_can_move_it() -> None:
    # A stranger signing a notice that names itself as sender: the pair's peer is ALICE, not CAROL.
    with pytest.raises(UnknownPair):
        check(notice(CAROL))
    # A notice for a pair we do not hold.
    with pytest.raises(UnknownPair):
        check(notice(pair_id="pair_ffffffffffffffff"))
    # The sender field claims ALICE, but CAROL signed it: checked against ALICE's key, it fails.
    forged = resign(notice(), CAROL)
    with pytest.raises(BadHandshakeSignature):
        check(forged)


def test_a_notice_for_another_receiver_or_out_of_the_window_is_refused() -> None:
    with pytest.raises(WrongResponder):
        check(notice(), own=CAROL)
    with pytest.raises(StaleHandshake):
        check(notice(), now=NOW + WINDOW + 1)
    check(notice(), now=NOW - WINDOW)  # the edge is accepted


def test_an_altered_endpoint_breaks_the_signature() -> None:
    doc = notice()
    doc["endpoint"] = "https://mallory.example"
    with pytest.raises(BadHandshakeSignature):
        check(doc)


@pytest.mark.parametrize(
    "endpoint",
    [
        "ftp://alice.example",
        "https://user:pw@alice.example",
        "https://alice.example/?q=1",
        "http://",
        "https://alice.example/\x1b[31m",
        "https://" + "a" * MAX_ENDPOINT + ".example",
        7,
        None,
    ],
)
def test_an_endpoint_that_is_not_a_bounded_base_url_is_a_400(endpoint: Any) -> None:
    doc = resign({**notice(), "endpoint": endpoint})
    with pytest.raises(HandshakeInvalid):
        check(doc)


def test_unknown_and_missing_keys_are_refused() -> None:
    with pytest.raises(HandshakeInvalid, match="unknown key"):
        check(resign({**notice(), "path": "../../etc"}))
    doc = notice()
    del doc["token_sealed"]
    with pytest.raises(HandshakeInvalid, match="lacks token_sealed"):
        check(resign(doc))
    with pytest.raises(HandshakeInvalid):
        check(resign({**notice(), "object": "pair_notice"}))


def test_the_ack_answers_exactly_the_notice_and_endpoint() -> None:
    received = check(notice())
    ack = build_endpoint_moved_ack(BOB, notice=received, token=BACK, token_expires_at=NOW + 90 * DAY, now=NOW + 1)
    arguments: dict[str, Any] = {
        "identity": ALICE,
        "peer_did": BOB.did,
        "pair_id": PAIR,
        "nonce": NONCE,
        "endpoint": NEW_URL,
        "now": NOW + 2,
    }
    opened = check_endpoint_moved_ack(ack, **arguments)
    assert opened.token == BACK and opened.endpoint == NEW_URL and BACK not in repr(opened)
    with pytest.raises(HandshakeInvalid, match="another notice"):
        check_endpoint_moved_ack(ack, **{**arguments, "nonce": "f" * 32})
    with pytest.raises(HandshakeInvalid, match="another endpoint"):
        check_endpoint_moved_ack(ack, **{**arguments, "endpoint": "https://alice-newer.example"})
    with pytest.raises(WrongResponder):
        check_endpoint_moved_ack(ack, **{**arguments, "peer_did": CAROL.did})
    with pytest.raises(BadHandshakeSignature):
        check_endpoint_moved_ack(resign(ack, CAROL), **arguments)
    with pytest.raises(HandshakeInvalid):  # a notice is not an acknowledgement
        check_endpoint_moved_ack(notice(BOB, receiver_did=ALICE.did), **arguments)


def test_only_the_notices_receiver_can_acknowledge_it() -> None:
    with pytest.raises(SplError, match="a bug"):
        build_endpoint_moved_ack(CAROL, notice=check(notice()), token=BACK, token_expires_at=NOW + DAY, now=NOW)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data())
def test_arbitrary_values_at_every_key_raise_only_spl_errors(data: st.DataObject) -> None:
    doc = notice()
    key = data.draw(st.sampled_from(sorted(doc)))
    doc[key] = data.draw(JSON_VALUES)
    try:
        check(doc)
    except SplError:
        pass
