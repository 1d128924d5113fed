"""Committing a batch of records in one transaction (the writer's pure-SQL core).

Called only by the store-writer actor, in a worker thread, on the single write
connection. One batch = one ``BEGIN IMMEDIATE … COMMIT`` (group commit: many concurrent
emits share one fsync). Per record: an exact re-submission is answered with the stored
record (idempotent ingest), a different record on the same (thread, actor, clock) is a
``DuplicateClock``, a namespace that is not active is ``NamespaceRejected``. Anything
unexpected rolls the whole batch back and propagates.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import apsw

from spl.kernel.errors import DuplicateClock, SplError
from spl.kernel.namespaces import NamespaceRegistry
from spl.kernel.record import Envelope
from spl.kernel.store import StoredRecord, stored_json

__all__ = ["Accepted", "Candidate", "WriterState", "commit_batch", "load_writer_state"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A validated record plus who vouches for it (``signer``/``sig``)."""

    envelope: Envelope
    signer: str
    sig: str


@dataclass(frozen=True, slots=True)
class Accepted:
    record: StoredRecord
    created: bool  # False: it was already stored (idempotent re-submission or replay)


Outcome = Accepted | SplError


@dataclass
class WriterState:
    """What the writer keeps in memory between batches; rebuilt from disk at start."""

    next_seq: int = 1
    namespaces: NamespaceRegistry = field(default_factory=NamespaceRegistry)


def load_writer_state(connection: apsw.Connection) -> WriterState:
    """Rebuild the writer's memory from the store (head sequence, namespace registry)."""
    import json

    from spl.kernel.namespaces import REGISTRY_THREAD

    state = WriterState()
    for (head,) in connection.execute("SELECT COALESCE(MAX(seq), 0) FROM records"):
        state.next_seq = int(head) + 1
    rows = connection.execute("SELECT json FROM records WHERE thread = ? ORDER BY seq", (REGISTRY_THREAD,))
    for (text,) in rows:
        record = json.loads(text)
        state.namespaces.apply(record["thread"], record["act"], record["body"], record["id"], record["clock"])
    return state


def _existing(connection: apsw.Connection, record_id: str) -> StoredRecord | None:
    for seq, thread, text in connection.execute("SELECT seq, thread, json FROM records WHERE id = ?", (record_id,)):
        return StoredRecord(int(seq), record_id, thread, text)
    return None


@dataclass
class _ThreadTouch:
    """What one transaction did to one thread, folded into one ``threads`` upsert."""

    namespace: str
    count: int
    last_clock: int
    first_seq: int
    last_seq: int

    def add(self, clock: int, seq: int) -> None:
        self.count += 1
        self.last_clock = max(self.last_clock, clock)
        self.last_seq = seq


def _insert(connection: apsw.Connection, candidate: Candidate, seq: int, now: float) -> StoredRecord:
    """Insert one record; raises ``apsw.ConstraintError`` when its (thread, actor, clock) is taken."""
    envelope = candidate.envelope
    text = stored_json(envelope, signer=candidate.signer, sig=candidate.sig, seq=seq, created_at=now)
    connection.execute(
        "INSERT INTO records(seq, id, thread, actor, act, clock, namespace, json, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        ),
    )
    return StoredRecord(seq, envelope.id, envelope.thread, text)


def _upsert_threads(connection: apsw.Connection, touched: dict[str, _ThreadTouch], now: float) -> None:
    for thread, touch in touched.items():
        connection.execute(
            "INSERT INTO threads(thread, namespace, record_count, last_clock, first_seq, last_seq, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(thread) DO UPDATE SET record_count = record_count + excluded.record_count, "
            "last_clock = MAX(last_clock, excluded.last_clock), last_seq = excluded.last_seq, "
            "updated_at = excluded.updated_at",
            (thread, touch.namespace, touch.count, touch.last_clock, touch.first_seq, touch.last_seq, now),
        )


def _apply_one(
    connection: apsw.Connection,
    candidate: Candidate,
    state: WriterState,
    now: float,
    touched: dict[str, _ThreadTouch],
) -> Outcome:
    envelope = candidate.envelope
    existing = _existing(connection, envelope.id)
    if existing is not None:
        return Accepted(existing, created=False)
    try:
        state.namespaces.check(envelope.namespace)
    except SplError as exc:
        return exc
    seq = state.next_seq
    try:
        stored = _insert(connection, candidate, seq, now)
    except apsw.ConstraintError:
        # The id is new (checked above), so the unique (thread, actor, clock) index refused it:
        # one index probe instead of a SELECT before every insert.
        return DuplicateClock(envelope.thread, envelope.actor, envelope.clock)
    state.next_seq += 1
    touch = touched.get(envelope.thread)
    if touch is None:
        touched[envelope.thread] = _ThreadTouch(envelope.namespace, 1, envelope.clock, seq, seq)
    else:
        touch.add(envelope.clock, seq)
    state.namespaces.apply(envelope.thread, envelope.act, envelope.body, envelope.id, envelope.clock)
    return Accepted(stored, created=True)


def commit_batch(
    connection: apsw.Connection,
    batches: Sequence[Sequence[Candidate]],
    state: WriterState,
    *,
    extra: Callable[[apsw.Connection, list[list[Outcome]]], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> list[list[Outcome]]:
    """Commit several requests' candidates in one transaction; one outcome list per request.

    ``extra`` runs inside the same transaction after the records (a federation pair uses
    it to move its cursor together with the records it covers). On any exception the
    transaction is rolled back, ``state`` is left for the caller to reload, and the
    exception propagates.
    """
    now = clock()
    connection.execute("BEGIN IMMEDIATE")
    try:
        touched: dict[str, _ThreadTouch] = {}
        outcomes = [
            [_apply_one(connection, candidate, state, now, touched) for candidate in batch] for batch in batches
        ]
        _upsert_threads(connection, touched, now)
        if extra is not None:
            extra(connection, outcomes)
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return outcomes
