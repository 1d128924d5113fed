"""The pair's trio driver on trio's MockClock, against an ``httpx.MockTransport`` peer.

The decisions themselves are tested without I/O in ``tests/core/test_pair_machine.py``; these
tests check the driver carries them out: requests at the exact virtual times, the supervisor's
pause gate really holds the pair (and the tree says ``paused``), local failures mark the pair,
transitions are logged once. The reconciler is an in-memory fake, so no worker thread runs and
MockClock needs no help.
"""

from __future__ import annotations

import json
import logging
import random
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from spl.actors.messages import Kick, Reply, Resume
from spl.actors.pair import PairActor, PairDeps
from spl.actors.reconciler import ReconcileResult, VerifiedPage
from spl.core.errors import Unavailable
from spl.core.pair_machine import ConfigChanged, retry_delay
from spl.core.pairs import PairConfig, PairStatus
from spl.core.stored import StoredRecord
from spl.runtime.supervisor import ChildSpec, Supervisor
from spl.transport.peer import PeerPool

# Ending a feed means leaving httpx's nested body generators early; trio finalises them later (harmless).
pytestmark = pytest.mark.filterwarnings("ignore:Async generator 'httpx:ResourceWarning")

THREAD = "th_actor_test"
PAIR_ID = "pair_00000000000000aa"
PEER_URL = "http://peer.test"
PEER_DID = "did:key:z6MkPeerForActorTests"
START = 100.0
SEED = 20240611
GUARD = 100_000.0  # virtual seconds: a hung pair makes the clock jump here and the test fail


def record(n: int) -> dict[str, Any]:
    return {"id": f"rec_{n:04d}", "thread": THREAD, "act": "PUT", "clock": n, "body": {"n": n}}


@dataclass
class FakePeer:
    """``/v1/sync/changes`` over ``records`` with cursors ``k<n>``; ``failures`` are raised first, in order."""

    records: list[dict[str, Any]] = field(default_factory=list)
    failures: list[BaseException | httpx.Response] = field(default_factory=list)
    forever: BaseException | httpx.Response | None = None
    page_size: int = 10
    times: list[float] = field(default_factory=list)
    streams: list[trio.MemorySendChannel[bytes]] = field(default_factory=list)

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.times.append(trio.current_time())
        failure = self.failures.pop(0) if self.failures else self.forever
        if isinstance(failure, BaseException):
            raise failure
        if failure is not None:
            return failure
        params = dict(request.url.params)
        since = int(params.get("since", "k0")[1:])
        if params.get("feed") == "continuous":
            send, receive = trio.open_memory_channel[bytes](100)
            self.streams.append(send)
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Feed(receive))
        rest = self.records[since:]
        chunk = rest[: self.page_size]
        more = len(rest) > len(chunk)
        return httpx.Response(
            200,
            json={
                "records": [{"id": r["id"], "record": r} for r in chunk],
                "next_cursor": f"k{since + len(chunk)}",
                "has_more": more,
                "pending": len(rest) - len(chunk) if more else 0,
            },
        )


class Feed(httpx.AsyncByteStream):
    """A continuous-feed body the test writes frames into; closing the channel ends it."""

    def __init__(self, receive: trio.MemoryReceiveChannel[bytes]) -> None:
        self._receive = receive

    def __aiter__(self) -> Feed:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._receive.aclose()


def frame(n: int) -> bytes:
    data = json.dumps({"id": f"rec_{n:04d}", "record": record(n)})
    return f"event: record.created\nid: k{n}\ndata: {data}\n\n".encode()


@dataclass
class FakeReconciler:
    """Commits in memory; ``fail`` makes the next commits raise it, ``hang`` makes them never answer.

    ``verify`` only notes the page (its "candidates" are the raw records); ``verify_fails`` makes it raise.
    """

    committed: list[tuple[int, str]] = field(default_factory=list)  # (records, cursor)
    fail: list[Exception] = field(default_factory=list)
    hang: bool = False
    verified: list[int] = field(default_factory=list)  # sizes of the pages verified ahead of their commit
    committed_verified: list[str] = field(default_factory=list)  # cursors committed through commit()
    verify_fails: bool = False
    verify_seconds: float = 0.0  # how long verifying a page takes (virtual time)

    async def verify(self, records: list[Any]) -> VerifiedPage:
        await trio.sleep(self.verify_seconds)
        if self.verify_fails:
            raise RuntimeError("a bug in verification")
        self.verified.append(len(records))
        return VerifiedPage(list(records), [], len(records))

    async def commit(self, pair_id: str, page: VerifiedPage, cursor: str) -> ReconcileResult:
        result = await self.reconcile(pair_id, page.candidates, cursor)
        self.committed_verified.append(cursor)
        return result

    async def reconcile(self, pair_id: str, records: list[Any], cursor: str) -> ReconcileResult:
        if self.hang:
            await trio.sleep_forever()
        if self.fail:
            raise self.fail.pop(0)
        self.committed.append((len(records), cursor))
        stored = [StoredRecord(0, r["id"], THREAD, "{}") for r in records]
        return ReconcileResult(stored=stored)


@dataclass
class Harness:
    actor: PairActor
    root: Supervisor
    peer: FakePeer
    reconciler: FakeReconciler

    @property
    def status(self) -> PairStatus:
        return self.actor.status

    def child_state(self) -> str:
        (child,) = [c for c in self.root.snapshot().children if c.id == "pair"]
        return child.state


@asynccontextmanager
async def running_pair(  # type: ignore[no-untyped-def]
    peer: FakePeer,
    *,
    mode: str = "polling",
    poll_interval: float = 10.0,
    paused: bool = False,
    reconciler: FakeReconciler | None = None,
):
    reconciler = reconciler or FakeReconciler()
    root = Supervisor("test")
    config = PairConfig.validated(
        pair_id=PAIR_ID, peer_did=PEER_DID, peer_url=PEER_URL, thread_id=THREAD, mode=mode, poll_interval=poll_interval
    )
    async with PeerPool(httpx.MockTransport(peer.handler)) as pool:
        deps = PairDeps(
            reconciler=reconciler,  # type: ignore[arg-type]
            peer=pool.client(PEER_URL),
            token=lambda pair_id: None,
            inbox=lambda: root.inbox("pair"),
            verify_peer=False,
            wall=trio.current_time,
            rng=random.Random(SEED),
        )
        actor = PairActor(replace(config, paused=paused), PairStatus(PAIR_ID), deps)
        with trio.fail_after(GUARD):
            async with trio.open_nursery() as nursery:
                await nursery.start(root.run)
                await trio.sleep_until(START)
                await root.add_child(ChildSpec("pair", actor.run, inbox_size=64, shutdown_budget=2.0))
                if paused:
                    root.pause("pair")
                try:
                    yield Harness(actor, root, peer, reconciler)
                finally:
                    for stream in peer.streams:
                        stream.close()
                    root.shutdown()


async def until(predicate: Any) -> None:
    """Let virtual time run until ``predicate()`` holds (the GUARD deadline fails a test that hangs).

    The pair's figures have no event to wait on; on MockClock each step is virtual, so the pair's own
    timers still fire at their exact times (the assertions read the times the peer saw requests).
    """
    while not predicate():  # noqa: ASYNC110 - virtual-time steps on MockClock, not a real sleep
        await trio.sleep(0.01)


async def test_a_polling_pair_pulls_to_the_head_then_polls_every_interval(autojump_clock: Any) -> None:
    peer = FakePeer(records=[record(n) for n in range(1, 26)])
    async with running_pair(peer, poll_interval=10.0) as pair:
        await until(lambda: len(peer.times) >= 5)
        # 25 records in pages of 10: three requests at START, then one per interval
        assert peer.times == pytest.approx([START, START, START, START + 10, START + 20], abs=1e-9)
        assert pair.reconciler.committed == [(10, "k10"), (10, "k20"), (5, "k25")]
        assert pair.status.cursor == "k25" and pair.status.records_pulled == 25 and pair.status.state == "running"
        # every page was verified as it arrived, and its commit only handed the result over
        assert pair.reconciler.verified == [10, 10, 5]
        assert pair.reconciler.committed_verified == ["k10", "k20", "k25"]


async def test_a_commit_waits_for_its_page_verifying_in_the_background(autojump_clock: Any) -> None:
    peer = FakePeer(records=[record(n) for n in range(1, 26)])
    async with running_pair(peer, reconciler=FakeReconciler(verify_seconds=3.0)) as pair:
        await until(lambda: pair.status.cursor == "k25")
        done = trio.current_time()
        assert pair.reconciler.committed == [(10, "k10"), (10, "k20"), (5, "k25")]
        assert pair.reconciler.committed_verified == ["k10", "k20", "k25"]
        # Page 2 is fetched and verified while page 1 verifies and commits, page 3 while page 2 commits:
        # three verifications of 3 s end at START + 6, not START + 9.
        assert peer.times == pytest.approx([START, START, START + 3], abs=1e-9)
        assert done == pytest.approx(START + 6, abs=0.02)


async def test_a_page_whose_verification_ahead_fails_is_verified_again_with_its_commit(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    peer = FakePeer(records=[record(n) for n in range(1, 16)])
    with caplog.at_level(logging.ERROR, logger="spl.pair"):
        async with running_pair(peer, reconciler=FakeReconciler(verify_fails=True)) as pair:
            await until(lambda: pair.status.cursor == "k15")
            assert pair.reconciler.committed == [(10, "k10"), (5, "k15")]
            assert pair.reconciler.committed_verified == []  # both went through reconcile(), verify and commit
    assert any("verifying a page ahead" in r.getMessage() for r in caplog.records)


async def test_retries_follow_the_backoff_schedule_exactly(autojump_clock: Any) -> None:
    peer = FakePeer(forever=httpx.ConnectError("[Errno 111] Connection refused"))
    async with running_pair(peer) as pair:
        await until(lambda: len(peer.times) >= 6)
        rng, expected = random.Random(SEED), [START]
        for attempt in range(5):
            expected.append(expected[-1] + retry_delay(attempt, rng))
        assert peer.times[:6] == pytest.approx(expected, abs=1e-9)
        assert pair.status.state == "failing" and pair.status.last_error is not None
        assert pair.status.last_error.code == "CONNECT_REFUSED"


async def test_pausing_uses_the_supervisor_gate_the_tree_says_paused_and_nothing_is_pulled(autojump_clock: Any) -> None:
    peer = FakePeer(records=[record(1)])
    async with running_pair(peer, poll_interval=10.0) as pair:
        await until(lambda: pair.status.cursor == "k1")
        pair.root.pause("pair")
        assert pair.child_state() == "paused"
        requests = len(peer.times)
        peer.records.append(record(2))
        await trio.sleep(100)
        assert len(peer.times) <= requests + 1  # at most the poll already under way when the gate closed
        assert pair.status.cursor == "k1"
        pair.root.resume("pair")
        pair.root.inbox("pair").send_nowait(Resume())
        assert pair.child_state() == "running"
        await until(lambda: pair.status.cursor == "k2")


async def test_a_pair_created_paused_makes_no_request_until_resumed(autojump_clock: Any) -> None:
    peer = FakePeer(records=[record(1)])
    async with running_pair(peer, paused=True) as pair:
        await trio.sleep(1000)
        assert peer.times == [] and pair.status.state == "paused" and pair.child_state() == "paused"
        pair.root.resume("pair")
        pair.root.inbox("pair").send_nowait(Resume())
        await until(lambda: pair.status.cursor == "k1")


async def test_a_kick_wakes_an_idle_pair_at_once_and_is_answered_after_the_pull(autojump_clock: Any) -> None:
    peer = FakePeer(records=[record(1)])
    async with running_pair(peer, poll_interval=3600.0) as pair:
        await until(lambda: pair.status.cursor == "k1")
        peer.records.append(record(2))
        await trio.sleep(5)
        kicked_at = trio.current_time()
        reply: Reply[Any] = Reply()
        pair.root.inbox("pair").send_nowait(Kick(reply))
        answer = await reply.get()
        assert answer["cursor"] == "k2" and peer.times[-1] == pytest.approx(kicked_at, abs=1e-9)


async def test_a_new_mode_and_interval_apply_without_a_restart(autojump_clock: Any) -> None:
    peer = FakePeer(records=[record(1)])
    async with running_pair(peer, poll_interval=3600.0) as pair:
        await until(lambda: pair.status.cursor == "k1")
        changed_at = trio.current_time()
        pair.root.inbox("pair").send_nowait(ConfigChanged("polling", 2.0))
        await until(lambda: len(peer.times) >= 4)
        assert peer.times[1:4] == pytest.approx([changed_at, changed_at + 2, changed_at + 4], abs=1e-9)


@pytest.mark.parametrize(
    ("trouble", "code"),
    [
        ("hang", "RECONCILE_TIMEOUT"),
        (Unavailable("the writer is restarting", code="STORE_UNAVAILABLE"), "STORE_UNAVAILABLE"),
    ],
)
async def test_a_local_failure_marks_the_pair_failing_with_its_code(
    autojump_clock: Any, trouble: Any, code: str
) -> None:
    peer = FakePeer(records=[record(1)])
    reconciler_trouble = trouble

    async with running_pair(peer) as pair:
        if reconciler_trouble == "hang":
            pair.reconciler.hang = True
        else:
            pair.reconciler.fail.append(reconciler_trouble)
        await until(lambda: pair.status.state == "failing")
        assert pair.status.last_error is not None and pair.status.last_error.code == code
        assert pair.child_state() == "running"  # the incarnation did not crash
        pair.reconciler.hang = False
        await until(lambda: pair.status.cursor == "k1")
        assert pair.status.state == "running"


async def test_failing_is_logged_once_per_transition_and_recovery_once(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    peer = FakePeer(records=[record(1)], failures=[refused] * 4)
    with caplog.at_level(logging.INFO, logger="spl.pair"):
        async with running_pair(peer) as pair:
            await until(lambda: pair.status.cursor == "k1")
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "spl.pair"]
    warnings = [m for level, m in lines if level == logging.WARNING]
    infos = [m for level, m in lines if level == logging.INFO]
    assert len(warnings) == 1 and "failing" in warnings[0] and "CONNECT_REFUSED" in warnings[0]
    assert len(infos) == 1 and "recovered" in infos[0]


async def test_continuous_catches_up_then_streams_and_a_peer_shutdown_is_its_own_code(autojump_clock: Any) -> None:
    peer = FakePeer(records=[record(1), record(2)])
    async with running_pair(peer, mode="continuous") as pair:
        await until(lambda: len(peer.streams) == 1)
        assert pair.status.cursor == "k2"
        await peer.streams[0].send(frame(3) + frame(4))
        await until(lambda: pair.status.cursor == "k4")
        # the page was verified ahead of its commit; the stream batch is verified with it, by the reconciler
        assert pair.reconciler.committed_verified == ["k2"] and pair.reconciler.committed[-1] == (2, "k4")
        await peer.streams[0].send(b'event: server_shutdown\ndata: {"retry_after_ms":200}\n\n')
        await until(lambda: pair.status.state == "failing")
        assert pair.status.last_error is not None and pair.status.last_error.code == "PEER_SHUTTING_DOWN"
        peer.records += [record(3), record(4), record(5)]
        await until(lambda: len(peer.streams) == 2)  # back after its backoff: pages from k4, then the feed
        assert pair.status.cursor == "k5" and pair.status.state == "running"
