"""The SSE hub: fans committed records out to live thread subscribers.

Each subscriber has its own buffer, bounded twice: by records (``sse_buffer``) and by
bytes of record JSON (:data:`DEFAULT_MAX_BYTES`), so a watcher that stops reading pins a
bounded amount of memory whatever the record sizes. The hub never waits on a slow reader:
when a buffer is full the subscription is marked *lagged*, removed and closed, and the
stream ends with ``event: error`` / ``code: lagged`` (spec §15.11) — the SDK reconnects with
its cursor and loses nothing. A stopping daemon closes every subscription as *shutdown*,
so streams end with ``server_shutdown`` before the HTTP server cuts them.

Costs, so that many slow or stuck watchers stay cheap: a committed record costs one
non-blocking send per *live* subscriber of its thread (a lagged one is gone from the table
at once); subscribe, unsubscribe and lag are O(1) set operations in the actor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from spl.actors.loop import next_message
from spl.actors.messages import CloseAll, Committed, Reply, Subscribe, Unsubscribe
from spl.core.stored import StoredRecord
from spl.runtime.supervisor import ChildContext

__all__ = ["DEFAULT_MAX_BYTES", "EVERY_THREAD", "Hub", "HubClient", "Subscription"]

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
"""Record JSON a subscriber may have waiting; with 1 KiB records the record bound comes first."""


# The subscription key of a stream that follows every thread (a federation pair's namespace feed,
# which filters what it reads from the store): never a thread's name, which cannot contain "*".
EVERY_THREAD = "*"


@dataclass(eq=False)
class Subscription:
    """One live stream of one thread's committed records.

    The hub puts records in with :meth:`offer` (never waiting); the stream takes them out
    with :meth:`take` / :meth:`take_nowait`, which keep :attr:`queued_bytes` true.
    """

    thread: str
    buffer: int = 1024
    max_bytes: int = DEFAULT_MAX_BYTES
    lagged: bool = False
    shutdown: bool = False
    queued_bytes: int = 0
    released: bool = False  # HubClient.unsubscribe ran (it may be called twice: stream end and GC)
    send: trio.MemorySendChannel[StoredRecord] = field(init=False)
    receive: trio.MemoryReceiveChannel[StoredRecord] = field(init=False)

    def __post_init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[StoredRecord](self.buffer)

    def offer(self, record: StoredRecord) -> bool:
        """Queue ``record`` for the reader; False when the reader is too far behind.

        A record larger than ``max_bytes`` on its own still goes to a reader that has
        nothing waiting, so one big record never lags an attentive watcher.

        Raises:
            trio.ClosedResourceError, trio.BrokenResourceError: the subscription is closed.
        """
        size = len(record.json)  # ASCII-only JSON: characters are bytes
        if self.queued_bytes and self.queued_bytes + size > self.max_bytes:
            return False
        try:
            self.send.send_nowait(record)
        except trio.WouldBlock:
            return False
        self.queued_bytes += size
        return True

    async def take(self) -> StoredRecord:
        """The next record, waiting for one. Raises ``trio.EndOfChannel`` once closed and drained."""
        record = await self.receive.receive()
        self.queued_bytes -= len(record.json)
        return record

    def take_nowait(self) -> StoredRecord:
        """The next record if one is waiting. Raises ``trio.WouldBlock`` or ``trio.EndOfChannel``."""
        record = self.receive.receive_nowait()
        self.queued_bytes -= len(record.json)
        return record


class Hub:
    """Actor body: owns the subscription table."""

    def __init__(self) -> None:
        self._by_thread: dict[str, set[Subscription]] = {}
        self._closed = False
        self._count = 0

    @property
    def subscriber_count(self) -> int:
        """Subscriptions currently registered (lagged and closed ones are already gone): what shows that
        the table never keeps an ended stream."""
        return self._count

    async def run(self, ctx: ChildContext) -> None:
        ctx.started()
        try:
            while (message := await next_message(ctx)) is not None:
                match message:
                    case Committed(records=records):
                        self._fan_out(records)
                    case Subscribe(subscription=subscription, reply=reply):
                        reply.set(self._add(subscription))
                    case Unsubscribe(subscription=subscription):
                        self._remove(subscription)
                    case CloseAll():
                        self._close_all()
        finally:
            self._close_all()

    def _add(self, subscription: Subscription) -> bool:
        if self._closed:
            subscription.shutdown = True
            subscription.send.close()
            return False
        subs = self._by_thread.setdefault(subscription.thread, set())
        if subscription not in subs:
            subs.add(subscription)
            self._count += 1
        return True

    def _remove(self, subscription: Subscription) -> None:
        subs = self._by_thread.get(subscription.thread)
        if subs is not None and subscription in subs:
            subs.remove(subscription)
            self._count -= 1
            if not subs:
                del self._by_thread[subscription.thread]
        subscription.send.close()

    def _fan_out(self, records: Sequence[StoredRecord]) -> None:
        everything = self._by_thread.get(EVERY_THREAD)
        for record in records:
            subs = self._by_thread.get(record.thread)
            if everything:
                subs = subs | everything if subs else everything
            if not subs:
                continue
            dropped: list[Subscription] = []
            for subscription in subs:
                try:
                    if subscription.offer(record):
                        continue
                    subscription.lagged = True
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    pass
                dropped.append(subscription)
            for subscription in dropped:  # not while iterating the set
                self._remove(subscription)

    def _close_all(self) -> None:
        self._closed = True
        for subs in list(self._by_thread.values()):
            for subscription in list(subs):
                subscription.shutdown = True
                self._remove(subscription)


class HubClient:
    """What request handlers hold to subscribe and unsubscribe.

    It also counts the streams it handed out (:attr:`open_streams`, until each is
    unsubscribed) and how many of them ended lagged, for ``GET /v1/status``.
    """

    def __init__(
        self, inbox: trio.MemorySendChannel[object], buffer: int = 1024, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self._inbox = inbox
        self._buffer = buffer
        self._max_bytes = max_bytes
        self.open_streams = 0
        self.lagged_total = 0

    async def subscribe(self, thread: str, *, buffer: int | None = None) -> Subscription:
        """Register a subscription; every record committed after this returns reaches it."""
        subscription = Subscription(thread, buffer or self._buffer, self._max_bytes)
        self.open_streams += 1
        reply: Reply[bool] = Reply()
        try:
            await self._inbox.send(Subscribe(subscription, reply))
            await reply.get()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            subscription.shutdown = True
            subscription.send.close()
        except BaseException:
            self.unsubscribe(subscription)  # cancelled while subscribing: the caller never gets it
            raise
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Best effort, never blocks, safe to call twice: a full inbox means the hub drops it on next send."""
        if subscription.released:
            return
        subscription.released = True
        self.open_streams -= 1
        if subscription.lagged:
            self.lagged_total += 1
        try:
            self._inbox.send_nowait(Unsubscribe(subscription))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            subscription.send.close()

    async def close_all(self) -> None:
        try:
            await self._inbox.send(CloseAll())
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def stats(self) -> dict[str, int]:
        """What ``GET /v1/status`` reports about live streams."""
        return {"open": self.open_streams, "lagged_total": self.lagged_total}
