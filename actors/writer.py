"""The store writer: the only owner of the write connection.

It drains whatever is queued (up to ``max_batch`` requests) into one transaction —
group commit: sixteen concurrent emits cost one COMMIT, not sixteen — and only after
COMMIT does it tell the folds and the SSE hub, then answer the requesters. A crash in
the middle fails the pending replies (the HTTP layer answers 503, nothing was
acknowledged) and the supervisor restarts the writer, which reloads its state.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import apsw
import trio

from spl.actors.loop import next_message
from spl.actors.messages import Committed, Ingest, Reply, Transact, unavailable
from spl.kernel.ingest import Accepted, Candidate, Outcome, WriterState, commit_batch, load_writer_state
from spl.kernel.store import connect_writer
from spl.runtime.supervisor import ChildContext

__all__ = ["StoreWriter", "WriterClient"]


class StoreWriter:
    """Actor body; ``run`` is the child's start function."""

    def __init__(
        self,
        path: Path,
        subscribers: Sequence[trio.MemorySendChannel[object]],
        *,
        max_batch: int = 256,
    ) -> None:
        self._path = path
        self._subscribers = subscribers
        self._max_batch = max_batch
        self.head_sequence = 0
        self.batches_committed = 0

    async def run(self, ctx: ChildContext) -> None:
        connection = await trio.to_thread.run_sync(connect_writer, self._path)
        try:
            state = await trio.to_thread.run_sync(load_writer_state, connection)
            self.head_sequence = state.next_seq - 1
            ctx.started()
            while True:
                first = await next_message(ctx)
                if first is None:
                    return  # graceful stop: everything queued was committed
                messages = [first]
                while len(messages) < self._max_batch:
                    try:
                        messages.append(ctx.receive_nowait())
                    except trio.WouldBlock:
                        break
                state = await self._handle(connection, state, messages)
        finally:
            connection.close()

    async def _handle(self, connection: apsw.Connection, state: WriterState, messages: list[object]) -> WriterState:
        ingests = [message for message in messages if isinstance(message, Ingest)]
        transacts = [message for message in messages if isinstance(message, Transact)]
        try:
            if ingests:
                state = await self._commit_ingests(connection, state, ingests)
            for transact in transacts:
                await self._transact(connection, transact)
        finally:
            for message in messages:
                reply: Reply[Any] = message.reply  # type: ignore[attr-defined]
                reply.fail(unavailable("the store writer"))
        return state

    async def _commit_ingests(
        self, connection: apsw.Connection, state: WriterState, ingests: list[Ingest]
    ) -> WriterState:
        batches = [ingest.candidates for ingest in ingests]
        cursors = [ingest.cursor for ingest in ingests if ingest.cursor is not None]

        def save_cursors(connection: apsw.Connection, _outcomes: object) -> None:
            # A pair's cursor commits in the same transaction as the records it covers.
            for pair_id, sequence in cursors:
                connection.execute(
                    "INSERT INTO sync_cursors(pair_id, cursor, updated_at) VALUES (?, ?, strftime('%s','now')) "
                    "ON CONFLICT(pair_id) DO UPDATE SET cursor = MAX(cursor, excluded.cursor), "
                    "updated_at = excluded.updated_at",
                    (pair_id, sequence),
                )

        try:
            outcomes = await trio.to_thread.run_sync(
                functools.partial(commit_batch, connection, batches, state, extra=save_cursors if cursors else None)
            )
        except Exception:
            # The transaction rolled back; the in-memory state may be ahead of the disk.
            state = await trio.to_thread.run_sync(load_writer_state, connection)
            raise
        # Committed: from here on every requester must get its answer, even if a stop
        # arrives meanwhile (the hub and folds outlive the writer in the stop order).
        with trio.CancelScope(shield=True):
            self.batches_committed += 1
            self.head_sequence = state.next_seq - 1
            await self._publish(outcomes)
            for ingest, request_outcomes in zip(ingests, outcomes, strict=True):
                ingest.reply.set(request_outcomes)
        return state

    async def _publish(self, outcomes: list[list[Outcome]]) -> None:
        """Tell folds and watchers about new records before anyone is acknowledged."""
        created = [
            outcome.record
            for request in outcomes
            for outcome in request
            if isinstance(outcome, Accepted) and outcome.created
        ]
        if created:
            message = Committed(created)
            for subscriber in self._subscribers:
                await subscriber.send(message)

    async def _transact(self, connection: apsw.Connection, transact: Transact) -> None:
        def work() -> Any:
            connection.execute("BEGIN IMMEDIATE")
            try:
                result = transact.work(connection)
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            return result

        try:
            result = await trio.to_thread.run_sync(work)
        except Exception as exc:
            transact.reply.fail(exc)
            return
        transact.reply.set(result)


class WriterClient:
    """What request handlers hold: send work to the writer's inbox and await the answer."""

    def __init__(self, inbox: trio.MemorySendChannel[object]) -> None:
        self._inbox = inbox

    async def ingest(self, candidates: Sequence[Candidate], *, cursor: tuple[str, int] | None = None) -> list[Outcome]:
        """Commit ``candidates``; with ``cursor`` also move that pair's cursor in the same transaction."""
        reply: Reply[list[Outcome]] = Reply()
        try:
            await self._inbox.send(Ingest(candidates, reply, cursor))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise unavailable("the store writer") from None
        return await reply.get()

    async def transact(self, work: Any) -> Any:
        reply: Reply[Any] = Reply()
        try:
            await self._inbox.send(Transact(work, reply))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise unavailable("the store writer") from None
        return await reply.get()
