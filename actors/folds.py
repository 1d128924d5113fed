"""Thread folds: lifecycle state and participants per thread, derived from records.

An LRU cache of :class:`~spl.core.fold.ThreadFold` states. A miss folds the thread
from the store; committed batches (sent by the writer before it acknowledges) keep cached
folds current, so a query made after an acknowledged emit sees that emit. ``apply``
ignores sequences it already folded, so a load racing a commit never double-counts.

A query that fails (a damaged page answers ``STORE_CORRUPT`` through the read pool, a bug
answers a 500) fails alone: the actor answers it and goes on. It must not crash instead —
the requester would wait forever for a reply that died with the incarnation, and every
such query would count towards the root's restart intensity.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import trio

from spl.actors.loop import next_message
from spl.actors.messages import Committed, FoldQuery, Reply, unavailable
from spl.core.errors import SplError
from spl.core.fold import ThreadFold
from spl.core.stored import StoredRecord
from spl.runtime.supervisor import ChildContext
from spl.store.database import ReadPool
from spl.store.queries import records_after

__all__ = ["FoldClient", "ThreadFolds"]

log = logging.getLogger("spl.folds")

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
                    self._apply(records)
                case FoldQuery(thread=thread, reply=reply):
                    try:
                        reply.set(await self._query(thread))
                    except SplError as exc:
                        reply.fail(exc)  # STORE_CORRUPT from the read pool: already logged there
                    except Exception as exc:
                        log.error("folding thread %s failed", thread, exc_info=exc)
                        reply.fail(SplError("folding this thread failed (an internal error); see the daemon log"))

    def _apply(self, records: Sequence[StoredRecord]) -> None:
        for record in records:
            fold = self._cache.get(record.thread)
            if fold is None:
                continue
            try:
                fold.apply(json.loads(record.json))
            except Exception as exc:  # a fold we cannot keep current is dropped; the next query reloads it
                log.error("dropping the cached fold of %s", record.thread, exc_info=exc)
                del self._cache[record.thread]

    async def _query(self, thread: str) -> dict[str, Any] | None:
        fold = self._cache.get(thread)
        if fold is None:
            fold = await trio.to_thread.run_sync(self._load, thread)
            self._remember(fold)
        else:
            self._cache.move_to_end(thread)
        return fold.to_wire() if fold.record_count else None

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
