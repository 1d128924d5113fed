"""Per-thread projections kept current inside every commit: what makes reads cost the same at any size.

For each thread the store keeps, in the same transaction as the records themselves:

- its ``threads`` row: namespace, record count, highest clock, first and last sequence, and
  the fold's head (state, opener, closer) — so ``GET /v1/threads/{id}`` reads one row
  instead of replaying the thread (a million-record thread took 5.6 s to fold cold);
- ``thread_participants``: one row per actor with its record count and role;
- each record's ``ordinal`` (its position in its thread, from 1): a change page's
  ``pending`` is ``record_count - ordinal`` — arithmetic, not a ``COUNT(*)`` that made a
  catch-up quadratic;
- ``clock_marks``: every :data:`MARK_EVERY`-th record of a thread, the highest clock seen
  in the thread up to it. The highest clock only grows along the sequence, so the last
  mark whose clock is ``<= since`` says where a ``since=<clock>`` read may start: no record
  before it can match. A read then walks at most about one mark interval of records that
  do not match, instead of the whole thread.

:class:`ThreadBook` is one transaction's bookkeeping (the writer's ``commit_batch`` and the
schema upgrade both drive it); :func:`rebuild_threads` recomputes every projection from
the records, which is how a store written by an older spl is brought up to date.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import apsw

from spl.core import tasks as task_fold
from spl.core.fold import ROLE_RANK, FoldHead, step
from spl.core.rotation import owns
from spl.store import tasks as task_store

__all__ = [
    "ALL_THREADS",
    "MARK_EVERY",
    "StoreClock",
    "ThreadBook",
    "ThreadCache",
    "rebuild_threads",
    "since_start",
    "store_clock",
]

MARK_EVERY = 256  # records between two clock marks of a thread: the most a since=<clock> read skips past
# The clock marks of the whole store (for a since= read not limited to one thread) use this key:
# never a thread's name, which a record's validation keeps non-empty.
ALL_THREADS = ""


@dataclass
class StoreClock:
    """The highest clock stored so far in the whole store: the value of its next store-wide mark."""

    highest: int = 0


def store_clock(connection: apsw.Connection) -> StoreClock:
    """The store's highest clock, from its last store-wide mark and the fewer than ``MARK_EVERY`` records after it."""
    highest, after = 0, 0
    for clock, seq in connection.execute(
        "SELECT clock, seq FROM clock_marks WHERE thread = ? ORDER BY clock DESC, seq DESC LIMIT 1", (ALL_THREADS,)
    ):
        highest, after = int(clock), int(seq)
    for (clock,) in connection.execute("SELECT MAX(clock) FROM records WHERE seq > ?", (after,)):
        if clock is not None:
            highest = max(highest, int(clock))
    return StoreClock(highest)


@dataclass
class _Touch:
    """One thread as one transaction leaves it: its row's values and what changed beneath it."""

    namespace: str
    count: int  # the thread's record count, this transaction's records included
    last_clock: int
    first_seq: int
    last_seq: int
    head: FoldHead
    updated_at: float = 0.0  # when its newest record was stored
    added: int = 0  # records this transaction added (0: the row is left alone)
    participants: dict[str, list[int]] = field(default_factory=dict)  # actor -> [records added, role rank]
    marks: list[tuple[int, int]] = field(default_factory=list)  # (highest clock so far, sequence)
    task: task_fold.TaskHead | None = None  # the task fold, when the thread's opening INTEND opened a task
    task_opened_seq: int = 0
    task_new: bool = False  # opened in this transaction: its labels are indexed at flush
    task_dirty: bool = False

    def status(self) -> str:
        """The thread's status as its parents see it: the task fold's for a task, the thread fold's otherwise."""
        return self.task.status if self.task is not None else self.head.state

    def closer(self) -> str | None:
        return self.task.closed_by if self.task is not None else self.head.closed_by


CLOSED = frozenset({"done", "failed", "cancelled"})


class ThreadCache:
    """The rows of recently written threads, as the last commit left them: saves a SELECT per thread per commit.

    Owned by the writer's in-memory state, which is thrown away and rebuilt from disk after any
    failed transaction, so a row here is never ahead of what committed. Bounded (LRU).
    """

    def __init__(self, capacity: int = 8192) -> None:
        self._capacity = capacity
        self._rows: OrderedDict[str, _Touch] = OrderedDict()

    def take(self, thread: str) -> _Touch | None:
        return self._rows.pop(thread, None)

    def keep(self, thread: str, touch: _Touch) -> None:
        touch.added, touch.participants, touch.marks = 0, {}, []
        touch.task_new = touch.task_dirty = False
        self._rows[thread] = touch
        if len(self._rows) > self._capacity:
            self._rows.popitem(last=False)


class ThreadBook:
    """The thread projections one transaction changes; :meth:`flush` writes them before its COMMIT."""

    def __init__(
        self,
        cache: ThreadCache | None = None,
        clock: StoreClock | None = None,
        own_did: str | Collection[str] | None = None,
    ) -> None:
        self._touched: dict[str, _Touch] = {}
        # Every key of the instance's rotation chain (or its one DID). None (a rebuild): a synthesis counts when
        # its signer is its actor.
        self._own_did = own_did
        self._new_aliases: dict[str, str] = {}  # task aliases opened in this transaction -> thread
        self._cache = cache
        self._clock = clock if clock is not None else StoreClock()
        self._store_marks: list[tuple[int, int]] = []  # (highest clock in the store so far, sequence)

    def __len__(self) -> int:
        return len(self._touched)

    def next_ordinal(self, connection: apsw.Connection, thread: str, namespace: str) -> int:
        """The ordinal the thread's next record gets (its position in the thread, from 1)."""
        return self._touch(connection, thread, namespace).count + 1

    def add(
        self,
        connection: apsw.Connection,
        *,
        thread: str,
        seq: int,
        record_id: str,
        actor: str,
        act: str,
        clock: int,
        body: Any,
        stored_at: float,
        signer: str | None = None,
        local: bool = False,
    ) -> None:
        """Fold one record that was just inserted (with ordinal :meth:`next_ordinal`) into its thread.

        ``local``: the record was written on this instance (an emit, a task command); a task it opens must
        not take an alias another thread holds (raises ``TASK_ALIAS_TAKEN``, which rolls the request back).
        ``signer``: who signed it; a parent's synthesising record counts only when this instance signed it.
        """
        touch = self._touched[thread]
        touch.updated_at = stored_at
        touch.count += 1
        touch.added += 1
        touch.last_clock = max(touch.last_clock, clock)
        touch.first_seq = touch.first_seq or seq
        touch.last_seq = seq
        if touch.count % MARK_EVERY == 0:
            touch.marks.append((touch.last_clock, seq))
        self._clock.highest = max(self._clock.highest, clock)
        if seq % MARK_EVERY == 0:  # sequences are dense: every MARK_EVERY-th record of the store
            self._store_marks.append((self._clock.highest, seq))

        answers: dict[tuple[str, ...], bool] = {}  # the thread and task folds may ask the same question

        def is_intent(ids: Sequence[str]) -> bool:
            key = tuple(ids)
            if key not in answers:
                answers[key] = _names_an_intent(connection, thread, seq, ids)
            return answers[key]

        status_before = touch.status()
        role = step(touch.head, act, body, record_id, is_intent)
        tally = touch.participants.setdefault(actor, [0, 0])
        tally[0] += 1
        if role is not None:
            tally[1] = max(tally[1], ROLE_RANK[role])
        self._fold_task(connection, thread, touch, act, body, record_id, seq, local, is_intent)
        if task_store.names_fork(act, body):
            self._fork(connection, thread, body, record_id, seq)
        if task_store.is_synthesis(act, body) and self._own(signer, actor):
            task_store.synthesised(connection, thread, body, record_id, seq)
        status = touch.status()
        if status != status_before and status in CLOSED and (closer := touch.closer()) is not None:
            task_store.child_close(connection, thread, closer, status, body, seq, touch.namespace)

    def _namespace_of(self, connection: apsw.Connection, thread: str) -> str | None:
        """A thread's namespace (its first record's), from this transaction's book or the store."""
        pending = self._touched.get(thread)
        if pending is not None:
            return pending.namespace
        for (namespace,) in connection.execute("SELECT namespace FROM threads WHERE thread = ?", (thread,)):
            return str(namespace)
        return None

    def _own(self, signer: str | None, actor: str) -> bool:
        """A record the joiner wrote: authored *and* signed by this instance (clients may not emit its kinds, nor
        emit as the instance without the admin scope). Without the DID (a bare re-fold), signed by its author.

        After ``spl identity rotate`` the instance's records are authored by its identifier (its inception key) and
        signed by its current key: both are keys of its chain, which is what ``own_did`` then holds."""
        if self._own_did is None:
            return signer is not None and signer == actor
        return owns(self._own_did, signer) and owns(self._own_did, actor)

    def _fold_task(
        self,
        connection: apsw.Connection,
        thread: str,
        touch: _Touch,
        act: str,
        body: Any,
        record_id: str,
        seq: int,
        local: bool,
        is_intent: Callable[[Sequence[str]], bool],
    ) -> None:
        if touch.task is not None:
            task_fold.step(touch.task, act, body, record_id, is_intent)
            touch.task_dirty = True  # its updated sequence moves with every record
            return
        if touch.head.opened_by != record_id or not task_fold.is_task_opening(act, body):
            return
        alias = body["alias"]
        if local:
            taken = self._new_aliases.get(alias)
            if taken is not None and taken != thread:
                raise task_store.TaskAliasTaken(f"task alias {alias} is taken by thread {taken}; choose another")
            task_store.check_alias(connection, alias, thread)
        self._new_aliases.setdefault(alias, thread)
        touch.task = task_fold.open_task(body, record_id)
        touch.task_opened_seq = seq
        touch.task_new = touch.task_dirty = True

    def _fork(self, connection: apsw.Connection, parent: str, body: dict[str, Any], record_id: str, seq: int) -> None:
        child = body.get("sub_thread")
        pending = self._touched.get(child) if isinstance(child, str) else None
        closed = None
        if pending is not None and pending.status() in CLOSED and (closer := pending.closer()) is not None:
            closed = (pending.status(), closer)  # closed earlier in this transaction, not flushed yet
        namespace = self._touched[parent].namespace

        def same_namespace(child: str) -> bool:
            return self._namespace_of(connection, child) == namespace

        task_store.fork(
            connection,
            parent,
            body,
            record_id,
            seq,
            closed_in_transaction=closed,
            same_namespace=same_namespace,
            namespace=namespace,
        )

    def flush(self, connection: apsw.Connection) -> None:
        """Write every touched thread's row, participants and marks; the book is empty afterwards."""
        for thread, touch in self._touched.items():
            if not touch.added:
                if touch.count and self._cache is not None:
                    self._cache.keep(thread, touch)
                continue
            head = touch.head
            connection.execute(
                "INSERT INTO threads(thread, namespace, record_count, last_clock, first_seq, last_seq, updated_at, "
                "state, opened_by, closed_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(thread) DO UPDATE SET record_count = excluded.record_count, "
                "last_clock = excluded.last_clock, last_seq = excluded.last_seq, updated_at = excluded.updated_at, "
                "state = excluded.state, opened_by = excluded.opened_by, closed_by = excluded.closed_by",
                (
                    thread,
                    touch.namespace,
                    touch.count,
                    touch.last_clock,
                    touch.first_seq,
                    touch.last_seq,
                    touch.updated_at,
                    head.state,
                    head.opened_by,
                    head.closed_by,
                ),
            )
            connection.executemany(
                "INSERT INTO thread_participants(thread, actor, record_count, role_rank) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(thread, actor) DO UPDATE SET record_count = record_count + excluded.record_count, "
                "role_rank = MAX(role_rank, excluded.role_rank)",
                [(thread, actor, added, rank) for actor, (added, rank) in touch.participants.items()],
            )
            if touch.marks:
                connection.executemany(
                    "INSERT INTO clock_marks(thread, clock, seq) VALUES (?, ?, ?)",
                    [(thread, clock, seq) for clock, seq in touch.marks],
                )
            if touch.task is not None and touch.task_dirty:
                task_store.save_task(
                    connection, thread, touch.task, touch.task_opened_seq, touch.last_seq, touch.task_new
                )
            if self._cache is not None:
                self._cache.keep(thread, touch)
        self._touched.clear()
        self._new_aliases.clear()
        if self._store_marks:
            connection.executemany(
                "INSERT INTO clock_marks(thread, clock, seq) VALUES (?, ?, ?)",
                [(ALL_THREADS, clock, seq) for clock, seq in self._store_marks],
            )
            self._store_marks.clear()

    def _touch(self, connection: apsw.Connection, thread: str, namespace: str) -> _Touch:
        touch = self._touched.get(thread)
        if touch is None:
            cached = self._cache.take(thread) if self._cache is not None else None
            touch = cached or _load(connection, thread) or _Touch(namespace, 0, 0, 0, 0, FoldHead())
            self._touched[thread] = touch
        return touch


def _load(connection: apsw.Connection, thread: str) -> _Touch | None:
    """The thread's row and, when it is a task, its task head: one query (a task's row is joined in)."""
    for row in connection.execute(
        "SELECT th.namespace, th.record_count, th.last_clock, th.first_seq, th.last_seq, th.state, th.opened_by, "
        "th.closed_by, t.head, t.opened_seq FROM threads AS th LEFT JOIN tasks AS t ON t.thread = th.thread "
        "WHERE th.thread = ?",
        (thread,),
    ):
        namespace, count, last_clock, first_seq, last_seq, state, opened_by, closed_by, head, opened_seq = row
        touch = _Touch(
            namespace, int(count), int(last_clock), int(first_seq), int(last_seq), FoldHead(state, opened_by, closed_by)
        )
        if head is not None:
            touch.task, touch.task_opened_seq = task_store.decode_head(head), int(opened_seq)
        return touch
    return None


# CROSS JOIN keeps the named ids as the outer loop: one probe of the id index each. Left to itself
# the planner walks the thread's records instead, a cost that grows with the thread.
INTENT_SQL = (
    "SELECT 1 FROM json_each(?) AS named CROSS JOIN records ON records.id = named.value "
    "WHERE records.thread = ? AND records.act = 'INTEND' AND records.seq < ? LIMIT 1"
)


ONE_INTENT_SQL = "SELECT 1 FROM records WHERE id = ? AND thread = ? AND act = 'INTEND' AND seq < ?"


def _names_an_intent(connection: apsw.Connection, thread: str, before_seq: int, ids: Sequence[str]) -> bool:
    """Whether one of ``ids`` is an INTEND of ``thread`` stored before ``before_seq``: one query, any list length.

    Only distinct 64-character strings can be record ids, so a body naming junk (or one id many
    times) costs no probe for it: the work stays bounded by the distinct ids it names.
    """
    candidates = sorted({record_id for record_id in ids if len(record_id) == 64})
    if not candidates:
        return False
    if len(candidates) == 1:  # the common case (one id): a probe of the id index, no json_each to set up
        for _ in connection.execute(ONE_INTENT_SQL, (candidates[0], thread, before_seq)):
            return True
        return False
    for _ in connection.execute(INTENT_SQL, (json.dumps(candidates), thread, before_seq)):
        return True
    return False


def since_start(connection: apsw.Connection, thread: str, since_clock: int) -> int:
    """A sequence no record of ``thread`` with ``clock > since_clock`` is at or below (0: none known).

    The last clock mark whose highest clock is ``<= since_clock``: every record up to that
    mark has a clock no higher, so a ``since`` read starts after it. ``thread`` may be
    :data:`ALL_THREADS` for a read over the whole store.
    """
    for (seq,) in connection.execute(
        "SELECT seq FROM clock_marks WHERE thread = ? AND clock <= ? ORDER BY clock DESC, seq DESC LIMIT 1",
        (thread, since_clock),
    ):
        return int(seq)
    return 0


REBUILD_BATCH = 20_000  # records folded per flush while rebuilding


def rebuild_threads(
    connection: apsw.Connection,
    progress: Callable[[int], None] | None = None,
    own_did: str | Collection[str] | None = None,
) -> int:
    """Recompute every thread projection and ordinal from the records, in sequence order; returns the records seen.

    Runs inside the caller's transaction (the schema upgrade's). Records are read in
    sequence order, so every fold sees a thread's records as the writer did. ``progress``
    hears the number of records folded so far after every batch: on a big store this takes
    minutes, and the daemon tells systemd it is still starting.
    """
    connection.execute("DELETE FROM threads")
    connection.execute("DELETE FROM thread_participants")
    connection.execute("DELETE FROM clock_marks")
    for table in ("tasks", "task_labels", "sub_threads", "thread_joins", "join_outbox", "child_outcomes"):
        connection.execute(f"DELETE FROM {table}")  # noqa: S608 - a fixed list of this module's tables
    book = ThreadBook(own_did=own_did)  # without it (a bare upgrade), a synthesis counts when signer == actor
    ordinals: list[tuple[int, int]] = []
    seen = 0
    after = 0
    while True:
        rows = list(
            connection.execute(
                "SELECT seq, id, thread, actor, act, clock, namespace, json, created_at FROM records WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (after, REBUILD_BATCH),
            )
        )
        for seq, record_id, thread, actor, act, clock, namespace, text, created_at in rows:
            ordinals.append((book.next_ordinal(connection, thread, namespace), seq))
            stored = json.loads(text)
            book.add(
                connection,
                thread=thread,
                seq=seq,
                record_id=record_id,
                actor=actor,
                act=act,
                clock=clock,
                body=stored.get("body"),
                stored_at=created_at,
                signer=stored.get("signer"),
            )
        book.flush(connection)
        connection.executemany("UPDATE records SET ordinal = ? WHERE seq = ?", ordinals)
        ordinals.clear()
        seen += len(rows)
        if progress is not None:
            progress(seen)
        if len(rows) < REBUILD_BATCH:
            return seen
        after = rows[-1][0]
