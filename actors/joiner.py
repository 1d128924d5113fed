"""The joiner: turns child closes into their parent's synthesising record, and closes the parent when its join holds.

Seed 003 ("Fork and merge"): "When the child closes, a synthesising record on the parent thread says 'child X
completed with result Y'. The join predicate in the parent INTEND decides when the parent itself should close."

The exactly-once part lives in the store (``spl.store.tasks``): the transaction that closes a child writes an
outbox row per parent, and the transaction that stores the parent's synthesis deletes it. This actor is a thin
loop around that: it reads the outbox, decides the join (``spl.core.joins``, pure) over the outcomes already
synthesised plus this one, and writes — in ONE request, so one transaction — the synthesising KNOW and, when the
predicate now holds (or can no longer hold), the KNOW that closes the parent. Both are signed by the instance.
A crash before that commit leaves the row (it is done after the restart); a crash after leaves none.

The writer nudges the joiner after a commit whose records may close or fork a thread (an inbox of one message:
a nudge that finds one queued is dropped, since the sweep it asks for will run anyway). Writes the kill switch
refuses (``spl kill --hard``) are retried with backoff: the rows wait, nothing is lost.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from spl.actors.local import LocalRecords
from spl.actors.loop import next_message
from spl.actors.writer import WriterClient
from spl.core import joins
from spl.core.errors import SplError
from spl.core.stored import Accepted
from spl.runtime.backoff import Backoff
from spl.runtime.supervisor import ChildContext
from spl.store import tasks as task_store

__all__ = ["Joiner"]

log = logging.getLogger("spl.joiner")

SWEEP = 64  # outbox rows read per sweep
CLOSED_PARENT = frozenset({"done", "cancelled"})

Read = Callable[..., Awaitable[Any]]


class Joiner:
    """Actor body; ``run`` is the child's start function.

    Args:
        read: Runs a store query on a read connection (``Services.read``'s shape).
        local: Signs and builds this instance's records (its clock is shared with every other instance record).
        writer: Commits them.
    """

    def __init__(self, read: Read, local: LocalRecords, writer: WriterClient) -> None:
        self._read = read
        self._local = local
        self._writer = writer
        self._backoff = Backoff(base=0.5, cap=30.0)
        self._poisoned: set[int] = set()  # outbox rows refused for good (4xx): logged once, skipped until restart
        self.synthesised = 0  # synthesising records committed by this process
        self.closed = 0  # parents closed by a join
        self.last_error: str | None = None

    async def run(self, ctx: ChildContext) -> None:
        ctx.started()
        retry_at = math.inf
        while True:
            if retry_at == math.inf:
                limit = min(SWEEP + len(self._poisoned), 4096)
                rows = [
                    row for row in await self._read(task_store.outbox, limit) if row.queued_seq not in self._poisoned
                ]
                if rows:
                    retry_at = await self._settle(rows)
                    continue
            if await next_message(ctx, deadline=retry_at) is None and ctx.stop_requested.is_set():
                return
            retry_at = math.inf

    async def _settle(self, rows: list[task_store.OutboxRow]) -> float:
        """Synthesise ``rows`` in order; the trio time to retry at if one could not be written, else inf."""
        for row in rows:
            try:
                await self._synthesise(row)
            except SplError as exc:
                self.last_error = f"{exc.code}: {exc.message}"
                if exc.status < 500:  # refused for what the records are: retrying would not help
                    self._poisoned.add(row.queued_seq)
                    log.error(
                        "the synthesis of child %s on %s was refused (%s: %s); skipped until the next start",
                        row.child,
                        row.parent,
                        exc.code,
                        exc.message,
                    )
                    continue
                delay = self._backoff.next_delay()
                log.warning(
                    "could not write the synthesis of child %s on %s (%s); retrying in %.1f s",
                    row.child,
                    row.parent,
                    exc.code,
                    delay,
                )
                return trio.current_time() + delay
        self._backoff.attempt = 0
        self.last_error = None
        return math.inf

    async def _synthesise(self, row: task_store.OutboxRow) -> None:
        inputs: task_store.JoinInputs = await self._read(task_store.join_inputs, row.parent)
        spec, children, outcomes = inputs.spec, inputs.children, inputs.outcomes
        this = joins.ChildOutcome(row.child, row.status, row.result, row.closer)
        outcomes[row.child] = this
        namespace = spec.get("namespace")
        bodies = [joins.synthesis_body(this)]
        too_many = len(children) > task_store.MAX_CHILDREN  # decided over all or not at all (docs/tasks.md)
        if spec["state"] not in CLOSED_PARENT and spec["opened_by"] is not None and not too_many:
            try:
                predicate = joins.parse_join(spec["join"])
            except SplError:
                predicate = None  # a parent whose join cannot be read is never closed by the joiner
            if predicate is not None:
                # A CEL join may take up to its step budget (tens of ms): off the event loop.
                decision = await trio.to_thread.run_sync(joins.decide, predicate, children, outcomes)
                if decision.verdict != "pending":
                    bodies.append(joins.closing_body(predicate, decision, spec["opened_by"]))
        if namespace and namespace != "default":
            for body in bodies:
                body.setdefault("namespace", namespace)
        envelopes = [self._local.instance_envelope(row.parent, "KNOW", body) for body in bodies]
        outcomes_written = await self._writer.ingest([self._local.sign(envelope) for envelope in envelopes])
        for outcome in outcomes_written:
            if not isinstance(outcome, Accepted):
                raise outcome
        self.synthesised += 1
        self.closed += len(bodies) - 1
