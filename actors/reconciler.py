"""The reconciler: every record from a peer, pulled or pushed, passes here on its way to the store.

Two stages joined by a bounded channel, so verifying page N+1 overlaps committing page N:

1. *verify* (worker threads): recompute the id, check ``sig`` against ``signer``; a
   record that fails is refused and counted, and the rest of the page goes on. Refusals
   are logged once per page in aggregate (a count per code and one example, escaped):
   a hostile peer must not be able to fill the disk with log lines or forge them;
2. *commit* (in arrival order): hand the verified records to the store writer together
   with the pair's new cursor, so records and cursor commit in one transaction. A page the
   kill switch refuses (``spl kill``) is refused whole and fails the request with that 503,
   unlike a per-record refusal, which is counted and skipped: the records are held, not lost.

A pair commits one page at a time, so for a pair catching up the two stages above would
still take turns. It therefore verifies each page it pulls as soon as it arrives
(:meth:`ReconcilerClient.verify`, in the pair's own task: verification holds no state) and
hands the result over with :meth:`ReconcilerClient.commit`, which goes straight to stage 2:
page N+1 is verified while page N commits. Stream batches and pushes take both stages here.

``queue_depth`` (records accepted but not yet committed) is the ``reconcile_queue`` figure.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio

from spl.actors.loop import next_message
from spl.actors.messages import Push, Reconcile, Reply, unavailable
from spl.actors.writer import WriterClient
from spl.core.errors import SplError
from spl.core.fleet_control import FleetFrozen
from spl.core.stored import Accepted, Candidate, StoredRecord
from spl.core.text import printable
from spl.core.verify import Refusal, screen_pushed, verify_batch
from spl.runtime.supervisor import ChildContext

__all__ = ["CommitVerified", "ReconcileResult", "Reconciler", "ReconcilerClient", "VerifiedPage", "verify_in_parallel"]

log = logging.getLogger("spl.reconciler")


@dataclass
class ReconcileResult:
    """What became of one page (pulled) or one batch (pushed)."""

    stored: list[StoredRecord] = field(default_factory=list)
    duplicate_ids: list[str] = field(default_factory=list)  # already stored: idempotent re-delivery
    refusals: list[Refusal] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return len(self.duplicate_ids)


@dataclass(frozen=True)
class VerifiedPage:
    """A pulled page already verified (:meth:`ReconcilerClient.verify`), waiting for its commit."""

    candidates: list[Candidate]
    refusals: list[Refusal]
    size: int  # records the page held (candidates + refusals), for the queue figure


class CommitVerified(msgspec.Struct, frozen=True, tag=True):
    """Commit a page the pair verified ahead, and move the pair's cursor with it (skips stage 1).

    The reconciler's own message: only :class:`ReconcilerClient` sends it and only :class:`Reconciler` reads it.
    """

    pair_id: str
    page: Any  # VerifiedPage (a dataclass of records: msgspec need not look inside)
    cursor: str
    reply: Reply[Any]  # ReconcileResult


@dataclass
class _Verified:
    message: Reconcile | Push | CommitVerified
    candidates: list[Candidate]
    refusals: list[Refusal]
    size: int  # records the message held, all of them counted in queue_depth


class Reconciler:
    """Actor body. Pulled pages (:class:`Reconcile`) and pushed batches (:class:`Push`) share both stages,
    so a record reaches the store the same way whichever side started the transfer."""

    def __init__(self, writer: WriterClient | None = None) -> None:
        self._writer = writer
        self.queue_depth = 0
        self.queue_high_water = 0

    def bind(self, writer: WriterClient) -> None:
        """Wire the writer in once the supervisor has created its inbox."""
        self._writer = writer

    def note_queued(self, count: int) -> None:
        self.queue_depth += count
        self.queue_high_water = max(self.queue_high_water, self.queue_depth)

    async def run(self, ctx: ChildContext) -> None:
        send, receive = trio.open_memory_channel[_Verified](2)
        ctx.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._commit_stage, receive)
            async with send:
                while (message := await next_message(ctx)) is not None:
                    if isinstance(message, CommitVerified):
                        page: VerifiedPage = message.page
                        await send.send(_Verified(message, page.candidates, page.refusals, page.size))
                        continue
                    if not isinstance(message, Reconcile | Push):
                        continue
                    try:
                        records: list[object] = list(message.records)
                        screened: list[Refusal] = []
                        if isinstance(message, Push):
                            records, screened = screen_pushed(records)
                        results = await verify_in_parallel(records)
                    except Exception as exc:  # a bug in verification must not hang the pair or the pusher
                        message.reply.fail(exc)
                        self.queue_depth -= len(message.records)
                        continue
                    candidates = [r for r in results if isinstance(r, Candidate)]
                    refusals = screened + [r for r in results if isinstance(r, Refusal)]
                    await send.send(_Verified(message, candidates, refusals, len(message.records)))

    async def _commit_stage(self, receive: trio.MemoryReceiveChannel[_Verified]) -> None:
        async for verified in receive:
            message = verified.message
            assert self._writer is not None, "Reconciler.bind() was not called"
            cursor = None if isinstance(message, Push) else (message.pair_id, message.cursor)
            try:
                outcomes = await self._writer.ingest(verified.candidates, cursor=cursor, park_rejected=True)
            except Exception as exc:
                message.reply.fail(exc)
                continue
            finally:
                self.queue_depth -= verified.size
            frozen = next((outcome for outcome in outcomes if isinstance(outcome, FleetFrozen)), None)
            if frozen is not None:
                # The kill switch refused the page whole (nothing stored, the cursor kept): a pair backs off and
                # pulls it again, a pusher gets a 503 and pushes it again, once the freeze is lifted.
                message.reply.fail(frozen)
                continue
            result = ReconcileResult(refusals=list(verified.refusals))
            for candidate, outcome in zip(verified.candidates, outcomes, strict=True):
                if isinstance(outcome, Accepted):
                    if outcome.created:
                        result.stored.append(outcome.record)
                    else:
                        result.duplicate_ids.append(outcome.record.id)
                elif isinstance(outcome, SplError):
                    result.refusals.append(Refusal(candidate.envelope.id, outcome.code, outcome.message))
            if result.refusals:
                origin = "push" if isinstance(message, Push) else f"pair {message.pair_id}"
                log.warning("%s: %s", origin, summarise_refusals(result.refusals))
            message.reply.set(result)


def summarise_refusals(refusals: list[Refusal]) -> str:
    """One log line for a page's refusals: the count per code and the first example, escaped."""
    counts: dict[str, int] = {}
    for refusal in refusals:
        counts[refusal.code] = counts.get(refusal.code, 0) + 1
    first = refusals[0]
    tally = ", ".join(f"{code} {count}" for code, count in sorted(counts.items()))
    return (
        f"refused {len(refusals)} record(s) ({tally}); first: {printable(first.record_id, 64)} "
        f"{first.code} {printable(first.reason, 160)}"
    )


async def verify_in_parallel(records: list[object], *, chunks: int = 2) -> list[Candidate | Refusal]:
    """Verify a page in ``chunks`` worker threads at once: libsodium releases the GIL,
    so on two cores two halves of a page check their signatures side by side."""
    if len(records) < 64:
        return await trio.to_thread.run_sync(verify_batch, records)
    size = -(-len(records) // chunks)
    parts: list[list[Candidate | Refusal]] = [[] for _ in range(chunks)]

    async def verify_part(index: int) -> None:
        parts[index] = await trio.to_thread.run_sync(verify_batch, records[index * size : (index + 1) * size])

    async with trio.open_nursery() as nursery:
        for index in range(chunks):
            nursery.start_soon(verify_part, index)
    return [result for part in parts for result in part]


class ReconcilerClient:
    """What pairs and the push route hold: hand records to the reconciler and await the result."""

    def __init__(self, inbox: trio.MemorySendChannel[object], reconciler: Reconciler) -> None:
        self._inbox = inbox
        self._reconciler = reconciler

    async def reconcile(self, pair_id: str, records: list[object], cursor: str) -> ReconcileResult:
        """A pulled page: its records and the pair's new cursor commit together."""
        reply: Reply[ReconcileResult] = Reply()
        await self._send(Reconcile(pair_id, records, cursor, reply), len(records))
        return await reply.get()

    async def verify(self, records: list[object]) -> VerifiedPage:
        """Verify a pulled page now, in the caller's task, ahead of :meth:`commit`.

        Verification is pure work on the page (worker threads; libsodium releases the GIL), so a
        pair runs it as soon as a page arrives, while its previous page is still committing.
        """
        results = await verify_in_parallel(records)
        candidates = [r for r in results if isinstance(r, Candidate)]
        refusals = [r for r in results if isinstance(r, Refusal)]
        return VerifiedPage(candidates, refusals, len(records))

    async def commit(self, pair_id: str, page: VerifiedPage, cursor: str) -> ReconcileResult:
        """Commit a page :meth:`verify` checked; records and the pair's new cursor commit together."""
        reply: Reply[ReconcileResult] = Reply()
        await self._send(CommitVerified(pair_id, page, cursor, reply), page.size)
        return await reply.get()

    async def push(self, records: list[object]) -> ReconcileResult:
        """A pushed batch (``POST /v1/sync/records``): records for reserved threads are refused, the rest
        verified and ingested; records refused only for their namespace are parked."""
        reply: Reply[ReconcileResult] = Reply()
        await self._send(Push(records, reply), len(records))
        return await reply.get()

    async def _send(self, message: Reconcile | Push | CommitVerified, count: int) -> None:
        self._reconciler.note_queued(count)
        try:
            await self._inbox.send(message)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self._reconciler.queue_depth -= count
            raise unavailable("the reconciler") from None
