"""Pure federation pieces, no I/O: the pair state machine, pair configs and their fold,
pair ids, change-feed cursors, verification of pulled records, SSE framing, error
classification and the rolling sync figures."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fed_support import signed as signed_record

from spl.core.cursor import START, decode_cursor, encode_cursor
from spl.core.errors import InvalidRecord, InvalidRequest
from spl.core.identity import MAX_DID_KEY_DIGITS, Identity, public_key_from_did, verify_record_signature
from spl.core.pairs import (
    DEFAULT_POLL_INTERVAL,
    HISTORY,
    PAIR_KIND,
    PAIRS_THREAD,
    PairConfig,
    PairError,
    PairStatus,
    fold_pair_records,
    new_pair_id,
)
from spl.core.stored import Candidate
from spl.core.syncstats import PairStats, parse_rfc3339
from spl.core.verify import Refusal, verify_pulled
from spl.transport.sse import SseParser

PEER = Identity.generate()
OTHER = Identity.generate()
DID_A = "did:key:z6MkAAAA"


def signed(clock: int, *, identity: Identity = PEER, thread: str = "th_pure", **body: Any) -> dict[str, Any]:
    return signed_record(identity, thread, clock, **body)


# -- PairStatus: the state machine ------------------------------------------------------------------


def test_a_new_pair_starts_in_starting() -> None:
    status = PairStatus("pair_0123456789abcdef")
    wire = status.to_wire(now=100.0)
    assert wire["state"] == "starting" and wire["state_reason"] == "created"
    assert wire["cursor"] == START == ""
    assert wire["last_error"] is None and wire["next_retry_at"] is None
    assert wire["consecutive_failures"] == wire["retries"] == 0
    assert wire["history"] == [] and wire["records_refused"] == {}


def test_first_success_moves_starting_to_running_with_one_history_entry() -> None:
    status = PairStatus("p")
    status.pulled(cursor=encode_cursor(5), stored=5, duplicates=1, pending=0, now=10.0)
    assert (status.state, status.reason) == ("running", "syncing")
    assert status.cursor == encode_cursor(5) and status.records_pulled == 5 and status.records_duplicate == 1
    assert status.last_success_at == status.last_attempt_at == status.caught_up_at == status.last_advance_at == 10.0
    assert list(status.history) == [{"at": 10.0, "from": "starting", "to": "running", "reason": "syncing"}]
    # Another success changes nothing in the history (same state, same reason).
    status.pulled(cursor=encode_cursor(7), stored=2, duplicates=0, pending=0, now=11.0)
    assert len(status.history) == 1 and status.pulls == 2 and status.records_pulled == 7


def test_failure_sets_last_error_retry_time_and_counts_then_success_clears_them() -> None:
    status = PairStatus("p")
    status.pulled(cursor=encode_cursor(3), stored=3, duplicates=0, pending=0, now=1.0)
    status.failed(PairError("CONNECT_REFUSED", "peer not reachable", at=20.0), retry_in=1.5)
    assert status.state == "failing"
    assert status.reason == "CONNECT_REFUSED: peer not reachable"
    assert status.last_error == PairError("CONNECT_REFUSED", "peer not reachable", 20.0)
    assert status.next_retry_at == 21.5 and status.last_attempt_at == 20.0
    assert status.consecutive_failures == 1 and status.errors_total == 1
    status.failed(PairError("CONNECT_REFUSED", "peer not reachable", at=21.5), retry_in=2.25)
    assert status.consecutive_failures == 2 and status.next_retry_at == 23.75
    assert len(status.history) == 2  # same state and reason: no new entry
    status.failed(PairError("TIMEOUT", "peer did not answer in time", at=24.0), retry_in=4.0)
    assert status.history[-1] == {
        "at": 24.0,
        "from": "failing",
        "to": "failing",
        "reason": "TIMEOUT: peer did not answer in time",
    }
    wire = status.to_wire(now=25.0)
    assert wire["last_error"] == {"code": "TIMEOUT", "message": "peer did not answer in time", "at": 24.0}
    assert wire["retries"] == wire["consecutive_failures"] == 3 and wire["errors_total"] == 3

    status.pulled(cursor=encode_cursor(3), stored=0, duplicates=0, pending=0, now=28.0)
    assert (status.state, status.reason) == ("running", "syncing")
    assert status.consecutive_failures == 0 and status.next_retry_at is None
    assert status.errors_total == 3  # cumulative
    assert status.last_error is not None  # kept for the operator, with its time
    assert status.history[-1] == {"at": 28.0, "from": "failing", "to": "running", "reason": "syncing"}
    assert [entry["to"] for entry in status.history] == ["running", "failing", "failing", "running"]


def test_pause_resume_stop_transitions_carry_reasons() -> None:
    status = PairStatus("p")
    status.failed(PairError("HTTP_5XX", "peer answered 503", at=1.0), retry_in=1.0)
    status.paused(now=2.0)
    assert (status.state, status.reason) == ("paused", "paused by operator")
    assert status.next_retry_at is None  # a paused pair has no retry scheduled
    status.paused(now=2.5)  # idempotent
    status.resumed(now=3.0)
    assert (status.state, status.reason) == ("starting", "resumed by operator")
    status.pulled(cursor=encode_cursor(1), stored=1, duplicates=0, pending=0, now=4.0)
    status.stopped(now=5.0)
    assert (status.state, status.reason) == ("stopped", "removed") and status.next_retry_at is None
    assert [(e["from"], e["to"], e["reason"]) for e in status.history] == [
        ("starting", "failing", "HTTP_5XX: peer answered 503"),
        ("failing", "paused", "paused by operator"),
        ("paused", "starting", "resumed by operator"),
        ("starting", "running", "syncing"),
        ("running", "stopped", "removed"),
    ]
    assert [e["at"] for e in status.history] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_history_is_bounded() -> None:
    status = PairStatus("p")
    for index in range(HISTORY + 15):
        status.failed(PairError("TIMEOUT", f"attempt {index}", at=float(index)), retry_in=1.0)
    assert len(status.history) == HISTORY
    assert status.history[-1]["reason"] == f"TIMEOUT: attempt {HISTORY + 14}"


def test_the_cursor_is_whatever_the_peer_gave_last_and_only_a_change_is_progress() -> None:
    # Opaque (spec §15.20): spl never orders or parses a peer's cursor, it stores it.
    status = PairStatus("p", cursor="peer-cursor-A")
    status.pulled(cursor="peer-cursor-A", stored=0, duplicates=3, pending=0, now=1.0)
    assert status.cursor == "peer-cursor-A"
    assert status.last_advance_at == 1.0  # the watchdog's reference starts at the first pull
    status.pulled(cursor="peer-cursor-A", stored=0, duplicates=0, pending=0, now=2.0)
    assert status.last_advance_at == 1.0  # no progress, no new reference
    status.pulled(cursor="99999999999999999999999", stored=1, duplicates=0, pending=0, now=3.0)
    assert status.cursor == "99999999999999999999999" and status.last_advance_at == 3.0
    assert status.to_wire(3.0)["cursor"] == "99999999999999999999999"


def test_lag_records_and_lag_seconds() -> None:
    status = PairStatus("p")
    status.pulled(cursor=encode_cursor(10), stored=10, duplicates=0, pending=0, now=100.0)
    assert status.lag_records == 0 and status.lag_seconds(now=500.0) == 0.0
    status.pulled(cursor=encode_cursor(20), stored=10, duplicates=0, pending=30, now=110.0)
    assert status.lag_records == 30 and status.caught_up_at == 100.0
    assert status.lag_seconds(now=112.5) == 12.5  # behind since we were last caught up
    assert status.to_wire(now=112.5)["lag_seconds"] == 12.5
    status.pulled(cursor=encode_cursor(50), stored=30, duplicates=0, pending=0, now=120.0)
    assert status.lag_records == 0 and status.lag_seconds(now=130.0) == 0.0
    status.pulled(cursor=encode_cursor(50), stored=0, duplicates=0, pending=-3, now=121.0)  # a confused peer
    assert status.lag_records == 0


def test_lag_seconds_counts_for_a_pair_that_has_never_caught_up() -> None:
    status = PairStatus("p")
    status.pulled(cursor=encode_cursor(1000), stored=1000, duplicates=0, pending=9000, now=100.0)
    # Nine thousand records behind for a minute: lag_seconds must not say "no lag".
    assert status.lag_seconds(now=160.0) > 0.0


def test_stall_watchdog_after_two_idle_intervals() -> None:
    status = PairStatus("p")
    status.pulled(cursor=encode_cursor(10), stored=10, duplicates=0, pending=0, now=0.0)
    status.pulled(
        cursor=encode_cursor(12), stored=2, duplicates=0, pending=3, now=5.0
    )  # peer ahead, cursor moved at t=5
    assert status.check_stall(interval=5.0, now=14.9) is False and not status.stalled
    assert status.check_stall(interval=5.0, now=15.0) is True and status.stalled
    assert status.state == "running"
    assert status.reason == "stalled: peer is 3 record(s) ahead, cursor idle"
    assert status.history[-1] == {
        "at": 15.0,
        "from": "running",
        "to": "running",
        "reason": "stalled: peer is 3 record(s) ahead, cursor idle",
    }
    entries = len(status.history)
    assert status.check_stall(interval=5.0, now=16.0) is True
    assert len(status.history) == entries  # reported once, not on every check
    assert status.to_wire(now=16.0)["stalled"] is True
    # Progress that catches up clears it.
    status.pulled(cursor=encode_cursor(15), stored=3, duplicates=0, pending=0, now=17.0)
    assert not status.stalled and status.check_stall(interval=5.0, now=100.0) is False
    assert status.reason == "syncing"


def test_stall_needs_the_peer_to_be_ahead() -> None:
    status = PairStatus("p")
    status.pulled(cursor=encode_cursor(10), stored=10, duplicates=0, pending=0, now=0.0)
    assert status.check_stall(interval=1.0, now=1000.0) is False  # idle but caught up: fine


def test_stall_of_a_failing_pair_is_flagged_without_a_state_change() -> None:
    status = PairStatus("p")
    status.pulled(cursor=encode_cursor(10), stored=10, duplicates=0, pending=4, now=100.0)
    status.failed(PairError("TIMEOUT", "slow", at=101.0), retry_in=1.0)
    assert status.check_stall(interval=1.0, now=105.0) is True
    assert status.state == "failing" and status.reason == "TIMEOUT: slow"


def test_stall_watchdog_with_a_clock_that_starts_at_zero() -> None:
    status = PairStatus("p")
    status.pulled(cursor=encode_cursor(10), stored=10, duplicates=0, pending=4, now=0.0)
    assert status.check_stall(interval=1.0, now=5.0) is True


def test_stall_watchdog_fires_for_a_pair_stuck_from_its_first_page() -> None:
    status = PairStatus("p")
    for now in (0.0, 5.0, 10.0, 15.0):
        status.pulled(
            cursor=encode_cursor(0), stored=0, duplicates=0, pending=7, now=now
        )  # peer ahead, pages never advance
    assert status.check_stall(interval=5.0, now=15.0) is True


def test_to_wire_has_every_operator_field() -> None:
    status = PairStatus("p")
    status.refused("SIGNATURE_INVALID")
    status.refused("ID_MISMATCH", 2)
    status.refused("SIGNATURE_INVALID")
    wire = status.to_wire(now=0.0)
    assert wire["records_refused"] == {"SIGNATURE_INVALID": 2, "ID_MISMATCH": 2}
    assert set(wire) >= {
        "state",
        "state_reason",
        "cursor",
        "last_error",
        "consecutive_failures",
        "retries",
        "last_success_at",
        "next_retry_at",
        "lag_records",
        "lag_seconds",
        "stalled",
        "records_pulled",
        "records_duplicate",
        "records_refused",
        "errors_total",
        "history",
    }
    wire["records_refused"]["X"] = 1
    assert "X" not in status.records_refused  # a copy, not the live dict


# -- PairConfig.validated ---------------------------------------------------------------------------


def config(**overrides: Any) -> PairConfig:
    fields: dict[str, Any] = {
        "pair_id": "pair_0123456789abcdef",
        "peer_did": DID_A,
        "peer_url": "http://localhost:9200",
        "thread_id": "th_federation_demo",
    }
    fields.update(overrides)
    return PairConfig.validated(**fields)


def test_config_defaults_and_normalisation() -> None:
    pair = config(peer_url="http://localhost:9200/", poll_interval=2)
    assert pair.peer_url == "http://localhost:9200"
    assert pair.mode == "polling" and pair.poll_interval == 2.0 and isinstance(pair.poll_interval, float)
    assert pair.paused is False
    assert config().poll_interval == DEFAULT_POLL_INTERVAL == 5.0
    for mode in ("polling", "continuous", "on-demand"):
        assert config(mode=mode).mode == mode
    assert config(poll_interval=0.05).poll_interval == 0.05
    assert config(poll_interval=86_400).poll_interval == 86_400.0


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"peer_did": None}, "peer_did"),
        ({"peer_did": 42}, "peer_did"),
        ({"peer_did": "z6Mk-not-a-did"}, "peer_did"),
        ({"peer_did": "did:" + "x" * 600}, "peer_did"),
        ({"peer_url": None}, "peer_url"),
        ({"peer_url": "localhost:9200"}, "peer_url"),
        ({"peer_url": "ftp://localhost"}, "peer_url"),
        ({"peer_url": "http://" + "h" * 3000}, "peer_url"),
        ({"mode": "push"}, "mode must be one of polling, continuous, on-demand"),
        ({"mode": 3}, "mode"),
        ({"poll_interval": 0.01}, "poll_interval"),
        ({"poll_interval": 100_000}, "poll_interval"),
        ({"poll_interval": "5"}, "poll_interval"),
        ({"poll_interval": True}, "poll_interval"),
        ({"poll_interval": float("nan")}, "poll_interval"),
    ],
)
def test_config_rejects_bad_input_with_a_400_naming_the_field(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        config(**overrides)
    assert caught.value.status == 400
    assert fragment in caught.value.message


@pytest.mark.parametrize("thread", [None, "", "has space", "th/slash", "x" * 257])
def test_config_rejects_bad_threads(thread: object) -> None:
    with pytest.raises(InvalidRecord) as caught:
        config(thread_id=thread)
    assert caught.value.status == 400 and caught.value.code == "INVALID_THREAD"
    assert "thread_id" in caught.value.message


# -- fold_pair_records ------------------------------------------------------------------------------


OWN_DID = "did:key:z6MkThisInstance"


def pair_record(
    pair: PairConfig, status: str = "active", *, act: str = "LEARN", signer: str = OWN_DID, **body: Any
) -> dict[str, Any]:
    return {"act": act, "thread": PAIRS_THREAD, "signer": signer, "body": {**pair.to_body(status), **body}}


def test_fold_latest_record_per_pair_wins() -> None:
    first = config(pair_id="pair_aaaaaaaaaaaaaaaa", poll_interval=5)
    second = config(pair_id="pair_bbbbbbbbbbbbbbbb", thread_id="th_other")
    changed = config(pair_id="pair_aaaaaaaaaaaaaaaa", poll_interval=0.5, mode="continuous")
    folded = fold_pair_records([pair_record(first), pair_record(second), pair_record(changed)], OWN_DID)
    assert set(folded) == {"pair_aaaaaaaaaaaaaaaa", "pair_bbbbbbbbbbbbbbbb"}
    assert folded["pair_aaaaaaaaaaaaaaaa"].poll_interval == 0.5
    assert folded["pair_aaaaaaaaaaaaaaaa"].mode == "continuous"
    assert folded["pair_bbbbbbbbbbbbbbbb"] == second


def test_fold_drops_removed_pairs_and_keeps_paused_ones() -> None:
    gone = config(pair_id="pair_aaaaaaaaaaaaaaaa")
    held = config(pair_id="pair_bbbbbbbbbbbbbbbb", thread_id="th_held")
    folded = fold_pair_records(
        [
            pair_record(gone),
            pair_record(held),
            pair_record(gone, "removed"),
            pair_record(held, paused=True),
        ],
        OWN_DID,
    )
    assert list(folded) == ["pair_bbbbbbbbbbbbbbbb"]
    assert folded["pair_bbbbbbbbbbbbbbbb"].paused is True
    # Resumed later: the latest record says not paused.
    assert fold_pair_records([pair_record(held, paused=True), pair_record(held)], OWN_DID)[held.pair_id].paused is False
    # Re-added after removal: back.
    assert gone.pair_id in fold_pair_records(
        [pair_record(gone), pair_record(gone, "removed"), pair_record(gone)], OWN_DID
    )


def test_fold_ignores_records_that_are_not_pair_configs() -> None:
    good = config()
    records = [
        pair_record(good, act="INTEND"),
        {"act": "LEARN", "body": {"kind": "other.kind", "pair_id": "pair_x"}},
        {"act": "LEARN", "body": {"kind": PAIR_KIND, "pair_id": 7}},
        {"act": "LEARN"},
        pair_record(config(pair_id="pair_cccccccccccccccc"), peer_url="not a url"),
        pair_record(config(pair_id="pair_dddddddddddddddd"), poll_interval=-1),
    ]
    assert fold_pair_records(records, OWN_DID) == {}
    assert list(fold_pair_records([*records, pair_record(good)], OWN_DID)) == [good.pair_id]


def test_to_body_round_trips_through_the_fold() -> None:
    pair = config(mode="on-demand", poll_interval=12.5, created_at="2026-01-01T00:00:00Z")
    body = pair.to_body()
    assert body["kind"] == PAIR_KIND and body["_v"] == 1 and body["status"] == "active"
    assert fold_pair_records([{"act": "LEARN", "body": body, "signer": OWN_DID}], OWN_DID) == {pair.pair_id: pair}


def test_fold_reads_only_records_this_instance_signed_with_well_formed_ids() -> None:
    # Issue 7: a planted record (a client, a peer, a bug) must never become a pair, whatever it says.
    good = config(pair_id="pair_aaaaaaaaaaaaaaaa")
    planted = [
        pair_record(config(pair_id="pair_bbbbbbbbbbbbbbbb"), signer="did:key:z6MkMallory"),
        {**pair_record(config(pair_id="pair_cccccccccccccccc")), "signer": None},
        pair_record(good, "removed", signer="did:key:z6MkMallory"),  # cannot remove ours either
        pair_record(good, pair_id="../admin"),
        pair_record(good, pair_id="pair_/../../x"),
        pair_record(good, pair_id="PAIR_AAAAAAAAAAAAAAAA"),
        pair_record(config(pair_id="pair_dddddddddddddddd"), thread_id="th_federation_pairs"),
    ]
    assert fold_pair_records([pair_record(good), *planted], OWN_DID) == {good.pair_id: good}


@pytest.mark.parametrize(
    "pair_id",
    ["../admin", "pair_0123456789abcdef\n", "pair_", "pair_0123456789abcdeg", "pair_0123456789ABCDEF", "x" * 300],
)
def test_config_refuses_a_pair_id_that_is_not_pair_and_16_hex(pair_id: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        config(pair_id=pair_id)
    assert caught.value.code == "INVALID_PAIR_ID"


# -- pair ids ---------------------------------------------------------------------------------------


def test_new_pair_id_format_and_inputs() -> None:
    pattern = re.compile(r"^pair_[0-9a-f]{16}$")
    ids = {new_pair_id("did:key:zB", DID_A, "th_t") for _ in range(50)}
    assert len(ids) == 50 and all(pattern.match(pair_id) for pair_id in ids)  # a fresh nonce each time
    fixed = new_pair_id("did:key:zB", DID_A, "th_t", "nonce")
    assert pattern.match(fixed) and fixed == new_pair_id("did:key:zB", DID_A, "th_t", "nonce")
    assert fixed != new_pair_id("did:key:zB", DID_A, "th_u", "nonce")
    assert fixed != new_pair_id("did:key:zC", DID_A, "th_t", "nonce")
    assert fixed != new_pair_id("did:key:zB", "did:key:zZ", "th_t", "nonce")


# -- cursors ----------------------------------------------------------------------------------------


def test_cursor_round_trip() -> None:
    assert encode_cursor(0) == START == ""
    for sequence in (1, 2, 999, 10**12, 2**63 - 1):
        assert decode_cursor(encode_cursor(sequence)) == sequence
    assert decode_cursor(None) == decode_cursor("") == decode_cursor("0") == 0
    assert encode_cursor(7) != encode_cursor(70)


@pytest.mark.parametrize(
    "garbage",
    [
        "abc",
        "-7",
        "99999999999999999999",  # a bare SSE id beyond the sequence range
        "s1.",
        "s1.-1",
        "s1.+5",
        "s1.1.5",
        "s1. 5",
        "s1.0x10",
        "s2.5",
        "S1.5",
        "s1.\u0661\u0662",  # Arabic-Indic digits: isdigit() but not ASCII
        "s1.\u00b2",
        "s1.99999999999999999999",
        f"s1.{2**63}",
        "s1." + "9" * 5000,
    ],
)
def test_garbage_cursor_is_a_400_that_names_the_fix(garbage: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        decode_cursor(garbage)
    assert caught.value.status == 400 and caught.value.code == "INVALID_CURSOR"
    assert "cursor" in caught.value.message
    assert len(caught.value.message) < 200  # the garbage is truncated in the message


# -- verify_pulled ----------------------------------------------------------------------------------


def test_a_valid_record_verifies_and_keeps_its_signer() -> None:
    record = signed(1, text="hello")
    result = verify_pulled(record)
    assert isinstance(result, Candidate)
    assert result.envelope.id == record["id"]
    assert (result.signer, result.sig) == (PEER.did, record["sig"])
    assert verify_record_signature(record["id"], result.signer, result.sig)
    # The served form (extra unhashed keys) verifies too.
    served = {**record, "object": "record", "namespace": "default", "sequence": 9, "created_at": "x"}
    assert isinstance(verify_pulled(served), Candidate)


def test_tampered_body_is_an_id_mismatch() -> None:
    record = signed(1, text="hello")
    tampered = {**record, "body": {"text": "HELLO"}}
    result = verify_pulled(tampered)
    assert isinstance(result, Refusal) and result.code == "ID_MISMATCH"
    assert result.record_id == record["id"]
    for field, value in (("clock", 2), ("actor", "did:test:mallory"), ("thread", "th_elsewhere"), ("act", "DO")):
        refusal = verify_pulled({**record, field: value})
        assert isinstance(refusal, Refusal) and refusal.code == "ID_MISMATCH", field


def test_swapped_signature_is_refused() -> None:
    one, two = signed(1), signed(2)
    result = verify_pulled({**one, "sig": two["sig"]})
    assert isinstance(result, Refusal) and result.code == "SIGNATURE_INVALID"
    assert result.record_id == one["id"]


def test_wrong_signer_is_refused() -> None:
    record = signed(1)
    result = verify_pulled({**record, "signer": OTHER.did})
    assert isinstance(result, Refusal) and result.code == "SIGNATURE_INVALID"
    # Re-signed by OTHER but still claiming PEER: refused as well.
    forged = {**record, "sig": OTHER.sign_record_id(record["id"])}
    assert isinstance(verify_pulled(forged), Refusal)


@pytest.mark.parametrize(
    "change",
    [
        {"sig": None},
        {"signer": None},
        {"sig": ""},
        {"sig": "!!!not-base64!!!"},
        {"signer": "did:web:example.com"},
        {"signer": "did:key:zNotBase58OOO"},
    ],
)
def test_missing_or_unusable_signature_is_refused(change: dict[str, Any]) -> None:
    record = {key: value for key, value in {**signed(1), **change}.items() if value is not None}
    result = verify_pulled(record)
    assert isinstance(result, Refusal) and result.code == "SIGNATURE_INVALID", result


def test_not_a_record_is_invalid() -> None:
    for raw in (None, [], "x", {"id": "abc"}, {**signed(1), "clock": -1}, {**signed(1), "act": "JUMP"}):
        result = verify_pulled(raw)
        assert isinstance(result, Refusal) and result.code == "INVALID_RECORD", raw
    wire = verify_pulled({"id": "abc"})
    assert isinstance(wire, Refusal) and wire.to_wire()["id"] == "abc"


# -- SSE framing ------------------------------------------------------------------------------------


def test_sse_parser_frames_split_anywhere() -> None:
    stream = (
        b'event: record.created\nid: 7\ndata: {"id":"a"}\n\n'
        b"event: heartbeat\ndata: {}\n\n"
        b": a comment\n\n"
        b"event: nodata\nid: 9\n\n"
        b"data: first\ndata: second\n\n"
        b"event:tight\ndata:x\n\n"
    )
    for split in range(1, len(stream)):
        parser = SseParser()
        events = parser.feed(stream[:split]) + parser.feed(stream[split:])
        got = [(e.event, e.id, e.data) for e in events]
        assert got == [
            ("record.created", "7", '{"id":"a"}'),
            ("heartbeat", None, "{}"),
            ("message", None, "first\nsecond"),
            ("tight", None, "x"),
        ], split


CRLF_STREAM = b"event: record.created\r\nid: 1\r\ndata: one\r\n\r\nevent: heartbeat\r\ndata: {}\r\n\r\n"


def test_sse_parser_handles_crlf_in_whole_chunks() -> None:
    events = SseParser().feed(CRLF_STREAM)
    assert [(e.event, e.id, e.data) for e in events] == [("record.created", "1", "one"), ("heartbeat", None, "{}")]


def test_sse_parser_handles_one_byte_chunks() -> None:
    stream = CRLF_STREAM.replace(b"\r\n", b"\n")
    parser = SseParser()
    events = [event for index in range(len(stream)) for event in parser.feed(stream[index : index + 1])]
    assert [(e.event, e.id, e.data) for e in events] == [("record.created", "1", "one"), ("heartbeat", None, "{}")]


def test_sse_parser_handles_crlf_split_across_chunks() -> None:
    parser = SseParser()
    events = [event for index in range(len(CRLF_STREAM)) for event in parser.feed(CRLF_STREAM[index : index + 1])]
    assert [(e.event, e.id, e.data) for e in events] == [("record.created", "1", "one"), ("heartbeat", None, "{}")]


def test_sse_parser_keeps_an_incomplete_frame_and_bounds_it() -> None:
    parser = SseParser(max_frame=64)
    assert parser.feed(b"event: record.created\ndata: partial") == []
    assert [e.data for e in parser.feed(b" rest\n\n")] == ["partial rest"]
    with pytest.raises(ValueError):
        parser.feed(b"data: " + b"x" * 100)


# -- rolling figures --------------------------------------------------------------------------------


def test_parse_rfc3339() -> None:
    assert parse_rfc3339("1970-01-01T00:00:10.500000Z") == 10.5
    assert parse_rfc3339("1970-01-02T00:00:00Z") == 86_400.0
    for bad in (None, 5, "", "yesterday", "2026-11-21T02:23:45", "2026-13-45T99:00:00Z"):
        assert parse_rfc3339(bad) is None


def test_pair_stats_window_and_histogram() -> None:
    stats = PairStats()
    stats.note_pulled(10, [0.0005, 0.003, 0.2], now=1000.0)
    stats.note_pulled(5, [20.0], now=4000.0)
    stats.note_error(3000.0)
    stats.note_error(4500.0)
    wire = stats.to_wire(now=4700.0)
    assert wire["records_last_minute"] == 0
    assert wire["records_last_hour"] == 5  # the pull at t=1000 is outside the hour
    assert wire["errors_last_hour"] == 2
    assert wire["latency_ms"]["count"] == 1 and wire["latency_histogram"]["gt_10000ms"] == 1
    early_stats = PairStats()
    early_stats.note_pulled(10, [0.0005, 0.003, 0.2], now=1000.0)
    early = early_stats.to_wire(now=1010.0)
    assert early["records_last_minute"] == 10
    histogram = early["latency_histogram"]
    assert histogram["le_1ms"] == 1 and histogram["le_5ms"] == 1 and histogram["le_250ms"] == 1
    assert sum(histogram.values()) == 3
    assert early["latency_ms"]["count"] == 3 and early["latency_ms"]["p50"] == 3.0
    assert PairStats().to_wire(now=0.0)["latency_ms"] == {
        "count": 0,
        "mean": None,
        "p50": None,
        "p95": None,
        "p99": None,
    }


def test_a_huge_signer_is_refused_before_it_is_decoded() -> None:
    # Attacker review: base58-decoding a 300 KB signer took 17 s of CPU in a shared worker thread.
    record = {**signed(1, text="hello"), "signer": "did:key:z" + "6" * 300_000}
    result = verify_pulled(record)
    assert isinstance(result, Refusal) and result.code == "SIGNATURE_INVALID" and "longer" in result.reason
    with pytest.raises(ValueError, match="too long"):
        public_key_from_did("did:key:z" + "6" * 300_000)
    assert len(Identity.generate().did) <= len("did:key:z") + MAX_DID_KEY_DIGITS
