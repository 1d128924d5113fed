"""The SSE hub: fans committed records out to live thread subscribers.

Each subscriber has its own bounded buffer. The hub never waits on a slow reader: when
a buffer is full the subscription is marked *lagged* and closed, and the stream ends
with ``event: error`` / ``code: lagged`` (spec §15.11) — the SDK reconnects with its
cursor and loses nothing. A stopping daemon closes every subscription as *shutdown*,
so streams end with ``server_shutdown`` before the HTTP server cuts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from spl.actors.loop import next_message
from spl.actors.messages import CloseAll, Committed, Reply, Subscribe, Unsubscribe
from spl.kernel.store import StoredRecord
from spl.runtime.supervisor import ChildContext

__all__ = ["Hub", "HubClient", "Subscription"]


@dataclass(eq=False)
class Subscription:
    """One live stream of one thread's committed records."""

    thread: str
    buffer: int = 1024
    lagged: bool = False
    shutdown: bool = False
    send: trio.MemorySendChannel[StoredRecord] = field(init=False)
    receive: trio.MemoryReceiveChannel[StoredRecord] = field(init=False)

    def __post_init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[StoredRecord](self.buffer)


class Hub:
    """Actor body: owns the subscription table."""

    def __init__(self) -> None:
        self._by_thread: dict[str, set[Subscription]] = {}
        self._closed = False
        self.delivered = 0
        self.lagged = 0

    @property
    def subscriber_count(self) -> int:
        return sum(len(subs) for subs in self._by_thread.values())

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
        self._by_thread.setdefault(subscription.thread, set()).add(subscription)
        return True

    def _remove(self, subscription: Subscription) -> None:
        subs = self._by_thread.get(subscription.thread)
        if subs is not None:
            subs.discard(subscription)
            if not subs:
                del self._by_thread[subscription.thread]
        subscription.send.close()

    def _fan_out(self, records: Sequence[StoredRecord]) -> None:
        for record in records:
            for subscription in list(self._by_thread.get(record.thread, ())):
                try:
                    subscription.send.send_nowait(record)
                    self.delivered += 1
                except trio.WouldBlock:
                    subscription.lagged = True
                    self.lagged += 1
                    self._remove(subscription)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    self._remove(subscription)

    def _close_all(self) -> None:
        self._closed = True
        for subs in list(self._by_thread.values()):
            for subscription in list(subs):
                subscription.shutdown = True
                self._remove(subscription)


class HubClient:
    """What request handlers hold to subscribe and unsubscribe."""

    def __init__(self, inbox: trio.MemorySendChannel[object], buffer: int = 1024) -> None:
        self._inbox = inbox
        self._buffer = buffer

    async def subscribe(self, thread: str, *, buffer: int | None = None) -> Subscription:
        """Register a subscription; every record committed after this returns reaches it."""
        subscription = Subscription(thread, buffer or self._buffer)
        reply: Reply[bool] = Reply()
        try:
            await self._inbox.send(Subscribe(subscription, reply))
            await reply.get()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            subscription.shutdown = True
            subscription.send.close()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Best effort, never blocks: a full inbox means the hub will drop it on next send."""
        try:
            self._inbox.send_nowait(Unsubscribe(subscription))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            subscription.send.close()

    async def close_all(self) -> None:
        try:
            await self._inbox.send(CloseAll())
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
