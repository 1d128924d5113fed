"""Read-side SQL: listings, lookups and replays, each a plain function of a connection.

Results are stored JSON texts (already in served form), so HTTP and SSE splice them.
List order is ascending ``sequence`` (spec §15.6); ``since`` means ``clock > since``
(spec §15.7).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import apsw

from spl.core.stored import StoredRecord

__all__ = [
    "PAGE_BYTES",
    "ChangePage",
    "change_page",
    "count_after",
    "get_record",
    "list_records",
    "list_threads",
    "pair_cursors",
    "parked_count",
    "parked_dropped",
    "records_after",
    "thread_objects",
    "thread_records",
    "thread_summary",
]


def list_records(
    connection: apsw.Connection,
    *,
    thread: str | None = None,
    actor: str | None = None,
    since_clock: int | None = None,
    after_seq: int = 0,
    limit: int = 100,
) -> list[StoredRecord]:
    clauses: list[str] = ["seq > ?"]
    bindings: list[Any] = [after_seq]
    if thread is not None:
        clauses.append("thread = ?")
        bindings.append(thread)
    if actor is not None:
        clauses.append("actor = ?")
        bindings.append(actor)
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
    connection: apsw.Connection, *, limit: int = 100, namespace: str | None = None, before_seq: int = 0
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
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    sql += " ORDER BY last_seq DESC LIMIT ?"
    bindings.append(limit)
    return [_thread_row(row) for row in connection.execute(sql, bindings)]


def thread_summary(connection: apsw.Connection, thread: str) -> dict[str, Any] | None:
    for row in connection.execute(
        "SELECT thread, namespace, record_count, last_clock, first_seq, last_seq, updated_at "
        "FROM threads WHERE thread = ?",
        (thread,),
    ):
        return _thread_row(row)
    return None


def count_after(connection: apsw.Connection, thread: str, after_seq: int) -> int:
    """Records of ``thread`` with sequence > ``after_seq``: a change page's ``pending`` figure."""
    for (count,) in connection.execute(
        "SELECT COUNT(*) FROM records WHERE thread = ? AND seq > ?", (thread, after_seq)
    ):
        return int(count)
    return 0


PAGE_BYTES = 16 * 1024 * 1024  # a change page holds at most this much record JSON (and at least one record)
PAGE_CHUNK = 256  # rows read at a time while filling a page


@dataclass(frozen=True, slots=True)
class ChangePage:
    """One page of a thread's change feed (spec §8.4): records, whether more follow, how many."""

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
    size = 0
    last = after_seq
    while len(rows) < limit:
        want = min(PAGE_CHUNK, limit - len(rows))
        chunk = records_after(connection, thread, last, want)
        for record in chunk:
            if rows and size + len(record.json) > max_bytes:
                return ChangePage(rows, True, count_after(connection, thread, rows[-1].seq))
            rows.append(record)
            size += len(record.json)
        if len(chunk) < want:
            return ChangePage(rows, False, 0)  # the end of the thread
        last = chunk[-1].seq
    has_more = bool(records_after(connection, thread, last, 1))
    return ChangePage(rows, has_more, count_after(connection, thread, last) if has_more else 0)


def thread_objects(connection: apsw.Connection, thread: str, *, page: int = 1000) -> list[dict[str, Any]]:
    """Every record of ``thread`` as a decoded object, in sequence order.

    For the configuration threads the daemon folds at start or on demand (the namespace
    registry, the pair list): small, read a page at a time so no single query holds them all.
    """
    found: list[dict[str, Any]] = []
    after = 0
    while True:
        chunk = records_after(connection, thread, after, page)
        found.extend(json.loads(record.json) for record in chunk)
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
