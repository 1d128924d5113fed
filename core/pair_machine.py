"""Every decision of one sync pair, as a sans-I/O state machine: events in, commands out.

The pair's driver (``actors/pair.py``) does the I/O — HTTP through a peer client, commits through
the reconciler, timers on trio's clock — and reports each outcome here as an event;
:meth:`PairMachine.handle` answers with the commands to carry out next. Nothing in this module
waits, reads a clock or touches a socket, so its tests feed events and assert commands.

What it decides (spec §8.4, §15.16):

- **page vs stream**: ``polling`` and ``on-demand`` pull pages to the peer's head; ``continuous``
  catches up by pages, then follows the peer's SSE feed. Fetching page N+1 overlaps committing
  page N (one page fetched ahead, never more). A page with no records, or one that does not move
  the cursor, ends the round whatever ``has_more`` says, so a peer cannot keep a pair spinning.
- **coalescing**: stream batches that arrive while a commit runs are committed together, once it ends.
- **kicks**: an idle pair starts a round at once (and its backoff starts over); a kick during a round
  is answered when the round ends; a live stream has nothing to add, so it is answered at once.
- **backoff**: a failure waits 1 s, 2 s, 4 s … capped at 300 s, ±20 % jitter, reset on success.
- **stall detection**: peer ahead and the cursor idle for two poll intervals → ``stalled``.
- **verifying the peer**: before the first round, after every peer failure, and at least hourly.
- **failure classification**: a peer failure (any :class:`~spl.core.feed.PeerError`) or a local one
  (the commit timed out, the writer is unavailable) marks the pair ``failing`` with its code; the
  stream ending as lagged is no failure unless it happens three times in a row without a record.

Pause is not decided here: the supervisor's gate holds the pair's inbox, and with it every event,
while the pair is paused. A pair *created* paused starts idle and waits for :class:`Resumed`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from spl.core.feed import ChangesPage, PeerError, StreamLagged
from spl.core.pairs import MODES, PairConfig, PairError, PairStatus

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "MAX_LAGGED_IN_A_ROW",
    "PAGE_LIMIT",
    "REVERIFY_PEER_EVERY",
    "AckBatches",
    "AnswerWaiters",
    "CloseStream",
    "Command",
    "ConfigChanged",
    "Event",
    "FetchPage",
    "Kicked",
    "LocalFailure",
    "OpenStream",
    "PageFetched",
    "PairMachine",
    "PeerFailed",
    "PeerVerified",
    "Reconcile",
    "Reconciled",
    "Resumed",
    "SleepUntil",
    "StreamBatch",
    "StreamOpened",
    "TimerFired",
    "Transition",
    "VerifyPeer",
    "retry_delay",
]

PAGE_LIMIT = 1000
REVERIFY_PEER_EVERY = 3600.0  # seconds between manifest checks of a healthy peer
MAX_LAGGED_IN_A_ROW = 3  # a feed that ends as lagged this often without a record is a failure
BACKOFF_BASE, BACKOFF_FACTOR, BACKOFF_CAP, BACKOFF_JITTER = 1.0, 2.0, 300.0, 0.2


def retry_delay(attempt: int, rng: random.Random) -> float:
    """Seconds before retry ``attempt`` (0-based): ``min(300, 2**attempt)`` ±20 %, never above 300.

    One ``rng.uniform`` per call, the schedule of :class:`spl.runtime.backoff.Backoff` with
    ``base=1, factor=2, cap=300, jitter=0.2``, so a seeded generator gives a repeatable schedule.
    """
    try:
        raw = min(BACKOFF_CAP, BACKOFF_BASE * BACKOFF_FACTOR**attempt)
    except OverflowError:
        raw = BACKOFF_CAP
    delay = raw * (1 + rng.uniform(-BACKOFF_JITTER, BACKOFF_JITTER))
    return min(BACKOFF_CAP, max(0.0, delay))


# -- events (what happened) --------------------------------------------------------------------------


@dataclass(frozen=True)
class Kicked:
    """An operator asked for a pull now (``spl fleet sync pull``)."""


@dataclass(frozen=True)
class Resumed:
    """The operator resumed the pair (its gate is open again)."""


@dataclass(frozen=True)
class ConfigChanged:
    mode: str
    poll_interval: float


@dataclass(frozen=True)
class TimerFired:
    timer: int  # the ``SleepUntil.timer`` it answers; an older timer is ignored


@dataclass(frozen=True)
class PeerVerified:
    pass


@dataclass(frozen=True)
class PageFetched:
    page: ChangesPage


@dataclass(frozen=True)
class Reconciled:
    """A ``Reconcile`` committed: counts, refusal codes, and the cursor it moved the pair to."""

    stored: int
    duplicates: int
    refused: tuple[str, ...]
    cursor: str
    pending: int


@dataclass(frozen=True)
class StreamOpened:
    stream: int


@dataclass(frozen=True)
class StreamBatch:
    """Records read from stream ``stream`` as ``(cursor after it, record)``; empty for a heartbeat."""

    stream: int
    events: list[tuple[str, dict[str, Any]]]


@dataclass(frozen=True)
class PeerFailed:
    """A fetch, the stream or the manifest check ended in this peer error."""

    error: PeerError


@dataclass(frozen=True)
class LocalFailure:
    """Our side failed the pair (the commit timed out, the writer is unavailable): ``code`` says which."""

    code: str
    message: str


Event = (
    Kicked
    | Resumed
    | ConfigChanged
    | TimerFired
    | PeerVerified
    | PageFetched
    | Reconciled
    | StreamOpened
    | StreamBatch
    | PeerFailed
    | LocalFailure
)


# -- commands (what to do) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyPeer:
    """Check the peer's signed manifest names the pair's peer DID; answer PeerVerified or PeerFailed."""


@dataclass(frozen=True)
class FetchPage:
    cursor: str
    limit: int = PAGE_LIMIT


@dataclass(frozen=True)
class Reconcile:
    """Verify and commit ``records`` with the cursor; answer Reconciled or LocalFailure."""

    records: list[dict[str, Any]]
    cursor: str
    pending: int


@dataclass(frozen=True)
class OpenStream:
    cursor: str
    stream: int  # tags the stream's events, so those of an older stream can be told apart


@dataclass(frozen=True)
class CloseStream:
    pass


@dataclass(frozen=True)
class AckBatches:
    """``count`` batches of stream ``stream`` are dealt with: let its reader read that many more."""

    stream: int
    count: int


@dataclass(frozen=True)
class SleepUntil:
    """Fire ``TimerFired(timer)`` at ``at`` (the driver's clock); None: no timer, wait for a kick."""

    at: float | None
    timer: int


@dataclass(frozen=True)
class AnswerWaiters:
    """Answer the kicks waiting for this round (with the pair's status)."""


@dataclass(frozen=True)
class Transition:
    """The pair entered ``failing`` or ``stalled``, or recovered to ``running`` (once per change: log it)."""

    state: str
    code: str
    detail: str


Command = (
    VerifyPeer | FetchPage | Reconcile | OpenStream | CloseStream | AckBatches | SleepUntil | AnswerWaiters | Transition
)


# -- the machine -------------------------------------------------------------------------------------


@dataclass
class _Round:
    """One round of pages: what is in flight and what waits."""

    next_cursor: str
    fetching: bool = False
    at_head: bool = False
    waiting: ChangesPage | None = None  # fetched while the previous page was committing


@dataclass
class PairMachine:
    """The decisions of one pair. ``status`` is updated in place (it is the pair's public state).

    Call :meth:`start` once, then :meth:`handle` for every event; ``now`` is the driver's monotonic
    clock (timers) and ``wall`` the wall clock (figures shown to operators).
    """

    config: PairConfig
    status: PairStatus
    rng: random.Random = field(default_factory=random.Random)
    verify_peer: bool = True
    phase: str = "new"  # new | paused | verifying | paging | streaming | draining | idle
    attempt: int = 0
    verified_at: float | None = None
    lagged_in_a_row: int = 0
    timer: int = 0
    stream: int = 0
    committing: bool = False
    failure: tuple[str, str, bool] | None = None  # (code, message, from the peer) once the in-flight work is done
    _round: _Round | None = None
    _stream_open: bool = False
    _stream_buffer: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _stream_batches: int = 0  # batches in the buffer
    _committing_batches: int = 0  # batches in the commit in flight
    _out: list[Command] = field(default_factory=list)

    # -- entry points ----------------------------------------------------------------------------

    def start(self, *, now: float, wall: float) -> list[Command]:
        if self.config.paused:
            self.phase = "paused"
            self.status.paused(wall)
            return []
        return self._run(self._begin, now, wall)

    def handle(self, event: Event, *, now: float, wall: float) -> list[Command]:
        return self._run(lambda n, w: self._dispatch(event, n, w), now, wall)

    def _run(self, step: Any, now: float, wall: float) -> list[Command]:
        before = (self.status.state, self.status.stalled)
        self._out = []
        step(now, wall)
        self._note_transitions(before)
        out, self._out = self._out, []
        return out

    def _dispatch(self, event: Event, now: float, wall: float) -> None:
        match event:
            case Kicked():
                self._kicked(now, wall)
            case Resumed():
                if self.phase in ("paused", "new"):
                    self._begin(now, wall)
                elif self.phase == "idle":
                    self._start_round(now, wall)
            case ConfigChanged(mode=mode, poll_interval=interval):
                self._reconfigure(mode, interval, now, wall)
            case TimerFired(timer=timer):
                if timer == self.timer and self.phase == "idle":
                    self._start_round(now, wall)
            case PeerVerified():
                if self.phase == "verifying":
                    self.verified_at = now
                    self._start_paging()
            case PageFetched(page=page):
                self._page_fetched(page, now, wall)
            case Reconciled():
                self._reconciled(event, now, wall)
            case StreamOpened(stream=stream):
                if stream == self.stream and self.phase == "streaming":
                    self.attempt = 0
            case StreamBatch(stream=stream, events=events):
                self._stream_batch(stream, events, wall)
            case PeerFailed(error=error):
                self._peer_failed(error, now, wall)
            case LocalFailure(code=code, message=message):
                self._local_failure(code, message, now, wall)

    # -- rounds ------------------------------------------------------------------------------------

    def _begin(self, now: float, wall: float) -> None:
        if self.config.mode == "on-demand":
            self._sleep(None)  # nothing until the first kick
        else:
            self._start_round(now, wall)

    def _start_round(self, now: float, wall: float) -> None:
        self.failure = None
        if self.verify_peer and (self.verified_at is None or now - self.verified_at >= REVERIFY_PEER_EVERY):
            self.phase = "verifying"
            self._out.append(VerifyPeer())
        else:
            self._start_paging()

    def _start_paging(self) -> None:
        self.phase = "paging"
        self._round = _Round(next_cursor=self.status.cursor)
        self._fetch()

    def _fetch(self) -> None:
        assert self._round is not None
        self._round.fetching = True
        self._out.append(FetchPage(self._round.next_cursor))

    def _page_fetched(self, page: ChangesPage, now: float, wall: float) -> None:
        current = self._round
        if self.phase != "paging" or current is None or not current.fetching:
            return
        current.fetching = False
        current.at_head = not page.has_more or not page.records or page.next_cursor == current.next_cursor
        current.next_cursor = page.next_cursor
        current.waiting = page
        self._continue_round(now, wall)

    def _apply_page(self, page: ChangesPage, wall: float) -> None:
        if page.records or page.next_cursor != self.status.cursor:
            self.committing = True
            self._out.append(Reconcile(page.records, page.next_cursor, page.pending))
        else:  # nothing new: the peer is where we are
            self.status.pulled(cursor=self.status.cursor, stored=0, duplicates=0, pending=page.pending, now=wall)

    def _continue_round(self, now: float, wall: float) -> None:
        """After a fetch or a commit: commit what waits, fetch on, or end the round once nothing is in flight."""
        current = self._round
        assert current is not None
        if self.failure is not None:
            current.waiting = None  # never committed past a failure: refetched next round
            if not current.fetching and not self.committing:
                self._fail(*self.failure, now, wall)
            return
        if current.waiting is not None and not self.committing:
            page, current.waiting = current.waiting, None
            self._apply_page(page, wall)
        if not current.at_head and not current.fetching and current.waiting is None:
            self._fetch()
        elif current.at_head and not current.fetching and not self.committing and current.waiting is None:
            self._round_done(now, wall)

    def _round_done(self, now: float, wall: float) -> None:
        self._round = None
        self.attempt = 0
        self._out.append(AnswerWaiters())
        if self.config.mode == "continuous":
            self.phase = "streaming"
            self.stream += 1
            self._stream_open = True
            self._out.append(OpenStream(self.status.cursor, self.stream))
            return
        self._sleep_after(None if self.config.mode == "on-demand" else now + self.config.poll_interval, wall)

    def _sleep(self, at: float | None) -> None:
        self.phase = "idle"
        self.timer += 1
        self._out.append(SleepUntil(at, self.timer))

    def _sleep_after(self, at: float | None, wall: float) -> None:
        if at is not None:
            self.status.check_stall(self.config.poll_interval, wall)
        self._sleep(at)

    # -- the stream --------------------------------------------------------------------------------

    def _stream_batch(self, stream: int, events: list[tuple[str, dict[str, Any]]], wall: float) -> None:
        if stream != self.stream or not self._stream_open:
            return
        if not events:  # heartbeat: alive and at its head
            self._out.append(AckBatches(stream, 1))
            if not self.committing and not self._stream_buffer:
                self.status.pulled(cursor=self.status.cursor, stored=0, duplicates=0, pending=0, now=wall)
            return
        self.lagged_in_a_row = 0
        self._stream_buffer.extend(events)
        self._stream_batches += 1
        if not self.committing:
            self._flush_stream()

    def _flush_stream(self) -> None:
        """Commit every batch read so far in one go (they queued while the previous commit ran)."""
        events, self._stream_buffer = self._stream_buffer, []
        self._committing_batches, self._stream_batches = self._stream_batches, 0
        self.committing = True
        self._out.append(Reconcile([record for _, record in events], events[-1][0], 0))

    def _end_stream(self) -> None:
        """The stream is over (or must be): records read but not committed are read again from the cursor."""
        if self._stream_open:
            self._out.append(CloseStream())
        self._stream_open = False
        self.stream += 1  # whatever the old stream still delivers is ignored
        self._stream_buffer, self._stream_batches, self._committing_batches = [], 0, 0

    def _reconciled(self, result: Reconciled, now: float, wall: float) -> None:
        if not self.committing:
            return
        self.committing = False
        for code in result.refused:
            self.status.refused(code)
        self.status.pulled(
            cursor=result.cursor, stored=result.stored, duplicates=result.duplicates, pending=result.pending, now=wall
        )
        if self.phase == "paging" and self._round is not None:
            self._continue_round(now, wall)
        elif self.phase == "streaming":
            if self._committing_batches:
                self._out.append(AckBatches(self.stream, self._committing_batches))
                self._committing_batches = 0
            if self._stream_buffer:
                self._flush_stream()
        elif self.phase == "draining":  # the stream ended while this commit ran: now decide
            self._after_stream(now, wall)

    # -- failures ----------------------------------------------------------------------------------

    def _peer_failed(self, error: PeerError, now: float, wall: float) -> None:
        if self.phase == "verifying":
            self._fail(error.code, error.message, True, now, wall)
        elif self.phase == "paging" and self._round is not None and self._round.fetching:
            self._round.fetching = False
            self.failure = (error.code, error.message, True)
            self._continue_round(now, wall)
        elif self.phase == "streaming":
            if isinstance(error, StreamLagged):
                # Fell behind the peer's buffer: catch up by pages, reopen, no backoff — unless the
                # peer keeps saying so without sending anything (a loop it drives).
                self.lagged_in_a_row += 1
                if self.lagged_in_a_row >= MAX_LAGGED_IN_A_ROW:
                    self.lagged_in_a_row = 0
                    self.failure = (
                        "HTTP_5XX",
                        f"peer ended the continuous feed as lagged {MAX_LAGGED_IN_A_ROW} times in a row without "
                        "sending a record; backing off",
                        True,
                    )
            else:
                self.failure = (error.code, error.message, True)
            self._stream_open = False  # it ended by itself: nothing to close
            self._end_stream()
            self.phase = "draining"
            if not self.committing:
                self._after_stream(now, wall)

    def _after_stream(self, now: float, wall: float) -> None:
        """The stream ended and no commit is in flight: back off after a failure, else catch up by pages."""
        if self.failure is not None:
            self._fail(*self.failure, now, wall)
        elif self.config.mode == "continuous":
            self._start_paging()
        else:  # the mode changed away from continuous
            self._begin(now, wall)

    def _local_failure(self, code: str, message: str, now: float, wall: float) -> None:
        """Our side failed a commit: the peer is fine (no re-verification), the pair backs off all the same."""
        self.committing = False
        if self.phase == "paging" and self._round is not None:
            self.failure = (code, message, False)
            self._continue_round(now, wall)
        elif self.phase in ("streaming", "draining"):
            self._end_stream()
            self._fail(code, message, False, now, wall)

    def _fail(self, code: str, message: str, from_peer: bool, now: float, wall: float) -> None:
        """Back off: the pair is ``failing`` with ``code`` until a round succeeds."""
        self.failure = None
        self._round = None
        self._end_stream()
        if from_peer:
            self.verified_at = None  # the peer may come back as someone else: check again
        delay = retry_delay(self.attempt, self.rng)
        self.attempt += 1
        self.status.failed(PairError(code, message, wall), delay)
        self._out.append(AnswerWaiters())
        self._sleep(now + delay)

    # -- operator events -------------------------------------------------------------------------

    def _kicked(self, now: float, wall: float) -> None:
        if self.phase == "idle":
            self.attempt = 0
            self._start_round(now, wall)
        elif self.phase in ("streaming", "paused"):
            self._out.append(AnswerWaiters())  # live already, or paused: a kick has nothing to add

    def _reconfigure(self, mode: str, interval: float, now: float, wall: float) -> None:
        """A new mode or interval applies at once to an idle pair, at the end of the round to a busy one."""
        if mode not in MODES:
            return
        self.config = PairConfig(**{**self.config.__dict__, "mode": mode, "poll_interval": interval})
        if self.phase == "streaming" and mode != "continuous":
            self._end_stream()
            self.phase = "draining"
            if not self.committing:
                self._after_stream(now, wall)
        elif self.phase == "idle":
            self._begin(now, wall)  # a round now under the new settings (on-demand: wait for a kick)

    # -- logging -----------------------------------------------------------------------------------

    def _note_transitions(self, before: tuple[str, bool]) -> None:
        state, stalled = before
        status = self.status
        if status.state == "failing" and state != "failing":
            error = status.last_error
            self._out.append(
                Transition("failing", error.code if error else "UNKNOWN", error.message if error else status.reason)
            )
        elif status.stalled and not stalled:
            self._out.append(Transition("stalled", "STALLED", status.reason))
        elif status.state == "running" and (state == "failing" or (stalled and not status.stalled)):
            self._out.append(Transition("running", "RECOVERED", status.reason))
