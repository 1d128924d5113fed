"""Read-side SQL: listings, lookups and replays, each a plain function of a connection.

Results are stored JSON texts (already in served form), so HTTP and SSE splice them.
List order is ascending ``sequence`` (spec §15.6); ``since`` means ``clock > since``
(spec §15.7).
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import apsw

from spl.core.errors import InvalidRequest, SplError
from spl.core.fold import ROLE_RANK, anomalies
from spl.core.reserved import RESERVED_THREADS
from spl.core.stored import StoredRecord
from spl.store.database import NAMESPACE_FEED_TERM
from spl.store.threads import ALL_THREADS, since_start

__all__ = [
    "MAX_FEED_NAMESPACES",
    "PAGE_BYTES",
    "MAX_ACTORS",
    "ChangePage",
    "ScopedPage",
    "ScopedRow",
    "actor_listing",
    "change_page",
    "count_after",
    "get_record",
    "list_records",
    "list_threads",
    "pair_cursors",
    "parked_count",
    "parked_dropped",
    "records_after",
    "scoped_pending",
    "scoped_page",
    "thread_fold",
    "thread_objects",
    "thread_objects_with_seq",
    "thread_records",
]


def list_records(
    connection: apsw.Connection,
    *,
    thread: str | None = None,
    actor: str | None = None,
    since_clock: int | None = None,
    after_seq: int = 0,
    limit: int = 100,
    hide_reserved: bool = False,
) -> list[StoredRecord]:
    """Records in sequence order; ``hide_reserved`` leaves the reserved (configuration) threads out."""
    if since_clock is not None:
        # Skip the part of the thread (or store) a clock mark proves holds no match (spl.store.threads).
        after_seq = max(after_seq, since_start(connection, ALL_THREADS if thread is None else thread, since_clock))
    clauses: list[str] = ["seq > ?"]
    bindings: list[Any] = [after_seq]
    if thread is not None:
        clauses.append("thread = ?")
        bindings.append(thread)
    if actor is not None:
        clauses.append("actor = ?")
        bindings.append(actor)
    if hide_reserved and thread is None:
        clauses.append(NAMESPACE_FEED_TERM)
    if since_clock is not None:
        clauses.append("clock > ?")
        bindings.append(since_clock)
    sql = f"SELECT seq, id, thread, json FROM records WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT ?"
    bindings.append(limit)
    return [StoredRecord(int(seq), rid, th, text) for seq, rid, th, text in connection.execute(sql, bindings)]


def thread_records(
    connection: apsw.Connection, thread: str, *, since_clock: int | None = None, limit: int = 100
) -> list[StoredRecord]:
    return list_records(connection, thread=thread, since_clock=since_clock, limit=limit)


def records_after(connection: apsw.Connection, thread: str, after_seq: int, limit: int) -> list[StoredRecord]:
    """Records of ``thread`` with sequence > ``after_seq``: SSE resume and change feeds."""
    return list_records(connection, thread=thread, after_seq=after_seq, limit=limit)


def get_record(connection: apsw.Connection, record_id: str) -> StoredRecord | None:
    for seq, thread, text in connection.execute("SELECT seq, thread, json FROM records WHERE id = ?", (record_id,)):
        return StoredRecord(int(seq), record_id, thread, text)
    return None


def _thread_row(row: tuple[Any, ...]) -> dict[str, Any]:
    thread, namespace, count, last_clock, first_seq, last_seq, updated_at = row
    return {
        "object": "thread",
        "id": thread,
        "namespace": namespace,
        "record_count": int(count),
        "last_clock": int(last_clock),
        "first_sequence": int(first_seq),
        "last_sequence": int(last_seq),
        "updated_at": float(updated_at),
    }


def list_threads(
    connection: apsw.Connection,
    *,
    limit: int = 100,
    namespace: str | None = None,
    before_seq: int = 0,
    hide_reserved: bool = False,
) -> list[dict[str, Any]]:
    """Threads, most recently written first; with ``before_seq``, only those last written before that sequence.

    Walks an index on ``last_seq`` (``threads_recent`` / ``threads_namespace_recent``), so a page costs the
    same with ten threads or a million: no scan, no sort.
    """
    sql = "SELECT thread, namespace, record_count, last_clock, first_seq, last_seq, updated_at FROM threads"
    conditions: list[str] = []
    bindings: list[Any] = []
    if namespace is not None:
        conditions.append("namespace = ?")
        bindings.append(namespace)
    if before_seq > 0:
        conditions.append("last_seq < ?")
        bindings.append(before_seq)
    if hide_reserved:
        conditions.append(NAMESPACE_FEED_TERM)
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    sql += " ORDER BY last_seq DESC LIMIT ?"
    bindings.append(limit)
    return [_thread_row(row) for row in connection.execute(sql, bindings)]


_ROLES = {rank: role for role, rank in ROLE_RANK.items()}


def thread_fold(connection: apsw.Connection, thread: str) -> dict[str, Any] | None:
    """The thread's summary and fold as ``GET /v1/threads/{id}`` serves them, or ``None`` for an unknown thread.

    Read from the projections the writer keeps at commit (``spl.store.threads``): one row and
    the thread's participants, whatever the thread's length, and after a restart too.
    """
    for row in connection.execute(
        "SELECT thread, namespace, record_count, last_clock, first_seq, last_seq, updated_at, "
        "state, opened_by, closed_by FROM threads WHERE thread = ?",
        (thread,),
    ):
        view = _thread_row(row[:7])
        participants = [
            {"actor": actor, "record_count": int(count), "role": _ROLES.get(int(rank), "observer")}
            for actor, count, rank in connection.execute(
                "SELECT actor, record_count, role_rank FROM thread_participants WHERE thread = ? ORDER BY actor",
                (thread,),
            )
        ]
        first_act = None
        for (act,) in connection.execute("SELECT act FROM records WHERE seq = ?", (row[4],)):
            first_act = act  # the thread's first record (first_seq): one probe of the primary key
        view.update(
            state=row[7],
            watermark=view["last_sequence"],
            opened_by=row[8],
            closed_by=row[9],
            participants=participants,
            anomalies=anomalies(first_act),
        )
        return view
    return None


def count_after(connection: apsw.Connection, thread: str, after_seq: int) -> int:
    """Records of ``thread`` with sequence > ``after_seq``, by arithmetic on ordinals (no count of rows).

    The thread's record count minus the ordinal of the last record at or before ``after_seq``.
    """
    total = 0
    for (count,) in connection.execute("SELECT record_count FROM threads WHERE thread = ?", (thread,)):
        total = int(count)
    for (ordinal,) in connection.execute(
        "SELECT ordinal FROM records WHERE thread = ? AND seq <= ? ORDER BY seq DESC LIMIT 1", (thread, after_seq)
    ):
        return max(0, total - int(ordinal))
    return total


PAGE_BYTES = 16 * 1024 * 1024  # a change page holds at most this much record JSON (and at least one record)
PAGE_CHUNK = 256  # rows read at a time while filling a page


@dataclass(frozen=True, slots=True)
class ChangePage:
    """One page of a thread's change feed (spec §8.4): records, whether more follow, how many.

    ``has_more`` and ``pending`` come from the thread's row and the last record's ordinal,
    never from counting the rows that follow: a page costs the same early or late in a
    catch-up, on a thread of ten thousand records or ten million.
    """

    records: list[StoredRecord]
    has_more: bool
    pending: int  # records after the last one served (0 when ``has_more`` is false)


def change_page(
    connection: apsw.Connection, thread: str, after_seq: int, limit: int, *, max_bytes: int = PAGE_BYTES
) -> ChangePage:
    """Up to ``limit`` records of ``thread`` after ``after_seq``, and at most ``max_bytes`` of them (at least one).

    Read in chunks, so neither a big ``limit`` nor big records make one request hold
    gigabytes (10,000 records of 1 MiB each used to be read into memory at once); a page cut
    short by the byte budget says ``has_more`` and the reader simply asks again.
    """
    rows: list[StoredRecord] = []
    ordinal = 0  # of the last row taken
    size = 0
    last = after_seq
    while len(rows) < limit:
        want = min(PAGE_CHUNK, limit - len(rows))
        chunk = list(
            connection.execute(
                "SELECT seq, id, json, ordinal FROM records WHERE thread = ? AND seq > ? ORDER BY seq LIMIT ?",
                (thread, last, want),
            )
        )
        for seq, record_id, text, position in chunk:
            if rows and size + len(text) > max_bytes:
                return _page(connection, thread, rows, ordinal)
            rows.append(StoredRecord(int(seq), record_id, thread, text))
            ordinal = int(position)
            size += len(text)
        if len(chunk) < want:
            return ChangePage(rows, False, 0)  # the end of the thread
        last = rows[-1].seq
    return _page(connection, thread, rows, ordinal)


def _page(connection: apsw.Connection, thread: str, rows: list[StoredRecord], ordinal: int) -> ChangePage:
    """A full (or byte-cut) page: whether more follow and how many, from the thread's row."""
    for count, last_seq in connection.execute("SELECT record_count, last_seq FROM threads WHERE thread = ?", (thread,)):
        if int(last_seq) > rows[-1].seq:
            return ChangePage(rows, True, max(1, int(count) - ordinal))
    return ChangePage(rows, False, 0)


# -- the namespace change feed (docs/federation-pairs.md, "Sync under a federation pair") ---------------

MAX_FEED_NAMESPACES = 64  # namespaces one pull may name: each costs one index walk per page


@dataclass(frozen=True, slots=True)
class ScopedRow:
    """One record of a scoped feed, with what the caller's filters need (its thread and namespace) beside its JSON."""

    seq: int
    id: str
    thread: str
    namespace: str
    json: str


@dataclass(frozen=True, slots=True)
class ScopedPage:
    """One page of a namespace (or thread) feed, ascending by sequence.

    ``scanned_to`` is the highest sequence this page examined: the next cursor, even when
    the filter kept none of the rows examined, so a run of filtered-out records still moves
    the cursor on. ``has_more``: some record of the feed lies after ``scanned_to``.
    ``head``: the store's last sequence in the feed (for lag), 0 when the feed is empty.
    """

    rows: list[ScopedRow]
    has_more: bool
    scanned_to: int
    head: int


_COLUMNS = "seq, id, thread, namespace, json"
# Each repeats NAMESPACE_FEED_TERM word for word: SQLite uses a partial index only for a query that
# implies its WHERE, and it proves that by matching the terms' text.
_NAMESPACE_WALK = (
    f"SELECT {_COLUMNS} FROM records WHERE namespace = ? AND seq > ? AND {NAMESPACE_FEED_TERM} ORDER BY seq LIMIT ?"
)
_NAMESPACE_HEAD = f"SELECT seq FROM records WHERE namespace = ? AND {NAMESPACE_FEED_TERM} ORDER BY seq DESC LIMIT 1"
_THREAD_WALK = f"SELECT {_COLUMNS} FROM records WHERE thread = ? AND seq > ? ORDER BY seq LIMIT ?"


def scoped_page(
    connection: apsw.Connection,
    *,
    namespaces: Sequence[str] | None,
    thread: str | None,
    after: int,
    limit: int,
    scan_limit: int,
    keep: Callable[[ScopedRow], bool] | None = None,
    max_bytes: int = PAGE_BYTES,
) -> ScopedPage:
    """The records after sequence ``after`` of some namespaces, or of one thread, never of a reserved thread.

    Exactly one of ``namespaces`` and ``thread`` is given. The cost of a page does not grow
    with the store: each namespace is one walk of the partial index ``records_namespace``
    from ``after`` (it holds no reserved thread, so there is nothing to step over; a thread
    walks ``records_thread``), the walks are merged by sequence as they are read, and
    reading stops as soon as the page is done, so a page reads the rows it examines plus
    one row ahead per namespace.

    A page holds at most ``limit`` rows and ``max_bytes`` of JSON (at least one row).
    ``scan_limit`` exists for a caller that filters what it serves (consent, a pair's thread
    allow-list): the page examines up to ``scan_limit`` rows, keeps those ``keep`` accepts
    (all of them without ``keep``), and stops at ``limit`` kept; ``scanned_to`` is the last
    row examined, so the next page starts after what was filtered out instead of reading it
    again, and one request costs at most ``scan_limit`` rows however few pass. ``keep`` is
    called once for each row examined, in sequence order. A ``limit`` below 1 counts as 1
    and a ``scan_limit`` below ``limit`` as ``limit``.

    Raises:
        InvalidRequest: more than :data:`MAX_FEED_NAMESPACES` namespaces (400 ``TOO_MANY_NAMESPACES``).
        SplError: both or neither of ``namespaces`` and ``thread`` (a bug in the caller).
    """
    if (namespaces is None) == (thread is None):
        raise SplError("scoped_page needs exactly one of namespaces and thread: see the daemon log")
    limit = max(1, limit)
    scan_limit = max(limit, scan_limit)
    after = max(0, after)
    if thread is not None:
        if thread in RESERVED_THREADS:  # spec §15.18: never served, whatever it holds
            return ScopedPage([], False, after, 0)
        walks = [connection.execute(_THREAD_WALK, (thread, after, scan_limit))]
    else:
        wanted = sorted(set(namespaces or ()))
        if len(wanted) > MAX_FEED_NAMESPACES:
            raise InvalidRequest(
                f"a pull names at most {MAX_FEED_NAMESPACES} namespaces ({len(wanted)} given): "
                "split them over several pulls",
                code="TOO_MANY_NAMESPACES",
            )
        # No walk can run out before the page does: the page examines at most scan_limit rows in all.
        walks = [connection.execute(_NAMESPACE_WALK, (namespace, after, scan_limit)) for namespace in wanted]
    try:
        rows, scanned_to = _merge(walks, after, limit, scan_limit, keep, max_bytes)
    finally:
        for walk in walks:
            walk.close()  # a statement left open would hold its read transaction (and the WAL) open
    if thread is not None:
        head = _scalar_int(connection, "SELECT last_seq FROM threads WHERE thread = ?", (thread,))
    else:
        head = max((_scalar_int(connection, _NAMESPACE_HEAD, (namespace,)) for namespace in wanted), default=0)
    return ScopedPage(rows, head > scanned_to, scanned_to, head)


def _merge(
    walks: list[apsw.Cursor],
    after: int,
    limit: int,
    scan_limit: int,
    keep: Callable[[ScopedRow], bool] | None,
    max_bytes: int,
) -> tuple[list[ScopedRow], int]:
    """Merge the walks by sequence, examining rows until the page is full; the rows kept and the last examined."""
    rows: list[ScopedRow] = []
    size = 0
    examined = 0
    scanned_to = after
    # Sequences are unique, so the rows (seq first) never compare beyond their sequence.
    for seq, record_id, thread, namespace, text in heapq.merge(*walks):
        if examined == scan_limit:
            break
        if rows and size + len(text) > max_bytes:
            break  # not examined (``keep`` never saw it): the next page starts with it
        row = ScopedRow(int(seq), record_id, thread, namespace, text)
        if keep is None or keep(row):
            rows.append(row)
            size += len(text)
        examined += 1
        scanned_to = row.seq
        if len(rows) == limit:
            break
    return rows, scanned_to


_NAMESPACE_PENDING = (
    f"SELECT COUNT(*) FROM (SELECT 1 FROM records WHERE namespace = ? AND seq > ? AND {NAMESPACE_FEED_TERM} LIMIT ?)"
)
_THREAD_PENDING = "SELECT COUNT(*) FROM (SELECT 1 FROM records WHERE thread = ? AND seq > ? LIMIT ?)"


def scoped_pending(
    connection: apsw.Connection, *, namespaces: Sequence[str] | None, thread: str | None, after: int, cap: int
) -> int:
    """Records of the feed after sequence ``after``, counted up to ``cap`` (what a receiver's lag shows).

    Bounded on purpose: a count walks the index, so it is capped (a caller shows "at least ``cap``")
    rather than costing as much as the whole backlog on every page of a catch-up.
    """
    if thread is not None:
        return min(cap, _scalar_int(connection, _THREAD_PENDING, (thread, after, cap)))
    total = 0
    for namespace in sorted(set(namespaces or ())):
        total += _scalar_int(connection, _NAMESPACE_PENDING, (namespace, after, cap - total))
        if total >= cap:
            return cap
    return total


def _scalar_int(connection: apsw.Connection, sql: str, bindings: tuple[Any, ...]) -> int:
    for (value,) in connection.execute(sql, bindings):
        return int(value)
    return 0


def thread_objects(connection: apsw.Connection, thread: str, *, page: int = 1000) -> list[dict[str, Any]]:
    """Every record of ``thread`` as a decoded object, in sequence order.

    For the configuration threads the daemon folds at start or on demand (the namespace
    registry, the pair list): small, read a page at a time so no single query holds them all.
    """
    return [record for _, record in thread_objects_with_seq(connection, thread, page=page)]


def thread_objects_with_seq(
    connection: apsw.Connection, thread: str, *, page: int = 1000
) -> list[tuple[int, dict[str, Any]]]:
    """:func:`thread_objects` with each record's sequence (a fold that must know which record came last)."""
    found: list[tuple[int, dict[str, Any]]] = []
    after = 0
    while True:
        chunk = records_after(connection, thread, after, page)
        found.extend((record.seq, json.loads(record.json)) for record in chunk)
        if len(chunk) < page:
            return found
        after = chunk[-1].seq


def pair_cursors(connection: apsw.Connection) -> dict[str, str]:
    """Each pair's saved cursor: the peer's own string, sent back unchanged (spec §15.20)."""
    return {
        str(pair_id): str(cursor) for pair_id, cursor in connection.execute("SELECT pair_id, cursor FROM pair_cursors")
    }


def parked_count(connection: apsw.Connection) -> int:
    """Records waiting in ``parked_records`` for their namespace to be registered."""
    for (count,) in connection.execute("SELECT COUNT(*) FROM parked_records"):
        return int(count)
    return 0


def parked_dropped(connection: apsw.Connection) -> int:
    """Records refused without parking because ``parked_records`` was full (kept across restarts)."""
    for (value,) in connection.execute("SELECT value FROM meta WHERE key = 'parked_dropped'"):
        return int(value)
    return 0


MAX_ACTORS = 10_000
# The reserved threads as an SQL list (constants of spl.core.reserved, quoted like any SQL string literal).
_RESERVED_LIST = ", ".join("'" + thread.replace("'", "''") + "'" for thread in sorted(RESERVED_THREADS))


def actor_listing(
    connection: apsw.Connection, *, limit: int = MAX_ACTORS, did: str | None = None
) -> list[dict[str, Any]]:
    """Every actor seen as a participant of a thread: records, threads, and the strongest role it held.

    From the thread projections (``thread_participants``), so the cost is one row per (thread, actor), not per
    record. Reserved threads do not count: they are this instance's configuration (its genesis records, its
    registries), not threads it takes part in, and an instance's former identity would be listed for them
    forever. ``did``: only that actor (an empty list when it never took part).
    """
    where = f"WHERE thread NOT IN ({_RESERVED_LIST})" + (" AND actor = ?" if did is not None else "")
    parameters = (did, limit) if did is not None else (limit,)
    return [
        {"actor": actor, "record_count": int(records), "thread_count": int(threads), "role": _ROLES.get(int(rank))}
        for actor, records, threads, rank in connection.execute(
            "SELECT actor, SUM(record_count), COUNT(*), MAX(role_rank) FROM thread_participants "
            f"{where} GROUP BY actor ORDER BY actor LIMIT ?",
            parameters,
        )
    ]
