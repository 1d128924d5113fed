"""One federation sync pair: the trio driver of :class:`spl.core.pair_machine.PairMachine`.

The machine decides (page or stream, when to retry, when the pair is failing or stalled); this
module carries out its commands — HTTP through the :class:`PeerLink` it is handed, commits
through the reconciler, timers on trio's clock — and turns every outcome into an event.

Every event reaches the machine through the pair's supervised inbox, outcomes of its own I/O
included (each I/O task posts its result there). So the supervisor's pause gate holds all of
them: a paused pair is alive, shown ``paused`` in the supervision tree, and does nothing until
the gate opens; what was in flight waits in the inbox. Results carry the incarnation and
operation that produced them, and the driver drops those of operations it cancelled.

Every page goes through the reconciler, which commits records and cursor together — so a
crash can neither skip nor double-apply a record. A page may only hold records of the pair's
thread (others are refused before verification, reserved threads above all).

A fetched page is screened and starts verifying at once, in the background, while the page
before it may still be committing (the machine fetches one page ahead); its commit waits for
that verification and then only hands the verified records over. Catching up, the fetch and
verification of page N+1 overlap the commit of page N, and both cores work.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from spl.actors.loop import next_message
from spl.actors.messages import Kick, Reply, Resume
from spl.actors.reconciler import ReconcilerClient, ReconcileResult, VerifiedPage, summarise_refusals
from spl.core.errors import SplError
from spl.core.feed import ChangesPage, PeerError
from spl.core.pair_machine import (
    AckBatches,
    AnswerWaiters,
    CloseStream,
    Command,
    ConfigChanged,
    Event,
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
)
from spl.core.pairs import PairConfig, PairStatus
from spl.core.stored import StoredRecord
from spl.core.syncstats import source_times
from spl.core.verify import Refusal, screen_pulled
from spl.runtime.supervisor import ChildContext

__all__ = ["PairActor", "PairDeps", "PeerLink"]

log = logging.getLogger("spl.pair")

RECONCILE_TIMEOUT = 120.0
STREAM_BATCHES = 16  # stream batches read ahead of the commits
VERIFIED_AHEAD = 2  # pages verified ahead and not yet committed (the machine holds at most one fetched page)


class PeerLink(Protocol):
    """One peer, as a pair needs it (``transport.peer.PeerClient``; a fake in tests). Failures raise PeerError."""

    async def fetch_changes(
        self, feed: dict[str, str], cursor: str, *, token: str | None, limit: int
    ) -> ChangesPage: ...

    async def stream_changes(
        self,
        feed: dict[str, str],
        cursor: str,
        *,
        token: str | None,
        on_events: Callable[[list[tuple[str, dict[str, Any]]]], Any],
        on_open: Callable[[], None],
    ) -> None: ...

    async def verify(self, expected_did: str) -> None: ...


@dataclass(frozen=True)
class _Outcome:
    """An I/O result posted to the pair's own inbox: ``owner`` and ``op`` say whether it is still wanted.

    ``op`` None: a timer (the machine tells its timers apart). ``final`` False: one of several events of a
    live operation (a stream's batches), which stays live after it.
    """

    owner: object
    op: int | None
    event: Event
    final: bool = True


@dataclass
class _Ahead:
    """A fetched page, screened, verifying in the background; ``records`` is the very list the machine holds."""

    records: list[dict[str, Any]]
    kept: list[Any]  # what screening let through to verification
    screened: list[Refusal]
    done: trio.Event = field(default_factory=trio.Event)
    page: VerifiedPage | None = None  # set when verification succeeded


@dataclass
class PairDeps:
    reconciler: ReconcilerClient
    peer: PeerLink
    token: Callable[[str], str | None]
    inbox: Callable[[], trio.MemorySendChannel[object]]  # the pair's supervised inbox (outcomes go through it)
    on_committed: Callable[[str, list[StoredRecord], dict[str, float]], None] = lambda pair_id, records, times: None
    on_error: Callable[[str], None] = lambda pair_id: None
    verify_peer: bool = True  # False only for tests whose fake peer has no manifest
    wall: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)


class PairActor:
    def __init__(self, config: PairConfig, status: PairStatus, deps: PairDeps) -> None:
        self.config = config
        self.status = status
        self.deps = deps
        self.machine: PairMachine | None = None
        self._waiters: list[Reply[Any]] = []
        self._owner: object = object()
        self._ops = 0
        self._live: dict[int, trio.CancelScope] = {}
        self._timer: trio.CancelScope | None = None
        self._stream: tuple[int, trio.CancelScope, trio.Semaphore] | None = None
        self._nursery: trio.Nursery | None = None
        self._send: trio.MemorySendChannel[object] | None = None
        self._ahead: dict[int, _Ahead] = {}  # id(records) → that page, verified

    # -- the loop -----------------------------------------------------------------------

    async def run(self, ctx: ChildContext) -> None:
        self._owner = object()  # outcomes of an earlier incarnation still queued are not ours
        self._live.clear()
        self._stream = None
        self._ahead.clear()
        self._send = self.deps.inbox()
        machine = self.machine = PairMachine(
            self.config, self.status, rng=self.deps.rng, verify_peer=self.deps.verify_peer
        )
        ctx.started()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._execute(machine.start(now=trio.current_time(), wall=self.deps.wall()))
            while True:
                message = await next_message(ctx)
                if message is None:
                    break  # graceful stop: what is in flight is cancelled; commits are atomic
                event = self._event(message)
                if event is not None:
                    errors = self.status.errors_total
                    self._execute(machine.handle(event, now=trio.current_time(), wall=self.deps.wall()))
                    if self.status.errors_total > errors:
                        self.deps.on_error(self.config.pair_id)  # every failure counts in the error figures
            nursery.cancel_scope.cancel()
        self._answer_waiters()

    def _event(self, message: object) -> Event | None:
        match message:
            case _Outcome(owner=owner, op=op, event=event, final=final):
                if owner is not self._owner:
                    return None  # from an earlier incarnation
                if op is not None:
                    live = self._live.pop(op, None) if final else self._live.get(op)
                    if live is None:
                        return None  # cancelled or superseded
                return event
            case Kick(reply=reply):
                if reply is not None:
                    self._waiters.append(reply)
                return Kicked()
            case Resume():
                return Resumed()
            case ConfigChanged(mode=mode, poll_interval=interval):  # the operator changed the pair's settings
                self.config = PairConfig(**{**self.config.__dict__, "mode": mode, "poll_interval": interval})
                return message
        return None

    # -- commands -------------------------------------------------------------------------

    def _execute(self, commands: list[Command]) -> None:
        for command in commands:
            match command:
                case VerifyPeer():
                    self._spawn(self._verify)
                case FetchPage(cursor=cursor, limit=limit):
                    self._spawn(self._fetch, cursor, limit)
                case Reconcile(records=records, cursor=cursor, pending=pending):
                    self._spawn(self._reconcile, records, cursor, pending)
                case OpenStream(cursor=cursor, stream=stream):
                    self._open_stream(cursor, stream)
                case CloseStream():
                    self._close_stream()
                case AckBatches(stream=stream, count=count):
                    if self._stream is not None and self._stream[0] == stream:
                        for _ in range(count):
                            self._stream[2].release()
                case SleepUntil(at=at, timer=timer):
                    self._sleep(at, timer)
                case AnswerWaiters():
                    self._answer_waiters()
                case Transition(state=state, code=code, detail=detail):
                    self._log(state, code, detail)

    def _spawn(self, work: Callable[..., Any], *args: Any) -> int:
        assert self._nursery is not None
        self._ops += 1
        op = self._ops
        scope = trio.CancelScope()
        self._live[op] = scope
        self._nursery.start_soon(self._perform, op, scope, work, *args)
        return op

    async def _perform(self, op: int, scope: trio.CancelScope, work: Callable[..., Any], *args: Any) -> None:
        with scope:
            event = await work(op, *args)
            await self._post(op, event)

    async def _post(self, op: int | None, event: Event, *, final: bool = True) -> None:
        assert self._send is not None
        try:
            await self._send.send(_Outcome(self._owner, op, event, final))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # the pair was removed while this ran

    def _log(self, state: str, code: str, detail: str) -> None:
        pair = self.config.pair_id
        if state == "running":
            log.info("pair %s recovered: running again (%s)", pair, detail)
        else:
            log.warning("pair %s is %s: %s %s", pair, state, code, detail)

    # -- I/O ------------------------------------------------------------------------------

    async def _verify(self, op: int) -> Event:
        try:
            await self.deps.peer.verify(self.config.peer_did)
        except PeerError as error:
            return PeerFailed(error)
        return PeerVerified()

    async def _fetch(self, op: int, cursor: str, limit: int) -> Event:
        self.status.last_attempt_at = self.deps.wall()
        try:
            page = await self.deps.peer.fetch_changes(
                self.config.feed_params(), cursor, token=self.deps.token(self.config.pair_id), limit=limit
            )
        except PeerError as error:
            return PeerFailed(error)
        if page.records:
            self._verify_ahead(page.records)
        return PageFetched(page)

    def _verify_ahead(self, records: list[dict[str, Any]]) -> None:
        """Screen a fetched page and start verifying it in the background; :meth:`_reconcile` picks the result up."""
        assert self._nursery is not None
        kept, screened = screen_pulled(records, self.config.thread_id, self.config.accept_namespaces)
        ahead = _Ahead(records, kept, screened)
        while len(self._ahead) >= VERIFIED_AHEAD:  # pages the machine dropped (a failure) are never committed
            del self._ahead[next(iter(self._ahead))]
        self._ahead[id(records)] = ahead
        self._nursery.start_soon(self._verify_page, ahead)

    async def _verify_page(self, ahead: _Ahead) -> None:
        try:
            ahead.page = await self.deps.reconciler.verify(ahead.kept)
        except Exception:  # a bug in verification: the commit verifies again, and fails there as it always did
            log.exception("pair %s: verifying a page ahead of its commit failed", self.config.pair_id)
        finally:
            ahead.done.set()

    async def _reconcile(self, op: int, records: list[dict[str, Any]], cursor: str, pending: int) -> Event:
        ahead = self._ahead.pop(id(records), None)
        if ahead is None or ahead.records is not records:  # a stream batch: the reconciler verifies it
            kept, screened = screen_pulled(records, self.config.thread_id, self.config.accept_namespaces)
            ahead = _Ahead(records, kept, screened)
            ahead.done.set()
        if ahead.screened:
            log.warning("pair %s: %s", self.config.pair_id, summarise_refusals(ahead.screened))
        try:
            with trio.fail_after(RECONCILE_TIMEOUT):
                await ahead.done.wait()
                result = await self._commit(ahead, cursor)
        except trio.TooSlowError:
            return LocalFailure(
                "RECONCILE_TIMEOUT",
                f"this daemon did not commit a pulled page within {RECONCILE_TIMEOUT:.0f} s (overloaded?)",
            )
        except SplError as error:  # the writer or the reconciler is restarting or shutting down
            return LocalFailure(error.code, f"this daemon could not commit a pulled page: {error.message}")
        if result.stored:
            self.deps.on_committed(self.config.pair_id, result.stored, source_times(records))
        return Reconciled(
            stored=len(result.stored),
            duplicates=result.duplicates,
            refused=tuple(refusal.code for refusal in [*ahead.screened, *result.refusals]),
            cursor=cursor,
            pending=pending,
        )

    async def _commit(self, ahead: _Ahead, cursor: str) -> ReconcileResult:
        """Commit what verification let through, or have the reconciler verify and commit it if it was not verified
        ahead (a stream batch, or a failed verification); the pair's cursor moves with it."""
        if ahead.page is not None:
            return await self.deps.reconciler.commit(self.config.pair_id, ahead.page, cursor)
        return await self.deps.reconciler.reconcile(self.config.pair_id, ahead.kept, cursor)

    def _open_stream(self, cursor: str, stream: int) -> None:
        self._close_stream()
        credits = trio.Semaphore(STREAM_BATCHES)
        op = self._spawn(self._follow, cursor, stream, credits)
        self._stream = (stream, self._live[op], credits)

    def _close_stream(self) -> None:
        if self._stream is None:
            return
        scope = self._stream[1]
        scope.cancel()
        for op, live in list(self._live.items()):
            if live is scope:
                del self._live[op]
        self._stream = None

    async def _follow(self, op: int, cursor: str, stream: int, credits: trio.Semaphore) -> Event:
        """Stream the peer's feed; each batch (a heartbeat too) waits for a credit the machine gives back."""
        opened: list[bool] = []

        async def on_events(batch: list[tuple[str, dict[str, Any]]]) -> None:
            await credits.acquire()
            if opened:
                opened.clear()
                await self._post(op, StreamOpened(stream), final=False)
            await self._post(op, StreamBatch(stream, batch), final=False)

        try:
            await self.deps.peer.stream_changes(
                self.config.feed_params(),
                cursor,
                token=self.deps.token(self.config.pair_id),
                on_events=on_events,
                on_open=lambda: opened.append(True),
            )
        except PeerError as error:
            return PeerFailed(error)
        raise AssertionError("stream_changes returned instead of raising")  # its contract: it never returns

    def _sleep(self, at: float | None, timer: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if at is None:
            return
        assert self._nursery is not None
        scope = self._timer = trio.CancelScope()

        async def fire() -> None:
            with scope:
                await trio.sleep_until(at)
                await self._post(None, TimerFired(timer))

        self._nursery.start_soon(fire)

    def _answer_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for reply in waiters:
            reply.set(self.status.to_wire(self.deps.wall()))
