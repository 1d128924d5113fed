"""Committing a batch of records in one transaction (the writer's pure-SQL core).

Called only by the store-writer actor, in a worker thread, on the single write
connection. One batch = one ``BEGIN IMMEDIATE … COMMIT`` (group commit: many concurrent
emits share one fsync). Per record: an exact re-submission is answered with the stored
record (idempotent ingest), a different record on the same (thread, actor, clock) is a
``DuplicateClock``, a namespace that is not active is ``NamespaceRejected``. Anything
unexpected rolls the whole batch back and propagates; the writer then retries each
request alone, so only the one at fault fails. The same transaction keeps every touched
thread's projections current (``spl.store.threads``: its row and fold, participants,
ordinals, clock marks), so no read ever has to replay or count a thread.

Three rules keep what a peer sends from steering this instance:

- a pair's cursor is the peer's opaque string (spec §15.20), stored as given next to the
  records it covers (last write wins: the reconciler commits a pair's pages in order);
- the namespace registry folds only records signed by this instance's own key (spec
  §15.18), so a record on ``th_namespace_registry`` from anyone else never changes it;
- a pulled or pushed record refused only because its namespace is not registered yet is
  *parked* (``parked_records``, bounded) and applied by :func:`reapply_parked` once the
  registry accepts it, instead of being lost for good.

The kill switch (``spl.core.fleet_control``, folded from ``th_fleet_control``) is asked before every record;
a peer's page it refuses is refused whole and its cursor stays, and nothing parked is re-applied while it holds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import apsw

from spl.core.errors import DuplicateClock, InvalidRecord, InvalidRequest, NamespaceRejected, SplError
from spl.core.fleet_control import FLEET_THREAD, FleetFrozen, FleetState
from spl.core.namespaces import REGISTRY_THREAD, NamespaceRegistry
from spl.core.record import Envelope, validate_envelope
from spl.core.reserved import is_reserved
from spl.core.rotation import owns
from spl.core.stored import Accepted, Candidate, Outcome, StoredRecord, parked_json, stored_json, stored_json_from_head
from spl.store.database import write_transaction
from spl.store.queries import thread_objects
from spl.store.threads import StoreClock, ThreadBook, ThreadCache, store_clock

__all__ = [
    "MAX_CURSOR_LENGTH",
    "MAX_PARKED",
    "MAX_PARKED_BYTES",
    "IngestRequest",
    "Reapplied",
    "WriterState",
    "check_pair_cursor",
    "commit_batch",
    "insert_imported",
    "new_import_transaction",
    "load_writer_state",
    "namespace_registry",
    "reapply_parked",
]

MAX_CURSOR_LENGTH = 256
# parked_records holds at most this many rows and bytes of record JSON; beyond, a refusal is
# counted (meta ``parked_dropped``) instead of parked. The byte bound matters because a
# parked record is one the operator never accepted: a peer must not fill the disk with them.
MAX_PARKED = 100_000
MAX_PARKED_BYTES = 256 << 20


@dataclass(frozen=True, slots=True)
class IngestRequest:
    """One requester's share of a transaction.

    Attributes:
        candidates: Its records, answered with one outcome each.
        cursor: ``(pair_id, the peer's cursor)``, saved in the same transaction as the records.
        park_origin: Where the records came from (a pair id or ``"push"``); when set, a record
            refused with ``NAMESPACE_REJECTED`` is parked rather than dropped.
    """

    candidates: Sequence[Candidate]
    cursor: tuple[str, str] | None = None
    park_origin: str | None = None


@dataclass
class WriterState:
    """What the writer keeps in memory between batches; rebuilt from disk at start and after a failure."""

    own_did: str  # the instance's identifier (its inception key; spl.core.rotation)
    next_seq: int = 1
    namespaces: NamespaceRegistry = field(default_factory=NamespaceRegistry)
    registry_changes: int = 0  # bumped on every change: the writer then re-applies parked records
    parked: int = 0  # rows in parked_records
    parked_bytes: int = 0  # and the size of their JSON
    threads: ThreadCache = field(default_factory=ThreadCache)  # recently written threads' rows
    clock: StoreClock = field(default_factory=StoreClock)  # the highest clock stored
    fleet: FleetState = field(default_factory=FleetState)  # the kill switch (th_fleet_control), own records only
    # Every key of the instance's rotation chain: only records one of them signed change the namespace registry or
    # the kill switch, or count as the joiner's (empty: ``own_did`` is the only key).
    own_keys: frozenset[str] = frozenset()

    @property
    def own(self) -> frozenset[str] | str:
        """What "signed by this instance" is checked against (``spl.core.rotation.owns``)."""
        return self.own_keys or self.own_did


def namespace_registry(connection: apsw.Connection, own_did: str | Collection[str]) -> NamespaceRegistry:
    """The namespace registry as the writer folds it: only records ``own_did`` signed count (spec §15.18)."""
    return NamespaceRegistry.folded(thread_objects(connection, REGISTRY_THREAD), own_did)


def load_writer_state(connection: apsw.Connection, own_did: str, own_keys: Collection[str] = ()) -> WriterState:
    """Rebuild the writer's memory from the store (head sequence, namespace registry, parked count).

    A transaction left open by a failed batch is rolled back first: the memory may be ahead
    of the disk, and only what committed counts.
    """
    if connection.in_transaction:  # a batch that failed half-way: the memory is rebuilt from what committed
        connection.execute("ROLLBACK")
    state = WriterState(own_did, own_keys=frozenset(own_keys))
    for (head,) in connection.execute("SELECT COALESCE(MAX(seq), 0) FROM records"):
        state.next_seq = int(head) + 1
    state.namespaces = namespace_registry(connection, state.own)
    state.clock = store_clock(connection)
    state.fleet = FleetState.folded(thread_objects(connection, FLEET_THREAD), state.own)
    for count, size in connection.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM parked_records"):
        state.parked, state.parked_bytes = int(count), int(size)
    return state


def check_pair_cursor(cursor: object) -> tuple[str, str]:
    """Accept ``(pair_id, cursor)`` with a cursor of at most 256 printable ASCII characters (spec §15.20).

    The cursor is opaque (never parsed) but bounded: it is stored and sent back to the peer.
    """
    if (
        not isinstance(cursor, tuple)
        or len(cursor) != 2
        or not isinstance(cursor[0], str)
        or not isinstance(cursor[1], str)
    ):
        raise InvalidRequest("a pair cursor is (pair_id, the peer's cursor string)", code="INVALID_CURSOR")
    pair_id, value = cursor
    if not pair_id or len(value) > MAX_CURSOR_LENGTH or not all(" " <= char <= "~" for char in value):
        raise InvalidRequest(
            f"the peer's cursor must be at most {MAX_CURSOR_LENGTH} printable ASCII characters", code="INVALID_CURSOR"
        )
    return pair_id, value


def _existing(connection: apsw.Connection, record_id: str) -> StoredRecord | None:
    for seq, thread, text in connection.execute("SELECT seq, thread, json FROM records WHERE id = ?", (record_id,)):
        return StoredRecord(int(seq), record_id, thread, text)
    return None


@dataclass
class _Transaction:
    """Bookkeeping of one transaction: the threads it changed, refusals it could not park."""

    now: float
    threads: ThreadBook
    not_parked: int = 0


def _insert(
    connection: apsw.Connection, candidate: Candidate, seq: int, ordinal: int, now: float, head: str | None = None
) -> StoredRecord | None:
    """Insert one record; ``None`` when its id is stored already (an exact re-submission).

    Raises ``apsw.ConstraintError`` when its (thread, actor, clock) is taken. The unique
    indexes answer both questions, so no SELECT runs before every insert.
    """
    envelope = candidate.envelope
    if head is not None:  # built by an import's verification worker (spl.core.stored.stored_json_head)
        text = stored_json_from_head(head, seq=seq, created_at=now)
    else:
        text = stored_json(envelope, signer=candidate.signer, sig=candidate.sig, seq=seq, created_at=now)
    connection.execute(
        "INSERT INTO records(seq, id, thread, actor, act, clock, namespace, json, created_at, ordinal) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING",
        (
            seq,
            envelope.id,
            envelope.thread,
            envelope.actor,
            envelope.act,
            envelope.clock,
            envelope.namespace,
            text,
            now,
            ordinal,
        ),
    )
    if not connection.changes():
        return None
    return StoredRecord(seq, envelope.id, envelope.thread, text)


def _park(
    connection: apsw.Connection,
    candidate: Candidate,
    origin: str,
    refusal: SplError,
    state: WriterState,
    tx: _Transaction,
) -> SplError:
    """Keep a record refused only for its namespace, to apply it once the namespace is registered."""
    envelope = candidate.envelope
    text = parked_json(envelope, signer=candidate.signer, sig=candidate.sig)
    if state.parked >= MAX_PARKED or state.parked_bytes + len(text) > MAX_PARKED_BYTES:
        tx.not_parked += 1
        return NamespaceRejected(f"{refusal.message} (not parked: too many records already wait for a namespace)")
    connection.execute(
        "INSERT INTO parked_records(id, namespace, origin, reason, size, json, parked_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING",
        (envelope.id, envelope.namespace, origin, refusal.message, len(text), text, tx.now),
    )
    if connection.changes():
        state.parked += 1
        state.parked_bytes += len(text)
    return NamespaceRejected(f"{refusal.message} (parked: it is applied once the namespace is registered)")


def _apply_one(
    connection: apsw.Connection,
    candidate: Candidate,
    state: WriterState,
    tx: _Transaction,
    park_origin: str | None,
    *,
    local: bool | None = None,
) -> Outcome:
    """Commit one candidate. ``local`` (default: not from a peer) makes a task alias clash an error."""
    envelope = candidate.envelope
    refusal = state.fleet.refusal(write_origin(envelope.thread, park_origin), envelope.act)
    if refusal is not None:
        return refusal
    try:
        state.namespaces.check(envelope.namespace)
    except NamespaceRejected as exc:
        existing = _existing(connection, envelope.id)  # a record stored before its namespace closed
        if existing is not None:
            return Accepted(existing, created=False)
        return exc if park_origin is None else _park(connection, candidate, park_origin, exc, state, tx)
    seq = state.next_seq
    ordinal = tx.threads.next_ordinal(connection, envelope.thread, envelope.namespace)
    try:
        stored = _insert(connection, candidate, seq, ordinal, tx.now)
    except apsw.ConstraintError:
        existing = _existing(connection, envelope.id)
        if existing is not None:
            return Accepted(existing, created=False)
        return DuplicateClock(envelope.thread, envelope.actor, envelope.clock)
    if stored is None:
        existing = _existing(connection, envelope.id)
        assert existing is not None  # the id index just said so, in this transaction
        return Accepted(existing, created=False)
    state.next_seq += 1
    _project(
        connection, tx, envelope, seq, signer=candidate.signer, local=park_origin is None if local is None else local
    )
    own = owns(state.own, candidate.signer)
    if own and state.namespaces.apply(envelope.thread, envelope.act, envelope.body, envelope.id, envelope.clock):
        state.registry_changes += 1
    if own and envelope.thread == FLEET_THREAD:
        frozen = state.fleet.frozen
        state.fleet.apply(envelope.act, envelope.body, envelope.id, envelope.clock)
        if frozen and not state.fleet.frozen:
            state.registry_changes += 1  # thawed: the writer re-applies what stayed parked during the freeze
    return Accepted(stored, created=True)


def _frozen_page(request: IngestRequest, state: WriterState) -> FleetFrozen | None:
    """The kill switch's refusal of a peer's page or push when it refuses any record of it, else None.

    A page from a peer is all or nothing under a freeze: had its other records been stored and only the
    refused ones answered, the pair's cursor would move past those and they would never be pulled again.
    Refused whole, nothing of it is stored, the cursor stays, and the pair (or pusher) retries later.
    """
    if request.park_origin is None or not state.fleet.frozen:
        return None
    origin = write_origin("", request.park_origin)
    for candidate in request.candidates:
        refusal = state.fleet.refusal(origin, candidate.envelope.act)
        if refusal is not None:
            return refusal
    return None


def write_origin(thread: str, park_origin: str | None) -> str:
    """Where a write comes from, for the kill switch (``spl.core.fleet_control.ORIGINS``).

    Pulled and pushed records are parked by origin (a pair id, or ``"push"``); a local write on a
    reserved thread is this instance's own configuration (only its routes write there).
    """
    if park_origin == "push":
        return "push"
    if park_origin is not None:
        return "pull"
    return "system" if is_reserved(thread) else "client"


def _project(
    connection: apsw.Connection,
    tx: _Transaction,
    envelope: Envelope,
    seq: int,
    *,
    signer: str | None = None,
    local: bool = False,
) -> None:
    """Fold a record just inserted at ``seq`` into its thread's projections (``spl.store.threads``)."""
    tx.threads.add(
        connection,
        thread=envelope.thread,
        seq=seq,
        record_id=envelope.id,
        actor=envelope.actor,
        act=envelope.act,
        clock=envelope.clock,
        body=envelope.body,
        stored_at=tx.now,
        signer=signer,
        local=local,
    )


def _finish(connection: apsw.Connection, tx: _Transaction) -> None:
    tx.threads.flush(connection)
    if tx.not_parked:
        connection.execute(
            "INSERT INTO meta(key, value) VALUES ('parked_dropped', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + CAST(excluded.value AS INTEGER)",
            (str(tx.not_parked),),
        )


def new_import_transaction(state: WriterState, now: float) -> _Transaction:
    """The bookkeeping of an import's one transaction (``spl.store.portability.commit_bundle``)."""
    return _Transaction(now, ThreadBook(state.threads, state.clock, state.own))


def insert_imported(
    connection: apsw.Connection, candidate: Candidate, state: WriterState, tx: _Transaction, head: str | None = None
) -> str:
    """Insert one verified record of an import bundle: ``inserted``, ``deduplicated`` or ``DUPLICATE_CLOCK``.

    Unlike :func:`commit_batch`, the namespace registry is not consulted: the bundle restores a log its source
    already accepted, and its namespace registrations arrive as records of the same log (they fold once the
    identity that signed them is adopted). A record whose (thread, actor, clock) is taken here by another id is
    skipped and counted (spec §9: ``records_skipped``), never stored beside it. The caller holds the transaction
    and flushes ``tx.threads`` (at the end, and every few thousand records to bound its memory).
    """
    envelope = candidate.envelope
    seq = state.next_seq
    ordinal = tx.threads.next_ordinal(connection, envelope.thread, envelope.namespace)
    try:
        stored = _insert(connection, candidate, seq, ordinal, tx.now, head)
    except apsw.ConstraintError:
        return "deduplicated" if _existing(connection, envelope.id) is not None else DuplicateClock.code
    if stored is None:
        return "deduplicated"
    state.next_seq += 1
    _project(connection, tx, envelope, seq, signer=candidate.signer)
    return "inserted"


def commit_batch(
    connection: apsw.Connection,
    batches: Sequence[Sequence[Candidate] | IngestRequest],
    state: WriterState,
    *,
    clock: Callable[[], float] = time.time,
) -> list[list[Outcome]]:
    """Commit several requests in one transaction; one outcome list per request.

    A batch is an :class:`IngestRequest` or just its candidates. Each request's cursor is
    saved in the same transaction after the records (a pair's cursor never moves past
    records that did not commit). Cursors are checked before the transaction starts. On
    any exception the transaction is rolled back, ``state`` is left for the caller to
    reload, and the exception propagates.
    """
    requests = [batch if isinstance(batch, IngestRequest) else IngestRequest(batch) for batch in batches]
    for request in requests:
        if request.cursor is not None:
            check_pair_cursor(request.cursor)
    tx = _Transaction(clock(), ThreadBook(state.threads, state.clock, state.own))
    with write_transaction(connection):
        outcomes: list[list[Outcome]] = []
        for request in requests:
            frozen = _frozen_page(request, state)
            if frozen is not None:
                outcomes.append([frozen] * len(request.candidates))
                continue
            outcomes.append(
                [_apply_one(connection, candidate, state, tx, request.park_origin) for candidate in request.candidates]
            )
        _finish(connection, tx)
        for request, request_outcomes in zip(requests, outcomes, strict=True):
            if any(isinstance(outcome, FleetFrozen) for outcome in request_outcomes):
                continue  # the pair's cursor stays: the page is pulled again once the freeze is lifted
            if request.cursor is not None:
                connection.execute(
                    "INSERT INTO pair_cursors(pair_id, cursor, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(pair_id) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
                    (*request.cursor, tx.now),
                )
    return outcomes


@dataclass
class Reapplied:
    """What one :func:`reapply_parked` transaction did."""

    created: list[StoredRecord] = field(default_factory=list)
    duplicates: int = 0  # already stored by another path meanwhile
    refused: int = 0  # refused for a reason that does not change (duplicate clock, unreadable): dropped
    more: bool = False  # parked records of accepted namespaces remain: call again


def reapply_parked(
    connection: apsw.Connection, state: WriterState, *, limit: int = 1000, clock: Callable[[], float] = time.time
) -> Reapplied:
    """Apply up to ``limit`` parked records whose namespace the registry now accepts, in one transaction.

    Applied (or settled) records leave ``parked_records`` in the same transaction that
    stores them, so a crash can neither lose nor double-apply one. They were verified
    before they were parked; the id is still recomputed from the stored fields so a
    damaged row is dropped rather than stored under the wrong id. Records the writer
    still refuses for their namespace (an ancestor was archived meanwhile) stay parked.
    """
    result = Reapplied()
    if state.fleet.frozen:
        # Parked records came from peers: under a freeze they wait where they are (re-applied, they would be
        # refused and dropped). Lifting the freeze counts as a registry change, so the writer calls again then.
        return result
    accepted: list[str] = []
    for (namespace,) in connection.execute("SELECT DISTINCT namespace FROM parked_records"):
        try:
            state.namespaces.check(namespace)
        except SplError:
            continue
        accepted.append(namespace)
    if not accepted:
        return result
    tx = _Transaction(clock(), ThreadBook(state.threads, state.clock, state.own))
    with write_transaction(connection):
        taken = 0
        for namespace in accepted:
            rows = list(
                connection.execute(
                    "SELECT rowid, id, size, json FROM parked_records WHERE namespace = ? ORDER BY rowid LIMIT ?",
                    (namespace, limit - taken + 1),
                )
            )
            if len(rows) > limit - taken:
                rows, result.more = rows[: limit - taken], True
            for rowid, record_id, size, text in rows:
                outcome = _reapply_one(connection, record_id, text, state, tx)
                if isinstance(outcome, NamespaceRejected):
                    continue
                if isinstance(outcome, Accepted):
                    if outcome.created:
                        result.created.append(outcome.record)
                    else:
                        result.duplicates += 1
                else:
                    result.refused += 1
                connection.execute("DELETE FROM parked_records WHERE rowid = ?", (rowid,))
                state.parked -= 1
                state.parked_bytes -= int(size)
            taken += len(rows)
            if taken >= limit:
                result.more = True
                break
        _finish(connection, tx)
    return result


def _reapply_one(
    connection: apsw.Connection, record_id: str, text: str, state: WriterState, tx: _Transaction
) -> Outcome:
    try:
        fields = json.loads(text)
        envelope = validate_envelope(fields)
        signer, sig = fields["signer"], fields["sig"]
    except (ValueError, KeyError, TypeError, SplError):
        return InvalidRecord("record", "a parked record could not be read back")
    if envelope.id != record_id or not isinstance(signer, str) or not isinstance(sig, str):
        return InvalidRecord("record", "a parked record does not match its id")
    return _apply_one(connection, Candidate(envelope, signer, sig), state, tx, None, local=False)
