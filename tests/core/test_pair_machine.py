"""The pair's decisions, with no I/O: feed events to ``PairMachine``, assert the commands it answers.

No clock, no trio, no HTTP: ``now`` and ``wall`` are numbers the test passes.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from spl.core.feed import ChangesPage, PeerShuttingDown, PeerUnreachable, StreamLagged
from spl.core.pair_machine import (
    MAX_LAGGED_IN_A_ROW,
    REVERIFY_PEER_EVERY,
    AckBatches,
    AnswerWaiters,
    CloseStream,
    Command,
    ConfigChanged,
    FetchPage,
    Kicked,
    LocalFailure,
    OpenStream,
    PageFetched,
    PairMachine,
    PeerFailed,
    PeerVerified,
    Reconcile,
    Reconciled,
    Resumed,
    SleepUntil,
    StreamBatch,
    StreamOpened,
    TimerFired,
    Transition,
    VerifyPeer,
    retry_delay,
)
from spl.core.pairs import PairConfig, PairStatus
from spl.runtime.backoff import Backoff

SEED = 7


def machine(mode: str = "polling", *, interval: float = 5.0, verify: bool = True, **config: Any) -> PairMachine:
    base = PairConfig.validated(
        pair_id="pair_0123456789abcdef",
        peer_did="did:key:z6MkPeer",
        peer_url="http://127.0.0.1:9200",
        thread_id="th_m",
        mode=mode,
        poll_interval=interval,
    )
    return PairMachine(
        replace(base, **config), PairStatus("pair_0123456789abcdef"), rng=random.Random(SEED), verify_peer=verify
    )


def page(*ids: int, cursor: str = "", more: bool = False, pending: int = 0) -> ChangesPage:
    return ChangesPage([{"id": f"r{n}"} for n in ids], cursor, more, pending)


def done(reconcile: Command, *, stored: int = 1, refused: tuple[str, ...] = ()) -> Reconciled:
    assert isinstance(reconcile, Reconcile)
    return Reconciled(stored, 0, refused, reconcile.cursor, reconcile.pending)


def of(kind: type, commands: list[Command]) -> list[Any]:
    return [command for command in commands if isinstance(command, kind)]


# -- rounds of pages ---------------------------------------------------------------------------------


def test_a_polling_pair_verifies_the_peer_then_pages_to_the_head_then_sleeps_its_interval() -> None:
    m = machine()
    assert m.start(now=0, wall=100) == [VerifyPeer()]
    assert m.handle(PeerVerified(), now=0, wall=100) == [FetchPage("")]
    first = m.handle(PageFetched(page(1, 2, cursor="c2", more=True, pending=2)), now=1, wall=101)
    # page 2 is fetched while page 1 commits: one page ahead, never more
    assert first == [Reconcile([{"id": "r1"}, {"id": "r2"}], "c2", 2), FetchPage("c2")]
    assert m.handle(PageFetched(page(3, cursor="c3")), now=2, wall=102) == []  # waits for the commit
    second = m.handle(done(first[0], stored=2), now=3, wall=103)
    assert second == [Reconcile([{"id": "r3"}], "c3", 0)]
    end = m.handle(done(second[0]), now=4, wall=104)
    assert end == [AnswerWaiters(), SleepUntil(4 + 5.0, m.timer)]
    assert m.status.cursor == "c3" and m.status.records_pulled == 3 and m.status.state == "running"
    # the timer starts the next round, without verifying again within the hour
    assert m.handle(TimerFired(m.timer), now=9, wall=109) == [FetchPage("c3")]


def test_a_page_that_does_not_move_the_cursor_ends_the_round_whatever_has_more_says() -> None:
    m = machine(verify=False)
    m.start(now=0, wall=0)
    commands = m.handle(PageFetched(page(cursor="", more=True, pending=5)), now=1, wall=1)
    assert of(FetchPage, commands) == [] and of(Reconcile, commands) == []
    assert of(SleepUntil, commands) == [SleepUntil(6.0, m.timer)]


def test_an_old_timer_is_ignored() -> None:
    m = machine(verify=False)
    m.start(now=0, wall=0)
    m.handle(PageFetched(page(cursor="")), now=0, wall=0)
    stale = m.timer
    m.handle(Kicked(), now=1, wall=1)
    m.handle(PageFetched(page(cursor="")), now=1, wall=1)
    assert m.handle(TimerFired(stale), now=5, wall=5) == []


def test_the_peer_is_verified_again_after_an_hour_and_after_a_peer_failure() -> None:
    m = machine()
    m.start(now=0, wall=0)
    m.handle(PeerVerified(), now=0, wall=0)
    m.handle(PageFetched(page(cursor="")), now=0, wall=0)
    assert m.handle(TimerFired(m.timer), now=REVERIFY_PEER_EVERY, wall=0) == [VerifyPeer()]
    m.handle(PeerVerified(), now=REVERIFY_PEER_EVERY, wall=0)
    m.handle(PeerFailed(PeerUnreachable("down")), now=REVERIFY_PEER_EVERY + 1, wall=0)
    assert m.handle(TimerFired(m.timer), now=REVERIFY_PEER_EVERY + 5, wall=0) == [VerifyPeer()]


# -- kicks, on-demand, pause ---------------------------------------------------------------------------


def test_on_demand_waits_for_a_kick_and_a_kick_during_a_round_is_answered_when_it_ends() -> None:
    m = machine("on-demand", verify=False)
    assert m.start(now=0, wall=0) == [SleepUntil(None, 1)]
    assert m.handle(Kicked(), now=3, wall=3) == [FetchPage("")]
    assert m.handle(Kicked(), now=3, wall=3) == []  # mid-round: nothing to add
    commands = m.handle(PageFetched(page(cursor="")), now=4, wall=4)
    assert commands == [AnswerWaiters(), SleepUntil(None, m.timer)]


def test_a_kick_retries_a_failing_pair_now_with_its_backoff_started_over() -> None:
    m = machine(verify=False)
    m.start(now=0, wall=0)
    for _ in range(3):
        m.handle(PeerFailed(PeerUnreachable("down")), now=0, wall=0)
        m.handle(TimerFired(m.timer), now=0, wall=0)
    assert m.attempt == 3
    m.handle(PeerFailed(PeerUnreachable("down")), now=0, wall=0)
    assert m.handle(Kicked(), now=1, wall=1) == [FetchPage("")]
    assert m.attempt == 0


def test_a_pair_created_paused_does_nothing_until_resumed() -> None:
    m = machine(paused=True)
    assert m.start(now=0, wall=0) == []
    assert m.status.state == "paused"
    assert m.handle(Kicked(), now=1, wall=1) == [AnswerWaiters()]
    assert m.handle(Resumed(), now=2, wall=2) == [VerifyPeer()]


# -- backoff and failure classification ----------------------------------------------------------------


def test_the_retry_schedule_is_the_runtime_backoff_schedule_capped_at_300_seconds() -> None:
    reference = Backoff(base=1.0, factor=2.0, cap=300.0, jitter=0.2, rng=random.Random(SEED))
    rng = random.Random(SEED)
    delays = [retry_delay(attempt, rng) for attempt in range(14)]
    assert delays == [reference.next_delay() for _ in range(14)]
    assert max(delays) == 300.0 and delays[0] == pytest.approx(1.0, abs=0.2)


def test_failures_back_off_on_the_schedule_and_mark_the_pair_failing_once() -> None:
    m = machine(verify=False)
    m.start(now=0, wall=0)
    rng, now, transitions = random.Random(SEED), 0.0, []
    for attempt in range(4):
        commands = m.handle(PeerFailed(PeerUnreachable("peer not reachable")), now=now, wall=now)
        transitions += of(Transition, commands)
        (sleep,) = of(SleepUntil, commands)
        assert sleep.at == pytest.approx(now + retry_delay(attempt, rng))
        now = sleep.at
        m.handle(TimerFired(m.timer), now=now, wall=now)
    assert transitions == [Transition("failing", "CONNECT_REFUSED", "peer not reachable")]
    assert m.status.consecutive_failures == 4 and m.status.last_error is not None
    recovered = m.handle(PageFetched(page(cursor="")), now=now, wall=now)
    assert of(Transition, recovered) == [Transition("running", "RECOVERED", "syncing")]
    assert m.attempt == 0


def test_a_fetch_failure_lets_the_page_already_fetched_commit_first() -> None:
    m = machine(verify=False)
    m.start(now=0, wall=0)
    (reconcile, _) = m.handle(PageFetched(page(1, cursor="c1", more=True)), now=0, wall=0)
    assert m.handle(PeerFailed(PeerUnreachable("down")), now=1, wall=1) == []  # the commit is in flight
    commands = m.handle(done(reconcile), now=2, wall=2)
    assert m.status.cursor == "c1" and m.status.state == "failing"
    assert of(SleepUntil, commands) and of(FetchPage, commands) == []


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (
            LocalFailure("RECONCILE_TIMEOUT", "this daemon did not commit a pulled page within 120 s"),
            "RECONCILE_TIMEOUT",
        ),
        (LocalFailure("STORE_UNAVAILABLE", "the writer is restarting"), "STORE_UNAVAILABLE"),
    ],
)
def test_a_local_failure_marks_the_pair_failing_with_its_code_and_keeps_the_peer_verified(
    failure: LocalFailure, code: str
) -> None:
    m = machine()
    m.start(now=0, wall=0)
    m.handle(PeerVerified(), now=0, wall=0)
    m.handle(PageFetched(page(1, cursor="c1")), now=0, wall=0)
    commands = m.handle(failure, now=1, wall=1)
    assert m.status.state == "failing" and m.status.last_error is not None and m.status.last_error.code == code
    assert of(Transition, commands) == [Transition("failing", code, failure.message)]
    assert m.status.cursor == ""  # nothing committed: the page is fetched again
    assert m.handle(TimerFired(m.timer), now=10, wall=10) == [FetchPage("")]  # no re-verification


# -- stall detection -------------------------------------------------------------------------------------


def test_a_pair_whose_cursor_stays_put_while_the_peer_is_ahead_is_stalled_once_then_recovers() -> None:
    m = machine(verify=False, interval=5.0)
    m.start(now=0, wall=0)
    logged: list[Transition] = []
    for tick in range(4):
        logged += of(Transition, m.handle(PageFetched(page(cursor="", pending=9)), now=tick * 5, wall=tick * 5))
        m.handle(TimerFired(m.timer), now=tick * 5 + 5, wall=tick * 5 + 5)
    assert m.status.stalled
    assert [t.state for t in logged] == ["stalled"]
    (reconcile, *_) = m.handle(PageFetched(page(1, cursor="c1")), now=30, wall=30)
    assert of(Transition, m.handle(done(reconcile), now=30, wall=30))[0].state == "running"


# -- the continuous feed -------------------------------------------------------------------------------


def continuous_streaming() -> tuple[PairMachine, int]:
    m = machine("continuous", verify=False)
    m.start(now=0, wall=0)
    commands = m.handle(PageFetched(page(cursor="c0")), now=0, wall=0)
    (reconcile,) = of(Reconcile, commands)
    commands = m.handle(done(reconcile, stored=0), now=0, wall=0)
    (opened,) = of(OpenStream, commands)
    assert opened.cursor == "c0"
    return m, opened.stream


def test_continuous_catches_up_by_pages_then_follows_and_coalesces_batches_that_queue_during_a_commit() -> None:
    m, stream = continuous_streaming()
    m.handle(StreamOpened(stream), now=1, wall=1)
    (first,) = m.handle(StreamBatch(stream, [("c1", {"id": "r1"})]), now=1, wall=1)
    assert first == Reconcile([{"id": "r1"}], "c1", 0)
    assert m.handle(StreamBatch(stream, [("c2", {"id": "r2"})]), now=1, wall=1) == []
    assert m.handle(StreamBatch(stream, [("c3", {"id": "r3"}), ("c4", {"id": "r4"})]), now=1, wall=1) == []
    after = m.handle(done(first), now=2, wall=2)
    assert after == [AckBatches(stream, 1), Reconcile([{"id": "r2"}, {"id": "r3"}, {"id": "r4"}], "c4", 0)]
    assert m.handle(done(after[1], stored=3), now=3, wall=3) == [AckBatches(stream, 2)]
    assert m.status.cursor == "c4" and m.status.records_pulled == 4
    assert m.handle(StreamBatch(stream, []), now=4, wall=4) == [AckBatches(stream, 1)]  # heartbeat


def test_a_kick_on_a_live_stream_is_answered_at_once() -> None:
    m, _ = continuous_streaming()
    assert m.handle(Kicked(), now=1, wall=1) == [AnswerWaiters()]


def test_a_lagged_stream_catches_up_by_pages_without_backoff_until_it_happens_three_times_in_a_row() -> None:
    m, _ = continuous_streaming()
    for _ in range(MAX_LAGGED_IN_A_ROW - 1):
        assert m.handle(PeerFailed(StreamLagged()), now=1, wall=1) == [FetchPage("c0")]
        assert of(OpenStream, m.handle(PageFetched(page(cursor="c0")), now=1, wall=1))
    commands = m.handle(PeerFailed(StreamLagged()), now=2, wall=2)
    assert m.status.state == "failing" and m.status.last_error is not None
    assert m.status.last_error.code == "HTTP_5XX" and "lagged" in m.status.last_error.message
    assert of(SleepUntil, commands)


def test_a_peer_shutting_down_is_its_own_code_and_batches_of_the_old_stream_are_ignored() -> None:
    m, stream = continuous_streaming()
    commands = m.handle(PeerFailed(PeerShuttingDown("peer is shutting down")), now=1, wall=1)
    assert m.status.last_error is not None and m.status.last_error.code == "PEER_SHUTTING_DOWN"
    assert of(Transition, commands)[0].code == "PEER_SHUTTING_DOWN"
    assert m.handle(StreamBatch(stream, [("c9", {"id": "r9"})]), now=2, wall=2) == []


def test_changing_the_mode_away_from_continuous_closes_the_stream_and_polls() -> None:
    m, _ = continuous_streaming()
    commands = m.handle(ConfigChanged("polling", 2.0), now=1, wall=1)
    assert commands == [CloseStream(), FetchPage("c0")]
    assert m.config.mode == "polling" and m.config.poll_interval == 2.0
    assert of(SleepUntil, m.handle(PageFetched(page(cursor="c0")), now=1, wall=1)) == [SleepUntil(3.0, m.timer)]


def test_a_new_poll_interval_applies_to_an_idle_pair_at_once() -> None:
    m = machine(verify=False, interval=3600)
    m.start(now=0, wall=0)
    m.handle(PageFetched(page(cursor="")), now=0, wall=0)
    assert m.handle(ConfigChanged("polling", 1.0), now=1, wall=1) == [FetchPage("")]
    assert of(SleepUntil, m.handle(PageFetched(page(cursor="")), now=1, wall=1)) == [SleepUntil(2.0, m.timer)]
