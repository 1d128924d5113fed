"""Read-side SQL: listings, lookups and replays, each a plain function of a connection.

Results are stored JSON texts (already in served form), so HTTP and SSE splice them.
List order is ascending ``sequence`` (spec §15.6); ``since`` means ``clock > since``
(spec §15.7).
"""

from __future__ import annotations

from typing import Any

import apsw

from spl.core.stored import StoredRecord

__all__ = [
    "count_records",
    "get_record",
    "head_sequence",
    "list_records",
    "list_threads",
    "pair_cursors",
    "parked_count",
    "parked_dropped",
    "records_after",
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
    connection: apsw.Connection, *, limit: int = 100, namespace: str | None = None
) -> list[dict[str, Any]]:
    """Threads, most recently written first."""
    sql = "SELECT thread, namespace, record_count, last_clock, first_seq, last_seq, updated_at FROM threads"
    bindings: list[Any] = []
    if namespace is not None:
        sql += " WHERE namespace = ?"
        bindings.append(namespace)
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


def count_records(connection: apsw.Connection) -> int:
    for (count,) in connection.execute("SELECT COUNT(*) FROM records"):
        return int(count)
    return 0


def head_sequence(connection: apsw.Connection) -> int:
    for (head,) in connection.execute("SELECT COALESCE(MAX(seq), 0) FROM records"):
        return int(head)
    return 0


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
