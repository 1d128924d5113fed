"""The store writer: the only owner of the write connection.

It drains whatever is queued (up to ``max_batch`` requests) into one transaction —
group commit: sixteen concurrent emits cost one COMMIT, not sixteen — and only after
COMMIT does it tell the SSE hub, then answer the requesters (thread folds are kept inside
the transaction itself, by ``spl.store.threads``).

A request that fails, fails alone; the writer does not die of it:

- an unexpected error in a group commit rolls it back, reloads the in-memory state and
  commits each queued request in its own transaction, so only the request at fault gets
  the error (a 500 that points to the daemon log, where its traceback was written once);
- a full disk (SQLITE_FULL, ENOSPC, or the ``[store] max_bytes`` cap) fails every request
  of that batch with 503 ``STORAGE_FULL``; the next batch tries again, so writes resume as
  soon as there is room, and reads never depended on the writer;
- a damaged page fails the request that met it with 500 ``STORE_CORRUPT``; if even the
  state cannot be reloaded, writes fail with that error until it can, and reads go on.

Only a failure outside any request (opening the store, a bug in reloading the state)
still crashes the writer, and the supervisor restarts it with a fresh connection.

Besides record ingests the inbox carries typed commands (``CreateNamespace``, ``MintToken``,
``RevokeToken``), each committed in a transaction of its own with a store function: no caller
ships SQL or a closure here. A namespace create is decided against the registry this writer
holds, which no other task can change between the check and the commit.

After a commit that changed the namespace registry, records parked for their namespace
are re-applied in follow-up transactions (a page at a time, between batches), published
like any other new record.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import apsw
import trio

from spl.actors.loop import next_message
from spl.actors.messages import (
    AdoptDid,
    Committed,
    CreateNamespace,
    ImportBundle,
    Ingest,
    JoinsDue,
    MintToken,
    Reply,
    RevokeToken,
    WriterMessage,
    unavailable,
)
from spl.core.errors import InvalidRequest, SplError, StorageFull
from spl.core.fleet_control import UNFREEZE_KIND, FleetState
from spl.core.stored import Accepted, Candidate, Outcome, StoredRecord
from spl.core.tokens import TokenInfo
from spl.runtime.supervisor import ChildContext
from spl.store.database import connect_writer, storage_error, write_transaction
from spl.store.ingest import (
    IngestRequest,
    Reapplied,
    WriterState,
    check_pair_cursor,
    commit_batch,
    load_writer_state,
    reapply_parked,
)
from spl.store.portability import import_bundle
from spl.store.tokens import insert_token, revoke_token
from spl.store.verify_pool import VerifyPool

if TYPE_CHECKING:
    import outcome  # trio's own result type, as trio.lowlevel hands it over

__all__ = ["StoreWriter", "WriterClient", "accepted"]

T = TypeVar("T")

log = logging.getLogger("spl.writer")

IMPORT_WORKERS = 2  # verification processes of an import (this machine has 2 cores; the writer thread is the third)
# SQLite page cache of an import's transaction, in KiB when negative: 32 MiB keeps the daemon and its two
# verification workers within 200 MB at a million records (docs/performance.md)
IMPORT_CACHE_KIB = -32768
INTERNAL_MESSAGE = "the store writer could not commit this request (an internal error); see the daemon log"


class StoreWriter:
    """Actor body; ``run`` is the child's start function.

    Args:
        path: The store (``hub.db``).
        subscribers: Inboxes told about every committed record before anyone is answered.
        own_did: This instance's DID (its identifier).
        own_keys: Every key of the instance's rotation chain, read at each reload (``InstanceIdentity.own_keys``):
            only records one of them signed change the namespace registry or the kill switch. Default: ``own_did``.
        max_bytes: Cap on the store's size (``[store] max_bytes``); 0 = no cap.
        max_batch: Requests committed together at most.
    """

    def __init__(
        self,
        path: Path,
        subscribers: Sequence[trio.MemorySendChannel[object]],
        *,
        own_did: str,
        own_keys: Callable[[], Collection[str]] | None = None,
        max_bytes: int = 0,
        max_batch: int = 256,
    ) -> None:
        self._path = path
        self._subscribers = subscribers
        self._own_did = own_did
        self._own_keys = own_keys or (lambda: ())
        self._max_bytes = max_bytes
        self._max_batch = max_batch
        self._state: WriterState | None = None
        self._broken: SplError | None = None  # why the state could not be loaded (answers every ingest)
        self._full_since: float | None = None
        self._parked_due = False
        self.head_sequence = 0
        self.batches_committed = 0
        self.requests_failed = 0  # requests that failed alone after a group commit failed
        self.parked_applied = 0
        # Records committed since start by where they came from (/metrics: spl_records_committed_total{origin}).
        self.records_committed = {"local": 0, "pulled": 0, "pushed": 0, "import": 0, "parked": 0}
        self._last_fleet = FleetState()
        self.nudges: Sequence[trio.MemorySendChannel[object]] = ()  # the joiner's inbox, told of closes and forks

    @property
    def fleet(self) -> FleetState:
        """The kill switch as the last commit left it (read by the HTTP gate; the writer alone changes it).

        While the state cannot be loaded (a damaged store) the last one loaded stands: a freeze must not lift
        because the disk failed.
        """
        if self._state is not None:
            self._last_fleet = self._state.fleet
        return self._last_fleet

    @property
    def problem(self) -> str | None:
        """What keeps writes from succeeding right now, for ``/health`` (None: nothing)."""
        if self._broken is not None:
            return f"store writer: {self._broken.code}: {self._broken.message}"
        if self._full_since is not None:
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._full_since))
            return f"store writer: STORAGE_FULL since {since}: writes are refused until there is room"
        return None

    async def run(self, ctx: ChildContext) -> None:
        connection = await trio.to_thread.run_sync(
            functools.partial(connect_writer, self._path, max_bytes=self._max_bytes)
        )
        try:
            await self._reload(connection)
            self._parked_due = self._state is not None and self._state.parked > 0
            ctx.started()
            while True:
                if self._parked_due:
                    messages = self._take_queued(ctx, [])
                    if not messages:
                        if ctx.stop_requested.is_set():
                            return  # what is still parked is applied after the next start
                        await self._reapply_parked(connection)
                        continue
                else:
                    first = await next_message(ctx)
                    if first is None:
                        return  # graceful stop: everything queued was committed
                    messages = self._take_queued(ctx, [first])
                await self._handle(connection, messages)
        finally:
            connection.close()

    def _take_queued(self, ctx: ChildContext, messages: list[object]) -> list[object]:
        while len(messages) < self._max_batch:
            try:
                messages.append(ctx.receive_nowait())
            except trio.WouldBlock:
                break
        return messages

    async def _reload(self, connection: apsw.Connection) -> None:
        """Rebuild the in-memory state from disk (after a rollback it may be ahead of the disk).

        A storage failure leaves the writer up without a state: every ingest is answered
        with that failure until a later reload succeeds. Anything else is a bug and crashes
        the writer (the supervisor restarts it on a fresh connection).
        """

        try:
            self._state = await trio.to_thread.run_sync(load_writer_state, connection, self._own_did, self._own_keys())
        except Exception as exc:
            failure = storage_error(exc, volume=self._path.parent)
            if failure is None:
                raise
            self._state, self._broken = None, failure
            log.error("cannot load the writer's state (%s: %s); writes fail until it can", type(exc).__name__, exc)
            return
        self._broken = None
        self._last_fleet = self._state.fleet
        self.head_sequence = self._state.next_seq - 1

    async def _handle(self, connection: apsw.Connection, messages: list[object]) -> None:
        """Group-commit the ingests, then run the commands one by one, each in its own transaction.

        Commands are decided here, in the one task that writes: a namespace is checked against
        the registry this writer holds and committed before the next message is looked at, so
        two concurrent creates of one namespace cannot both pass the check.
        """
        ingests = [message for message in messages if isinstance(message, Ingest)]
        try:
            if ingests:
                if self._state is None:
                    await self._reload(connection)
                await self._commit_ingests(connection, ingests)
            for message in messages:
                match message:
                    case CreateNamespace():
                        await self._create_namespace(connection, message)
                    case MintToken(info=info, reply=reply):
                        await self._run_command(connection, functools.partial(insert_token, info=info), reply)
                    case RevokeToken(token_id=token_id, revoked_at=revoked_at, reply=reply):
                        revoke = functools.partial(revoke_token, token_id=token_id, revoked_at=revoked_at)
                        await self._run_command(connection, revoke, reply)
                    case ImportBundle():
                        await self._import(connection, message)
                    case AdoptDid(did=did, reply=reply):
                        self._own_did = did
                        await self._reload(connection)
                        reply.set(None)
        finally:
            for message in messages:
                if isinstance(message, WriterMessage):
                    message.reply.fail(unavailable("the store writer"))

    async def _commit_ingests(self, connection: apsw.Connection, ingests: list[Ingest]) -> None:
        state = self._state
        if state is None:
            assert self._broken is not None
            for ingest in ingests:
                ingest.reply.fail(self._broken)
            return
        registry_before = state.registry_changes
        requests = [
            IngestRequest(
                ingest.candidates,
                ingest.cursor,
                (ingest.cursor[0] if ingest.cursor else "push") if ingest.park_rejected else None,
            )
            for ingest in ingests
        ]
        try:
            outcomes = await in_worker_thread(functools.partial(commit_batch, connection, requests, state))
        except Exception as exc:
            # The transaction rolled back; the in-memory state may be ahead of the disk.
            await self._reload(connection)
            await self._failed(connection, ingests, exc)
            return
        # Committed: from here on every requester must get its answer, even if a stop
        # arrives meanwhile (the hub outlives the writer in the stop order).
        with trio.CancelScope(shield=True):
            self.batches_committed += 1
            self.head_sequence = state.next_seq - 1
            self._full_since = None
            await self._publish(
                [
                    outcome.record
                    for request in outcomes
                    for outcome in request
                    if isinstance(outcome, Accepted) and outcome.created
                ]
            )
            for ingest, request_outcomes in zip(ingests, outcomes, strict=True):
                origin = "local" if not ingest.park_rejected else "pulled" if ingest.cursor else "pushed"
                self.records_committed[origin] += sum(
                    1 for outcome in request_outcomes if isinstance(outcome, Accepted) and outcome.created
                )
                ingest.reply.set(request_outcomes)
        if state.registry_changes != registry_before:
            self._parked_due = True

    async def _failed(self, connection: apsw.Connection, ingests: list[Ingest], exc: Exception) -> None:
        """A commit of ``ingests`` raised ``exc``: answer a full disk at once, else find the request at fault."""
        failure = storage_error(exc, volume=self._path.parent)
        if isinstance(failure, StorageFull):
            if self._full_since is None:
                self._full_since = time.time()
                log.error("the store is full (%s: %s); refusing writes until there is room", type(exc).__name__, exc)
            for ingest in ingests:
                ingest.reply.fail(failure)
            return
        if len(ingests) > 1:
            log.warning(
                "a group commit of %d requests failed (%s); committing each alone", len(ingests), type(exc).__name__
            )
            for ingest in ingests:
                await self._commit_ingests(connection, [ingest])
            return
        self.requests_failed += 1
        if isinstance(exc, SplError):
            ingests[0].reply.fail(exc)  # the caller's own fault, already worded for it
        elif failure is not None:
            log.error("a write met a damaged store page (%s: %s)", type(exc).__name__, exc)
            ingests[0].reply.fail(failure)
        else:
            log.error("a write request failed and was rolled back", exc_info=exc)
            ingests[0].reply.fail(SplError(INTERNAL_MESSAGE))

    async def _reapply_parked(self, connection: apsw.Connection) -> None:
        """One follow-up transaction of parked records whose namespace is now accepted."""
        state = self._state
        if state is None:
            self._parked_due = False
            return
        registry_before = state.registry_changes
        try:
            result: Reapplied = await trio.to_thread.run_sync(functools.partial(reapply_parked, connection, state))
        except Exception as exc:
            await self._reload(connection)
            self._parked_due = False  # retried after the next registry change or restart
            if storage_error(exc, volume=self._path.parent) is None:
                log.error("re-applying parked records failed; they stay parked", exc_info=exc)
            else:
                log.error("re-applying parked records failed (%s: %s); they stay parked", type(exc).__name__, exc)
            return
        with trio.CancelScope(shield=True):
            self.head_sequence = state.next_seq - 1
            await self._publish(result.created)
        self.parked_applied += len(result.created)
        self.records_committed["parked"] += len(result.created)
        settled = len(result.created) + result.duplicates + result.refused
        if settled:
            log.info(
                "parked records: %d applied, %d already stored, %d dropped (refused for good)",
                len(result.created),
                result.duplicates,
                result.refused,
            )
        # Another page only if this one settled something: never spin on records that stay parked.
        self._parked_due = (result.more and settled > 0) or state.registry_changes != registry_before

    async def _publish(self, created: list[StoredRecord]) -> None:
        """Tell the subscribers (watchers) about new records before anyone is acknowledged.

        A subscriber with room in its inbox takes the batch at once; only a full inbox makes the
        writer wait (and so holds back the acknowledgements) until it has room. The joiner is only
        nudged, never waited for (see :func:`may_close_or_fork`).
        """
        if any(may_close_or_fork(record.json) for record in created):
            for inbox in self.nudges:
                try:
                    inbox.send_nowait(JoinsDue())
                except trio.WouldBlock:
                    pass  # a nudge is queued already: the sweep it asks for covers this commit too
        if created:
            message = Committed(created)
            for subscriber in self._subscribers:
                try:
                    subscriber.send_nowait(message)
                except trio.WouldBlock:
                    await subscriber.send(message)

    async def _create_namespace(self, connection: apsw.Connection, command: CreateNamespace) -> None:
        """Register a namespace if the registry allows it now; answered like an ingest of the record."""
        if self._state is None:
            await self._reload(connection)
        if self._state is None:
            assert self._broken is not None
            command.reply.fail(self._broken)
            return
        namespace = command.registration.envelope.body.get("namespace_id")
        try:
            if not isinstance(namespace, str):
                raise InvalidRequest("a namespace registration needs body.namespace_id", code="INVALID_NAMESPACE")
            self._state.namespaces.check_create(namespace)
        except SplError as exc:
            command.reply.fail(exc)
            return
        await self._commit_ingests(connection, [Ingest([command.registration], command.reply)])

    async def _import(self, connection: apsw.Connection, command: ImportBundle) -> None:
        """Verify and commit an import bundle in one transaction, then rebuild the state it moved (committed or not).

        Records are verified in worker processes (``VerifyPool``) while this thread inserts them; the page cache is
        raised for the transaction (a million random ids overflow the default 2 MiB and every insert then reads
        the id index from the OS). The state is reloaded from disk either way: a committed import moved the head,
        the thread rows and the clock; a rolled-back one may have left the memory ahead of the disk.
        """
        state = self._state
        if state is None:
            assert self._broken is not None
            command.reply.fail(self._broken)
            return

        def work(connection: apsw.Connection) -> Any:
            (previous,) = next(iter(connection.execute("PRAGMA cache_size")))
            connection.execute(f"PRAGMA cache_size = {IMPORT_CACHE_KIB}")
            try:
                with VerifyPool(IMPORT_WORKERS) as pool, open(command.spool, "rb") as src:
                    return import_bundle(
                        connection,
                        src,
                        state,
                        passphrase=command.passphrase,
                        force=command.force,
                        submit=pool.submit,
                        limits=command.limits,
                    )
            finally:
                connection.execute(f"PRAGMA cache_size = {int(previous)}")

        head_before = self.head_sequence
        try:
            await self._run_command(connection, work, command.reply)
        finally:
            await self._reload(connection)
            self.records_committed["import"] += max(0, self.head_sequence - head_before)

    async def _run_command(self, connection: apsw.Connection, work: Callable[..., T], reply: Reply[T]) -> None:
        """``work(connection)`` in one transaction of its own; a storage failure fails this command alone."""

        def run() -> T:
            with write_transaction(connection):
                return work(connection)

        try:
            result = await trio.to_thread.run_sync(run)
        except Exception as exc:
            failure = storage_error(exc, volume=self._path.parent)
            if isinstance(failure, StorageFull) and self._full_since is None:
                self._full_since = time.time()
            if failure is None and not isinstance(exc, SplError):
                log.error("a write command failed and was rolled back", exc_info=exc)
                failure = SplError(INTERNAL_MESSAGE)
            reply.fail(failure or exc)
            return
        reply.set(result)


# Body keys of the records that can close a thread or fork one (spl.core.fold, spl.core.tasks, spl.store.tasks).
_CLOSE_OR_FORK_KEYS = ('"fulfills"', '"cancels"', '"verdict"', '"task_event"', '"sub_thread"', '"join"')
# ... and the record that lifts a freeze: child closes held by `spl kill --hard` are synthesised at once after it.
_THAW_KIND = f'"{UNFREEZE_KIND}"'


def may_close_or_fork(text: str) -> bool:
    """Whether a stored record's JSON may close or fork a thread: a few substring tests, no parse.

    A false positive costs the joiner one indexed read of an empty outbox; a record that closes a thread
    always names one of these keys.
    """
    return any(key in text for key in _CLOSE_OR_FORK_KEYS) or _THAW_KIND in text


async def in_worker_thread(work: Callable[[], T]) -> T:
    """``work()`` in one of trio's cached worker threads; the caller waits, uncancellable, until it returns.

    What ``trio.to_thread.run_sync(work)`` does for the writer, without the machinery the writer does not
    use (a capacity limiter, a copy of the context variables, abandoning a thread on cancel): that costs
    about 25 µs per call, and a group commit is one call — one per emit when emits arrive one at a time
    (issue 9). Like ``to_thread.run_sync`` without ``abandon_on_cancel``, a cancel waits for ``work``:
    a transaction is never left running behind the writer's back.
    """
    await trio.lowlevel.checkpoint_if_cancelled()
    task = trio.lowlevel.current_task()
    token = trio.lowlevel.current_trio_token()

    def deliver(result: outcome.Outcome[T]) -> None:  # in the worker thread
        token.run_sync_soon(trio.lowlevel.reschedule, task, result)

    trio.lowlevel.start_thread_soon(work, deliver)
    result: T = await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
    return result


class WriterClient:
    """What request handlers hold: send work to the writer's inbox and await the answer."""

    def __init__(self, inbox: trio.MemorySendChannel[object]) -> None:
        self._inbox = inbox

    async def ingest(
        self,
        candidates: Sequence[Candidate],
        *,
        cursor: tuple[str, str] | None = None,
        park_rejected: bool = False,
    ) -> list[Outcome]:
        """Commit ``candidates``; one outcome each.

        Args:
            cursor: ``(pair_id, the peer's cursor)``: saved in the same transaction.
            park_rejected: Park records refused with ``NAMESPACE_REJECTED`` (pulls, pushes).

        Raises:
            InvalidRequest: ``cursor`` is not at most 256 printable ASCII characters.
            StorageFull, StoreCorrupt, SplError: the commit failed (nothing was stored).
        """
        if cursor is not None:
            check_pair_cursor(cursor)
        reply: Reply[list[Outcome]] = Reply()
        await self._send(Ingest(candidates, reply, cursor, park_rejected))
        return await reply.get()

    async def create_namespace(self, registration: Candidate) -> Accepted:
        """Commit a namespace registration record if the registry allows it at this moment.

        Raises:
            Conflict: 409 ``ALREADY_EXISTS``.
            InvalidRequest: 400 ``PARENT_NAMESPACE_MISSING``.
            StorageFull, StoreCorrupt, SplError: the commit failed.
        """
        reply: Reply[list[Outcome]] = Reply()
        await self._send(CreateNamespace(registration, reply))
        (outcome,) = await reply.get()
        return accepted(outcome)

    async def mint_token(self, info: TokenInfo) -> None:
        """Store a new token's metadata; durable when this returns."""
        reply: Reply[None] = Reply()
        await self._send(MintToken(info, reply))
        await reply.get()

    async def import_bundle(self, spool: Path, *, passphrase: bytes | None, force: bool, limits: Any) -> Any:
        """Verify and commit a bundle in one transaction; ``(ImportSummary, VerifiedBundle)``. Other writes wait.

        Raises:
            ImportRefused, ForeignTokens, BundleMalformed, BundleSignatureInvalid: nothing was written.
            StorageFull, StoreCorrupt, SplError: the commit failed (nothing was written).
        """
        reply: Reply[Any] = Reply()
        await self._send(ImportBundle(str(spool), passphrase, force, limits, reply))
        return await reply.get()

    async def adopt_did(self, did: str) -> None:
        """Fold the registries as ``did``'s from now on (after an import adopted that identity, or a rotation added
        a key: the writer reads the keys again as it reloads)."""
        reply: Reply[None] = Reply()
        await self._send(AdoptDid(did, reply))
        await reply.get()

    async def revoke_token(self, token_id: str, revoked_at: float) -> bool:
        """Mark a token revoked; False when it was not active (nothing changed)."""
        reply: Reply[bool] = Reply()
        await self._send(RevokeToken(token_id, revoked_at, reply))
        return await reply.get()

    async def _send(self, message: object) -> None:
        """Queue ``message``; waits only while the inbox is full.

        Every caller then awaits the reply, which is where it yields to the scheduler: a send that
        yielded as well would cost every emit one more trip through trio's run loop (issue 9).
        """
        try:
            try:
                self._inbox.send_nowait(message)
            except trio.WouldBlock:
                await self._inbox.send(message)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise unavailable("the store writer") from None


def accepted(outcome: Outcome) -> Accepted:
    """The stored record of an outcome, or its refusal raised (for callers that answer one record)."""
    if isinstance(outcome, SplError):
        raise outcome
    return outcome
