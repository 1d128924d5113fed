"""Thread folds: lifecycle state and participants per thread, derived from records.

An LRU cache of :class:`~spl.kernel.fold.ThreadFold` states. A miss folds the thread
from the store; committed batches (sent by the writer before it acknowledges) keep cached
folds current, so a query made after an acknowledged emit sees that emit. ``apply``
ignores sequences it already folded, so a load racing a commit never double-counts.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

import trio

from spl.actors.loop import next_message
from spl.actors.messages import Committed, FoldQuery, Reply, unavailable
from spl.kernel.fold import ThreadFold
from spl.kernel.queries import records_after
from spl.kernel.store import ReadPool
from spl.runtime.supervisor import ChildContext

__all__ = ["FoldClient", "ThreadFolds"]

_PAGE = 5000


class ThreadFolds:
    def __init__(self, pool: ReadPool, *, capacity: int = 4096) -> None:
        self._pool = pool
        self._capacity = capacity
        self._cache: OrderedDict[str, ThreadFold] = OrderedDict()

    async def run(self, ctx: ChildContext) -> None:
        self._cache.clear()  # a restarted incarnation starts clean; misses reload from disk
        ctx.started()
        while (message := await next_message(ctx)) is not None:
            match message:
                case Committed(records=records):
                    for record in records:
                        fold = self._cache.get(record.thread)
                        if fold is not None:
                            fold.apply(json.loads(record.json))
                case FoldQuery(thread=thread, reply=reply):
                    fold = self._cache.get(thread)
                    if fold is None:
                        fold = await trio.to_thread.run_sync(self._load, thread)
                        self._remember(fold)
                    else:
                        self._cache.move_to_end(thread)
                    reply.set(fold.to_wire() if fold.record_count else None)

    def _load(self, thread: str) -> ThreadFold:
        fold = ThreadFold(thread)
        with self._pool.connection() as connection:
            while True:
                page = records_after(connection, thread, fold.last_seq, _PAGE)
                for record in page:
                    fold.apply(json.loads(record.json))
                if len(page) < _PAGE:
                    return fold

    def _remember(self, fold: ThreadFold) -> None:
        self._cache[fold.thread] = fold
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)


class FoldClient:
    def __init__(self, inbox: trio.MemorySendChannel[object]) -> None:
        self._inbox = inbox

    async def query(self, thread: str) -> dict[str, Any] | None:
        reply: Reply[dict[str, Any] | None] = Reply()
        try:
            await self._inbox.send(FoldQuery(thread, reply))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise unavailable("the thread folds") from None
        return await reply.get()
