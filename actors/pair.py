"""One federation sync pair: pull one thread from one peer, forever, through outages.

Modes (spec §8.4, §15.16): ``polling`` (pull to the peer's head every ``poll_interval``),
``continuous`` (catch up by pages, then follow the peer's SSE feed; when the stream
breaks, fall back to polling with backoff until it can be reopened), ``on-demand``
(only when kicked). Failures back off exponentially with jitter, capped at 5 minutes,
reset on success; ``Kick`` wakes the pair at once. Pause keeps the cursor; resume goes
on from it. Every page goes through the reconciler, which commits records and cursor
together — so a crash can neither skip nor double-apply a record.

The peer is hostile until proven otherwise: before the first pull, after every failure
and at least hourly, the pair checks the peer's signed manifest names the pair's peer DID
(``PEER_DID_MISMATCH`` otherwise); a page may only hold records of the pair's thread
(others are refused before verification, reserved threads above all); the peer's cursor
is opaque and stored as given.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from spl.actors.loop import next_message
from spl.actors.messages import Kick, Pause, Resume
from spl.actors.reconciler import ReconcilerClient, ReconcileResult
from spl.core.pairs import PairConfig, PairError, PairStatus
from spl.core.stored import StoredRecord
from spl.core.verify import screen_pulled
from spl.runtime.backoff import Backoff
from spl.runtime.supervisor import ChildContext
from spl.transport.peer import ChangesPage, PeerError, StreamLagged, fetch_changes, stream_changes

__all__ = ["PairActor", "PairDeps", "pair_backoff"]

log = logging.getLogger("spl.pair")

RECONCILE_TIMEOUT = 120.0
PAGE_LIMIT = 1000
STREAM_BATCHES = 16  # chunks read ahead of the applier
STREAM_COALESCE = 2000  # records per reconcile at most
REVERIFY_PEER_EVERY = 3600.0  # seconds between manifest checks of a healthy peer
MAX_LAGGED_IN_A_ROW = 3  # a feed that ends as lagged this often without a record is a failure


def pair_backoff(rng: random.Random) -> Backoff:
    """1 s, 2 s, 4 s … capped at 300 s, ±20 % jitter, reset on success."""
    return Backoff(base=1.0, factor=2.0, cap=300.0, jitter=0.2, reset_after=300.0, rng=rng)


@dataclass
class PairDeps:
    reconciler: ReconcilerClient
    http: httpx.AsyncClient  # pages: short requests
    streams: httpx.AsyncClient  # continuous feeds: long-lived, kept apart from the pool of short ones
    token: Callable[[str], str | None]
    on_committed: Callable[[str, list[StoredRecord], dict[str, float]], None] = lambda pair_id, records, times: None
    on_error: Callable[[str], None] = lambda pair_id: None
    # Checks the peer is who the pair says (its signed manifest names config.peer_did);
    # raises PeerError. None skips the check (actor tests whose fake peer has no manifest).
    verify_peer: Callable[[PairConfig], Awaitable[None]] | None = None
    wall: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)


class PairActor:
    def __init__(self, config: PairConfig, status: PairStatus, deps: PairDeps) -> None:
        self.config = config
        self.status = status
        self.deps = deps
        self.paused = config.paused
        self._backoff = pair_backoff(deps.rng)
        self._waiters: list[Any] = []
        self._peer_verified_at: float | None = None  # trio time of the last good manifest check
        self._lagged_in_a_row = 0  # continuous feeds ended as lagged with no record in between

    # -- the loop -----------------------------------------------------------------------

    async def run(self, ctx: ChildContext) -> None:
        ctx.started()
        if self.paused:
            self.status.paused(self.deps.wall())
        idle_first = self.config.mode == "on-demand"
        while not ctx.stop_requested.is_set():
            if self.paused:
                message = await next_message(ctx)
                if message is not None:
                    self._handle(message)
                continue
            if idle_first:  # on-demand: nothing until the first kick
                idle_first = False
                await self._wait(ctx, None)
                continue
            delay: float | None
            try:
                await self._check_peer()
                if self.config.mode == "continuous":
                    await self.pull_to_head(ctx)
                    if self.paused or ctx.stop_requested.is_set():
                        continue
                    try:
                        await self._follow(ctx)  # returns only when paused; failures raise
                    except StreamLagged:
                        # Fell behind the peer's buffer: catch up by pages, reopen, no backoff —
                        # unless the peer keeps saying so without sending anything (a loop it drives).
                        self._lagged_in_a_row += 1
                        if self._lagged_in_a_row >= MAX_LAGGED_IN_A_ROW:
                            self._lagged_in_a_row = 0
                            raise PeerError(
                                "HTTP_5XX",
                                f"peer ended the continuous feed as lagged {MAX_LAGGED_IN_A_ROW} times in a row "
                                "without sending a record; backing off",
                            ) from None
                    continue
                await self.pull_to_head(ctx)
                self._backoff.reset()
                delay = self.config.poll_interval if self.config.mode == "polling" else None
            except PeerError as error:
                self._peer_verified_at = None  # the peer may come back as someone else: check again
                delay = self._backoff.next_delay()
                self.status.failed(PairError(error.code, error.message, self.deps.wall()), delay)
                self.deps.on_error(self.config.pair_id)
            self._answer_waiters()
            await self._wait(ctx, delay)

    async def _check_peer(self) -> None:
        """Verify the peer's identity before the first pull, after a failure, and hourly."""
        if self.deps.verify_peer is None:
            return
        now = trio.current_time()
        if self._peer_verified_at is not None and now - self._peer_verified_at < REVERIFY_PEER_EVERY:
            return
        await self.deps.verify_peer(self.config)
        self._peer_verified_at = now

    async def pull_to_head(self, ctx: ChildContext | None = None) -> None:
        """Pull pages until the peer has nothing more after our cursor.

        Fetching page N+1 overlaps reconciling page N (one page in flight, a bounded
        channel between the two), so a catch-up keeps both cores busy. A fetch failure
        lets the pages already fetched finish committing before it is raised.

        The peer does not decide how long a round lasts: a page with no records ends it
        (whatever ``has_more`` says), and control messages are handled between pages, so
        a pause or a stop takes effect during a long catch-up, not after it.
        """
        failure: PeerError | None = None
        send, receive = trio.open_memory_channel[ChangesPage](1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._apply_pages, receive)
            async with send:
                cursor = self.status.cursor
                try:
                    while True:
                        self.status.last_attempt_at = self.deps.wall()
                        page = await fetch_changes(
                            self.deps.http,
                            self.config.peer_url,
                            self.config.thread_id,
                            cursor,
                            token=self.deps.token(self.config.pair_id),
                            limit=PAGE_LIMIT,
                        )
                        await send.send(page)
                        if not page.has_more or not page.records or page.next_cursor == cursor:
                            break  # at the head — or a peer that claims more but gives nothing
                        cursor = page.next_cursor
                        if ctx is not None and self._control_between_pages(ctx):
                            break
                except PeerError as error:
                    failure = error
        if failure is not None:
            raise failure

    def _control_between_pages(self, ctx: ChildContext) -> bool:
        """Handle control messages queued during a catch-up; True when the round must end now."""
        while True:
            try:
                message = ctx.receive_nowait()
            except trio.WouldBlock:
                break
            self._handle(message)  # a kick mid-round has nothing to add: its waiter is answered after
        return self.paused or ctx.stop_requested.is_set()

    async def _apply_pages(self, pages: trio.MemoryReceiveChannel[ChangesPage]) -> None:
        async for page in pages:
            if page.records or page.next_cursor != self.status.cursor:
                await self._reconcile(page.records, page.next_cursor, page.pending)
            else:
                self.status.pulled(
                    cursor=self.status.cursor, stored=0, duplicates=0, pending=page.pending, now=self.deps.wall()
                )

    async def _reconcile(self, records: list[dict[str, Any]], cursor: str, pending: int) -> None:
        kept, screened = screen_pulled(records, self.config.thread_id)
        if screened:
            from spl.actors.reconciler import summarise_refusals

            log.warning("pair %s: %s", self.config.pair_id, summarise_refusals(screened))
        try:
            with trio.fail_after(RECONCILE_TIMEOUT):
                result: ReconcileResult = await self.deps.reconciler.reconcile(self.config.pair_id, kept, cursor)
        except trio.TooSlowError:
            raise PeerError(
                "TIMEOUT", f"this daemon did not commit a pulled page within {RECONCILE_TIMEOUT:.0f} s (overloaded?)"
            ) from None
        for refusal in [*screened, *result.refusals]:
            self.status.refused(refusal.code)
        now = self.deps.wall()
        self.status.pulled(
            cursor=cursor, stored=len(result.stored), duplicates=result.duplicates, pending=pending, now=now
        )
        if result.stored:
            from spl.actors.federation import source_times

            self.deps.on_committed(self.config.pair_id, result.stored, source_times(records))

    async def _follow(self, ctx: ChildContext) -> None:
        """Stream the peer's continuous feed while watching the inbox; returns when paused.

        The stream reader hands batches to an applier through a bounded channel, so reading
        the next chunk overlaps committing the previous one; when the reader stops (failure,
        pause, stop) the applier still commits what was already read.
        """
        failure: list[PeerError] = []
        send, receive = trio.open_memory_channel[list[tuple[str, dict[str, Any]]]](STREAM_BATCHES)
        async with trio.open_nursery() as outer:
            outer.start_soon(self._apply_stream, receive)
            async with send, trio.open_nursery() as nursery:

                async def stream() -> None:
                    try:
                        await stream_changes(
                            self.deps.streams,
                            self.config.peer_url,
                            self.config.thread_id,
                            self.status.cursor,
                            token=self.deps.token(self.config.pair_id),
                            on_events=send.send,
                            on_open=self._backoff.reset,
                        )
                    except PeerError as error:
                        failure.append(error)
                    nursery.cancel_scope.cancel()

                async def control() -> None:
                    while not self.paused:
                        message = await next_message(ctx)
                        if message is None:
                            break  # graceful stop
                        self._handle(message)
                        self._answer_waiters()  # live already: a kick has nothing to add
                    nursery.cancel_scope.cancel()

                nursery.start_soon(stream)
                nursery.start_soon(control)
        if failure:
            raise failure[0]

    async def _apply_stream(self, batches: trio.MemoryReceiveChannel[list[tuple[str, dict[str, Any]]]]) -> None:
        """Commit streamed records, coalescing whatever queued up into one reconcile."""
        async for batch in batches:
            events = list(batch)
            while len(events) < STREAM_COALESCE:
                try:
                    events.extend(batches.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            if events:
                self._lagged_in_a_row = 0
                await self._reconcile([record for _, record in events], events[-1][0], 0)
            else:  # heartbeat: the stream is alive and we are at its head
                self.status.pulled(cursor=self.status.cursor, stored=0, duplicates=0, pending=0, now=self.deps.wall())

    # -- control --------------------------------------------------------------------------

    async def _wait(self, ctx: ChildContext, delay: float | None) -> None:
        """Sleep until the next attempt, handling control messages; a kick ends the wait."""
        deadline = math.inf if delay is None else trio.current_time() + delay
        while not self.paused:
            if delay is not None:
                self.status.check_stall(self.config.poll_interval, self.deps.wall())
            message = await next_message(ctx, deadline=deadline)
            if message is None or self._handle(message):
                return  # time for the next attempt, a kick, or a graceful stop

    def _handle(self, message: object) -> bool:
        """Apply a control message; True when it asks for an attempt now."""
        now = self.deps.wall()
        match message:
            case Kick(reply=reply):
                if reply is not None:
                    self._waiters.append(reply)
                if not self.paused:
                    self._backoff.reset()
                    return True
                if reply is not None:
                    self._answer_waiters()
            case Pause():
                if not self.paused:
                    self.paused = True
                    self.status.paused(now)
            case Resume():
                if self.paused:
                    self.paused = False
                    self.status.resumed(now)
                    return True
        return False

    def _answer_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for reply in waiters:
            reply.set(self.status.to_wire(self.deps.wall()))
