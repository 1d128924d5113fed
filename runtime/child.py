"""Children of a supervisor: how one is described, and what one incarnation of it sees.

A child is described once (``ChildSpec``) and started many times. Every start is an *incarnation* with its own
``ChildContext``. What has to outlive a restart belongs to the supervisor, not to the incarnation
(design/runtime.md, "Supervisor semantics"):

- the inbox, a bounded trio memory channel: senders keep the same send side across restarts, and messages
  queued while the child restarts are read by the next incarnation;
- the pause gate in front of the inbox: while paused the child stays alive, messages queue, nothing is lost.

``Mailbox`` holds both; each ``ChildContext`` reads through it.

A child is *essential* (the default) when its supervisor cannot do its job without it: going over the restart
intensity then makes the supervisor give up. A non-essential child (``essential=False``) has a restart window of its
own; going over it leaves just that child down (``LeftDown``) while its siblings keep running.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from spl.runtime.backoff import Backoff
    from spl.runtime.supervisor import Supervisor


class Restart(enum.StrEnum):
    """When a child is started again after its incarnation ended (the OTP words)."""

    PERMANENT = "permanent"  # always: after a crash and after a normal return
    TRANSIENT = "transient"  # only after a crash
    TEMPORARY = "temporary"  # never

    def wants_restart(self, crashed: bool) -> bool:
        """Return whether an incarnation that ended this way is restarted under this policy."""
        return self is Restart.PERMANENT or (self is Restart.TRANSIENT and crashed)


@dataclass(frozen=True)
class ChildSpec:
    """How to start a child, and what the supervisor does when it ends.

    Attributes:
        id: Unique among the supervisor's children.
        start: Called once per incarnation. It calls ``ctx.started()`` when ready, and returns (or raises) when
            the incarnation is over.
        restart: The restart policy.
        shutdown_budget: Seconds between ``stop_requested`` and the hard cancel.
        inbox_size: When > 0, the supervisor owns a bounded inbox of this size for the child.
        supervisor: Set when the child is itself a supervisor, so that snapshots nest.
        essential: True: its restarts count against the supervisor's intensity, and going over it makes the
            supervisor give up (OTP's behaviour). False: the child has its own window of ``max_restarts`` per
            ``period``; going over it leaves only this child down (reported by ``Supervisor.left_down``).
    """

    id: str
    start: Callable[[ChildContext], Awaitable[None]]
    restart: Restart = Restart.PERMANENT
    shutdown_budget: float = 5.0
    inbox_size: int = 0
    supervisor: Supervisor | None = None
    essential: bool = True

    def __post_init__(self) -> None:
        if self.shutdown_budget < 0:
            raise ValueError("shutdown_budget must not be negative")
        if self.inbox_size < 0:
            raise ValueError("inbox_size must not be negative")


class Mailbox:
    """The persistent inbox of one child and the pause gate in front of it.

    The receive side is read only through ``receive``/``receive_nowait``, which honour the gate. Pausing cancels
    a receive that is waiting at that moment; trio's memory channels are cancel-safe, so no message is taken
    and lost on the way.
    """

    def __init__(self, child_id: str, size: int) -> None:
        self.child_id = child_id
        self.paused = False
        self._opened = trio.Event()
        self._opened.set()
        self._waiting: set[trio.CancelScope] = set()
        self._send: trio.MemorySendChannel[object] | None = None
        self._receive: trio.MemoryReceiveChannel[object] | None = None
        if size > 0:
            self._send, self._receive = trio.open_memory_channel[object](size)

    @property
    def send_channel(self) -> trio.MemorySendChannel[object]:
        """The send side, the same object for every incarnation.

        Raises:
            ValueError: The child was declared without an inbox (``inbox_size=0``).
        """
        if self._send is None:
            raise ValueError(f"child {self.child_id!r} has no inbox (inbox_size=0)")
        return self._send

    def _receive_channel(self) -> trio.MemoryReceiveChannel[object]:
        if self._receive is None:
            raise ValueError(f"child {self.child_id!r} has no inbox (inbox_size=0)")
        return self._receive

    def pause(self) -> None:
        """Close the gate: receivers wait, messages stay queued."""
        if self.paused:
            return
        self.paused = True
        self._opened = trio.Event()
        for scope in self._waiting:
            scope.cancel()

    def resume(self) -> None:
        """Open the gate again."""
        self.paused = False
        self._opened.set()

    async def receive(self) -> object:
        """Wait until the gate is open and a message is queued, and return that message."""
        channel = self._receive_channel()
        while True:
            await self._opened.wait()
            with trio.CancelScope() as scope:
                self._waiting.add(scope)
                try:
                    return await channel.receive()
                finally:
                    self._waiting.discard(scope)
            # pause() cancelled the wait before a message arrived: back to the gate.

    def receive_nowait(self) -> object:
        """Return a queued message at once.

        Raises:
            trio.WouldBlock: The inbox is empty or the gate is closed.
        """
        channel = self._receive_channel()
        if self.paused:
            raise trio.WouldBlock
        return channel.receive_nowait()

    def close(self) -> None:
        """Close both sides: the child is gone, senders get ``trio.ClosedResourceError``."""
        if self._send is not None:
            self._send.close()
        if self._receive is not None:
            self._receive.close()


class ChildContext:
    """What one incarnation of a child sees.

    Attributes:
        child_id: The id of the child spec.
        incarnation: 0 for the first start, +1 for each start after it.
        stop_requested: Set when a graceful stop begins. The child may finish its work and return; after its
            ``shutdown_budget`` it is cancelled.
    """

    def __init__(self, child_id: str, incarnation: int, mailbox: Mailbox, on_started: Callable[[], None]) -> None:
        self.child_id = child_id
        self.incarnation = incarnation
        self.stop_requested = trio.Event()
        self._mailbox = mailbox
        self._on_started = on_started
        self._receiving: set[trio.CancelScope] = set()  # waits that a stop request ends (receive_until_stop)

    def request_stop(self) -> None:
        """Begin a graceful stop: set ``stop_requested`` and end any wait in :meth:`receive_until_stop`."""
        self.stop_requested.set()
        for scope in self._receiving:
            scope.cancel()

    def started(self) -> None:
        """Report that the child is ready; the supervisor's ordered start waits for this. Idempotent."""
        self._on_started()

    async def receive(self) -> object:
        """Return the next inbox message, waiting while the inbox is empty or the child is paused.

        Raises:
            ValueError: The child has no inbox.
        """
        return await self._mailbox.receive()

    def receive_nowait(self) -> object:
        """Return the next inbox message without waiting.

        Raises:
            trio.WouldBlock: The inbox is empty or the child is paused.
            ValueError: The child has no inbox.
        """
        return self._mailbox.receive_nowait()

    async def receive_until_stop(self) -> object | None:
        """Like :meth:`receive`, but None as soon as a graceful stop is requested (:meth:`request_stop`).

        One cancel scope per wait, not a task watching ``stop_requested``: actors wait here for every
        message they get while idle (issue 9).

        Raises:
            ValueError: The child has no inbox.
        """
        if self.stop_requested.is_set():
            return None
        with trio.CancelScope() as scope:
            self._receiving.add(scope)
            try:
                return await self.receive()
            finally:
                self._receiving.discard(scope)
        return None  # request_stop() ended the wait


# States of a supervisor and of a child. "starting", "running" and "paused" describe a live incarnation; the
# others are kept in ``ChildRecord.rest_state`` while no incarnation runs.
STARTING, RUNNING, PAUSED = "starting", "running", "paused"
RESTARTING, STOPPED, FAILED, EXITED = "restarting", "stopped", "failed", "exited"


def describe(exc: BaseException) -> str:
    """Name an error for ``last_error``: the first leaf of nested exception groups, as ``Type: message``."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


@dataclass(frozen=True)
class LeftDown:
    """A non-essential child its supervisor stopped restarting, and why.

    Attributes:
        child_id: The child's id.
        restarts: The restarts it had within ``period`` seconds before the exit that went over the limit.
        period: The supervisor's intensity window, in seconds.
        last_error: How its last incarnation ended.
    """

    child_id: str
    restarts: int
    period: float
    last_error: str


class ChildRecord:
    """The supervisor's record of one child: its spec plus everything that outlives an incarnation."""

    def __init__(self, spec: ChildSpec, backoff: Backoff) -> None:
        self.spec = spec
        self.mailbox = Mailbox(spec.id, spec.inbox_size)
        self.backoff = backoff
        self.rest_state = STOPPED
        self.restarts = 0
        self.last_error: str | None = None
        self.next_retry_at: float | None = None
        self.current: Incarnation | None = None
        self.pending: PendingRestart | None = None
        self.starts = 0
        self.ever_ready = False
        # A non-essential child's own restart window (trio times), and the verdict once it went over it.
        self.restart_times: collections.deque[float] = collections.deque()
        self.left_down: LeftDown | None = None

    @property
    def active(self) -> bool:
        """Running, starting, or waiting for a scheduled restart."""
        return self.current is not None or self.pending is not None

    @property
    def state(self) -> str:
        if self.current is None:
            return self.rest_state
        if not self.current.ready:
            return STARTING
        return PAUSED if self.mailbox.paused else RUNNING


class Incarnation:
    """One start of a child: its task's cancel scope, and how it ended."""

    def __init__(self, child: ChildRecord, number: int) -> None:
        self.child = child
        self.began_at = trio.current_time()
        self.context = ChildContext(child.spec.id, number, child.mailbox, self._mark_ready)
        self.cancel_scope = trio.CancelScope()
        self.settled = trio.Event()  # ready, or ended before that
        self.done = trio.Event()
        self.ready = False
        self.crashed = False
        self.error: str | None = None

    def _mark_ready(self) -> None:
        if self.ready or self.done.is_set():
            return
        self.ready = True
        self.child.ever_ready = True
        self.settled.set()


class PendingRestart:
    """Children waiting together for a backoff delay; a later decision about a child supersedes this one."""

    def __init__(self, group: Sequence[ChildRecord]) -> None:
        self.group = list(group)
