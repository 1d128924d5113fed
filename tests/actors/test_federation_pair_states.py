"""The state an operator sees for a federation pair: the recorded one, or ``degraded`` when errors recur.

``FederationPairs.state_of`` reads the pair's record and its puller's status; nothing else. These tests build
both by hand (no daemon, no I/O) and move a fake wall clock.
"""

from __future__ import annotations

from typing import Any

from spl.actors.federation_pairs import FederationPairs, FedView
from spl.core.federation_pairs import FederationPair
from spl.core.handshake import NamespaceMap
from spl.core.pairs import PairError, PairStatus

DAY = 86_400.0
PAIR = "pair_0123456789abcdef"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def pairs(clock: Clock) -> FederationPairs:
    nothing: Any = None
    return FederationPairs(
        nothing,
        identity=nothing,
        local=nothing,
        writer=nothing,
        pool=nothing,
        remember_token=lambda info: None,
        forget_token=lambda token_id, at: None,
        approval=lambda: "manual",
        degraded_after=DAY,
        endpoint=lambda: "http://127.0.0.1:9",
        wall=clock,
    )


def view(state: str = "active") -> FedView:
    pair = FederationPair(
        pair_id=PAIR,
        role="initiator",
        peer_did="did:key:z6MkPeer",
        peer_url="http://peer.example",
        maps=(NamespaceMap("default", "default"),),
        mode="polling",
        poll_interval=300.0,
        state=state,
        state_reason="",
        nonce="0" * 32,
        created_at=1_000_000.0,
        updated_at=1_000_000.0,
    )
    return FedView(pair, status=PairStatus(PAIR))


def fail(status: PairStatus, code: str, message: str, at: float) -> None:
    status.failed(PairError(code, message, at), retry_in=1.0)


def test_an_unreachable_peer_degrades_the_pair_only_after_degraded_after() -> None:
    clock = Clock()
    book, fed = pairs(clock), view()
    assert fed.status is not None
    fed.status.pulled(cursor="s1.1", stored=1, duplicates=0, pending=0, now=clock.now)
    fail(fed.status, "CONNECT_REFUSED", "connection refused", clock.now + 60)
    clock.now += DAY - 1
    assert book.state_of(fed)[0] == "active"
    clock.now += 2
    state, reason = book.state_of(fed)
    assert state == "degraded" and "unreachable for over 24 h" in reason and "connection refused" in reason
    fed.status.pulled(cursor="s1.2", stored=1, duplicates=0, pending=0, now=clock.now)
    assert book.state_of(fed)[0] == "active"  # one good pull and it is healthy again


def test_a_refused_token_or_a_manifest_that_no_longer_verifies_degrades_at_once() -> None:
    clock = Clock()
    book = pairs(clock)
    for code, message in (
        ("HTTP_4XX", "peer answered 401 TOKEN_REVOKED: the token was revoked"),
        ("MANIFEST_INVALID", "peer serves a federation manifest whose signature does not verify"),
        ("PEER_DID_MISMATCH", "peer at http://peer.example is did:key:other"),
    ):
        fed = view()
        assert fed.status is not None
        fail(fed.status, code, message, clock.now)
        state, reason = book.state_of(fed)
        assert state == "degraded" and message in reason, (code, reason)


def test_recorded_states_win_over_the_pullers_health() -> None:
    clock = Clock()
    book = pairs(clock)
    for state in ("paused", "revoked", "establishing"):
        fed = view(state)
        assert fed.status is not None
        fail(fed.status, "MANIFEST_INVALID", "bad", clock.now - 2 * DAY)
        assert book.state_of(fed)[0] == state
