"""Tasks, sub-threads and joins in the store: the projections the commit keeps, and the reads over them.

Written by :class:`spl.store.threads.ThreadBook` inside every commit (so a task's row, a fork's link and a
child close's outbox row commit with the records that caused them) and rebuilt from the records with every
other projection (``rebuild_threads``). Nothing here stores a status a command set: every value is the
output of a fold (``spl.core.tasks``, ``spl.core.fold``) over records.

Exactly-once synthesis (seed 003 "Fork and merge"): the transaction that closes a child writes a
``join_outbox`` row for each parent; the transaction that stores the parent's synthesising record (a KNOW
``core.join.child_closed.v1`` signed by this instance) deletes it. The joiner actor (``spl.actors.joiner``) only ever
turns outbox rows into records, with ids derived from the row: a crash before the synthesis commits leaves the
row (it is synthesised after the restart), a crash after leaves no row, and a repeated emission is the same
record (an idempotent re-submission). Never two synthesising records for one close, never a missed one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import apsw
import msgspec

from spl.core import joins
from spl.core import tasks as task_fold
from spl.core.errors import Conflict
from spl.core.manifest import rfc3339
from spl.core.record import THREAD
from spl.core.reserved import is_reserved

__all__ = [
    "MAX_JOIN_SPEC",
    "MAX_RESULT",
    "OutboxRow",
    "alias_owner",
    "children",
    "child_close",
    "join_spec",
    "list_tasks",
    "next_alias",
    "outbox",
    "task_by_alias",
    "task_row",
]

MAX_RESULT = 500  # characters of a child's result carried into its parent's synthesis
SYNTHESIS_KIND = joins.SYNTHESIS_KIND  # the parent's synthesising record (its KNOW's body.kind)
MAX_JOIN_SPEC = 2048  # bytes of a body.join kept (the joiner refuses anything longer as unparseable)

_encode_head = msgspec.json.Encoder().encode
_decode_head = msgspec.json.Decoder(task_fold.TaskHead).decode


class TaskAliasTaken(Conflict):
    code = "TASK_ALIAS_TAKEN"


def encode_head(head: task_fold.TaskHead) -> str:
    return _encode_head(head).decode()


def decode_head(text: str) -> task_fold.TaskHead:
    return _decode_head(text)


# --- written in the commit (called by ThreadBook) -----------------------------------------------------------


def alias_owner(connection: apsw.Connection, alias: str) -> str | None:
    """The thread that holds ``alias``: the first task opened with it (peers may bring a second one)."""
    for (thread,) in connection.execute(
        "SELECT thread FROM tasks WHERE alias = ? ORDER BY opened_seq LIMIT 1", (alias,)
    ):
        return str(thread)
    return None


def check_alias(connection: apsw.Connection, alias: str, thread: str) -> None:
    """A task opened on this instance must not take an alias another thread holds (409 ``TASK_ALIAS_TAKEN``)."""
    owner = alias_owner(connection, alias)
    if owner is not None and owner != thread:
        raise TaskAliasTaken(
            f"task alias {alias} is taken by thread {owner}; choose another alias, or leave it out to have the "
            "next free one allocated"
        )


def save_task(
    connection: apsw.Connection, thread: str, head: task_fold.TaskHead, opened_seq: int, updated_seq: int, new: bool
) -> None:
    connection.execute(
        "INSERT INTO tasks(thread, alias, alias_number, status, assignee, opened_seq, updated_seq, head) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(thread) DO UPDATE SET status = excluded.status, updated_seq = excluded.updated_seq, "
        "head = excluded.head",
        (
            thread,
            head.alias,
            task_fold.alias_number(head.alias),
            head.status,
            head.assignee,
            opened_seq,
            updated_seq,
            encode_head(head),
        ),
    )
    if new and head.labels:
        connection.executemany(
            "INSERT INTO task_labels(label, opened_seq, thread) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            [(label, opened_seq, thread) for label in dict.fromkeys(head.labels)],
        )


def _result_text(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    for key in ("summary", "result", "reason", "text"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return value[:MAX_RESULT]
    return None


MAX_PARENTS = 64  # parents of one namespace a child is linked to (a fork beyond links nothing)
MAX_CHILDREN_SHOWN = 1000  # children listed by a join or tree view
MAX_CHILDREN = 10_000  # children a join is decided over; a parent with more is never closed by the joiner


def child_close(
    connection: apsw.Connection,
    child: str,
    closer: str,
    status: str,
    body: Any,
    seq: int,
    namespace: str,
) -> None:
    """A thread just reached a terminal status: queue one synthesis per parent it was forked from.

    Only parents in the child's namespace: a synthesis copies the child's outcome and result onto the parent,
    and anyone may name any thread as a ``sub_thread`` — a reader of one namespace must not learn, by forking a
    thread of another into a parent of its own, how that thread ended.
    """
    result = _result_text(body)
    parents = [
        str(parent)
        for (parent,) in connection.execute(
            "SELECT parent FROM sub_threads WHERE child = ? AND namespace = ? ORDER BY seq LIMIT ?",
            (child, namespace, MAX_PARENTS),
        )
    ]
    connection.executemany(
        "INSERT INTO join_outbox(queued_seq, parent, child, closer, status, result) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        [
            (seq * MAX_PARENTS + index, parent, child, closer, status, result)  # unique per parent, in close order
            for index, parent in enumerate(parents)
        ],
    )


def fork(
    connection: apsw.Connection,
    parent: str,
    body: dict[str, Any],
    record_id: str,
    seq: int,
    *,
    closed_in_transaction: tuple[str, str] | None = None,
    same_namespace: Callable[[str], bool] = lambda child: True,
    namespace: str = "default",
) -> None:
    """A parent INTEND naming ``body.sub_thread`` (and maybe ``body.join``): link the child, keep the predicate.

    A child that closed before the fork reached this store (a peer's records arrive in any order) is queued
    for synthesis at once, with its closing record as the close. ``closed_in_transaction``: (status, closer)
    of a child the caller's transaction closed and has not written to its tables yet.
    """
    join = body.get("join")
    if join is not None:
        spec = json.dumps(join, separators=(",", ":"), ensure_ascii=False) if _plain(join) else '"invalid"'
        if len(spec.encode()) > MAX_JOIN_SPEC:
            spec = '"invalid"'
        # The first INTEND that states a join keeps it: a later one (anyone may write on the thread, peers too)
        # must not turn `all` into `any`, or into an expression that fails the parent.
        connection.execute(
            "INSERT INTO thread_joins(parent, join_spec, intend) VALUES (?, ?, ?) ON CONFLICT(parent) DO NOTHING",
            (parent, spec, record_id),
        )
    child = body.get("sub_thread")
    if not isinstance(child, str) or child == parent or THREAD.fullmatch(child) is None or is_reserved(child):
        return
    for (links,) in connection.execute(
        "SELECT COUNT(*) FROM (SELECT 1 FROM sub_threads WHERE child = ? AND namespace = ? LIMIT ?)",
        (child, namespace, MAX_PARENTS),
    ):
        if links >= MAX_PARENTS:
            # A child joins at most MAX_PARENTS parents of one namespace, so every parent that lists it hears of
            # its close; counted per namespace, so forks from elsewhere cannot use up the parent's places.
            return
    connection.execute(
        "INSERT INTO sub_threads(parent, child, fork_record, seq, namespace) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        (parent, child, record_id, seq, namespace),
    )
    if not connection.changes():
        return
    closed = _closed_state(connection, child, closed_in_transaction)
    if closed is not None and same_namespace(child):
        status, closer, closer_body = closed
        connection.execute(
            "INSERT INTO join_outbox(queued_seq, parent, child, closer, status, result) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            (seq * MAX_PARENTS, parent, child, closer, status, _result_text(closer_body)),
        )


def _plain(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _closed_state(
    connection: apsw.Connection, thread: str, pending: tuple[str, str] | None
) -> tuple[str, str, Any] | None:
    """(terminal status, closing record id, its body) of a closed thread, or ``None`` while it is open.

    ``pending``: (status, closer) of a close the caller's transaction made and has not written to its tables yet.
    """
    closed = pending if pending is not None else _terminal(connection, thread)
    if closed is None:
        return None
    status, closer = closed
    body: Any = None
    for (text,) in connection.execute("SELECT json FROM records WHERE id = ?", (closer,)):
        body = json.loads(text).get("body")
    return status, closer, body


def _terminal(connection: apsw.Connection, thread: str) -> tuple[str, str] | None:
    """(status, closer) of a stored thread that is closed: the task fold's for a task, the thread fold's otherwise."""
    for (head_text,) in connection.execute("SELECT head FROM tasks WHERE thread = ?", (thread,)):
        head = decode_head(head_text)
        if head.status in task_fold.TERMINAL and head.closed_by is not None:
            return head.status, head.closed_by
        return None
    for state, closed_by in connection.execute("SELECT state, closed_by FROM threads WHERE thread = ?", (thread,)):
        if state in ("done", "cancelled") and closed_by is not None:
            return str(state), str(closed_by)
    return None


def synthesised(connection: apsw.Connection, parent: str, body: dict[str, Any], record_id: str, seq: int) -> None:
    """The parent's synthesising record for a child close committed: settle the outbox row, keep the outcome."""
    child, closer, status = body.get("child"), body.get("child_closer"), body.get("outcome")
    if not (isinstance(child, str) and isinstance(closer, str) and isinstance(status, str)):
        return
    connection.execute("DELETE FROM join_outbox WHERE parent = ? AND child = ? AND closer = ?", (parent, child, closer))
    result = body.get("result")
    connection.execute(
        "INSERT INTO child_outcomes(parent, child, closer, status, result, synthesis, seq) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(parent, child) DO UPDATE SET closer = excluded.closer, status = excluded.status, "
        "result = excluded.result, synthesis = excluded.synthesis, seq = excluded.seq",
        (parent, child, closer, status[:32], result[:MAX_RESULT] if isinstance(result, str) else None, record_id, seq),
    )


def is_synthesis(act: str, body: Any) -> bool:
    return act == "KNOW" and isinstance(body, dict) and body.get("kind") == SYNTHESIS_KIND


def names_fork(act: str, body: Any) -> bool:
    return act == "INTEND" and isinstance(body, dict) and ("sub_thread" in body or "join" in body)


# --- read by the joiner and the routes -----------------------------------------------------------------------


class OutboxRow(msgspec.Struct, frozen=True):
    queued_seq: int
    parent: str
    child: str
    closer: str
    status: str
    result: str | None


def outbox(connection: apsw.Connection, limit: int = 64) -> list[OutboxRow]:
    """Child closes waiting for their synthesis, oldest first."""
    return [
        OutboxRow(int(row[0]), *row[1:])
        for row in connection.execute(
            "SELECT queued_seq, parent, child, closer, status, result FROM join_outbox ORDER BY queued_seq LIMIT ?",
            (limit,),
        )
    ]


def _task_view(row: tuple[Any, ...]) -> dict[str, Any]:
    thread, opened_seq, updated_seq, text, record_count, created_at, updated_at, namespace = row
    head = decode_head(text)
    return {
        "object": "task",
        "thread": thread,
        "namespace": namespace,
        "alias": head.alias,
        "status": head.status,
        "title": head.title,
        "assignee": head.assignee,
        "domain": head.domain,
        "priority": head.priority,
        "labels": head.labels,
        "criteria": head.criteria,
        "opened_by": head.opened_by,
        "closed_by": head.closed_by,
        "reason": head.reason,
        "parent": head.parent,
        "opened_sequence": int(opened_seq),
        "updated_sequence": int(updated_seq),
        "record_count": int(record_count or 0),
        "created_at": rfc3339(float(created_at)) if created_at is not None else None,
        "updated_at": rfc3339(float(updated_at)) if updated_at is not None else None,
    }


_VIEW_SQL = (
    "SELECT t.thread, t.opened_seq, t.updated_seq, t.head, th.record_count, "
    "(SELECT created_at FROM records WHERE seq = t.opened_seq), th.updated_at, th.namespace "
    "FROM tasks AS t LEFT JOIN threads AS th ON th.thread = t.thread "
)


def task_row(connection: apsw.Connection, thread: str) -> dict[str, Any] | None:
    for row in connection.execute(_VIEW_SQL + "WHERE t.thread = ?", (thread,)):
        return _task_view(row)
    return None


def task_by_alias(connection: apsw.Connection, alias: str) -> dict[str, Any] | None:
    for row in connection.execute(_VIEW_SQL + "WHERE t.alias = ? ORDER BY t.opened_seq LIMIT 1", (alias,)):
        return _task_view(row)
    return None


def list_tasks(
    connection: apsw.Connection,
    *,
    status: str | None = None,
    assignee: str | None = None,
    label: str | None = None,
    limit: int = 100,
    before_seq: int | None = None,
) -> list[dict[str, Any]]:
    """Tasks newest first (by the opening INTEND's sequence), filtered from the index: never a scan of records.

    With several filters, the most selective index available drives the walk (labels, then assignee, then
    status) and the other filters are checked on the rows it yields.
    """
    where: list[str] = []
    params: list[object] = []
    source = "tasks AS t"
    if label is not None:
        source = "task_labels AS l CROSS JOIN tasks AS t ON t.thread = l.thread"
        where.append("l.label = ?")
        params.append(label)
        order = "l.opened_seq"
        key = "l.opened_seq"
    else:
        order = key = "t.opened_seq"
    if assignee is not None:
        where.append("t.assignee = ?")
        params.append(assignee)
    if status is not None:
        where.append("t.status = ?")
        params.append(status)
    if before_seq:
        where.append(f"{key} < ?")
        params.append(before_seq)
    sql = (
        "SELECT t.thread, t.opened_seq, t.updated_seq, t.head, th.record_count, "
        "(SELECT created_at FROM records WHERE seq = t.opened_seq), th.updated_at, th.namespace "
        f"FROM {source} LEFT JOIN threads AS th ON th.thread = t.thread "
        + (("WHERE " + " AND ".join(where) + " ") if where else "")
        + f"ORDER BY {order} DESC LIMIT ?"
    )
    return [_task_view(row) for row in connection.execute(sql, (*params, limit))]


def next_alias(connection: apsw.Connection) -> str:
    """One above the highest allocated alias number (``TASK-0001`` for the first): one probe of an index.

    Only ``TASK-`` + digits count (``alias_number``): a chosen alias such as ``TASK-zzz`` never blocks allocation.
    """
    highest = 0
    for (number,) in connection.execute("SELECT MAX(alias_number) FROM tasks WHERE alias_number IS NOT NULL"):
        highest = int(number or 0)
    return task_fold.format_alias(highest + 1)


def children(connection: apsw.Connection, parent: str) -> list[dict[str, Any]]:
    """The threads forked from ``parent``, in fork order, with their state and synthesised outcome."""
    rows = list(
        connection.execute(
            "SELECT s.child, s.fork_record, th.state, t.head, o.status, o.result, o.closer "
            "FROM sub_threads AS s LEFT JOIN threads AS th ON th.thread = s.child "
            "LEFT JOIN tasks AS t ON t.thread = s.child "
            "LEFT JOIN child_outcomes AS o ON o.parent = s.parent AND o.child = s.child "
            "WHERE s.parent = ? ORDER BY s.seq LIMIT ?",
            (parent, MAX_CHILDREN_SHOWN),
        )
    )
    out = []
    for child, fork_record, state, head_text, outcome, result, closer in rows:
        head = decode_head(head_text) if head_text is not None else None
        out.append(
            {
                "thread": child,
                "fork_record": fork_record,
                "state": state,
                "alias": head.alias if head else None,
                "status": head.status if head else state,
                "outcome": {"status": outcome, "result": result, "closer": closer} if outcome else None,
            }
        )
    return out


def join_spec(connection: apsw.Connection, parent: str) -> dict[str, Any]:
    """The parent's join predicate as stored (raw wire value; ``"all"`` when none was given) and its opener."""
    spec: Any = "all"
    stated = False
    for (text,) in connection.execute("SELECT join_spec FROM thread_joins WHERE parent = ?", (parent,)):
        spec, stated = json.loads(text), True
    opened_by, state, namespace = None, None, None
    for opened, current, space in connection.execute(
        "SELECT opened_by, state, namespace FROM threads WHERE thread = ?", (parent,)
    ):
        opened_by, state, namespace = opened, current, space
    return {"join": spec, "stated": stated, "opened_by": opened_by, "state": state, "namespace": namespace}


class JoinInputs(msgspec.Struct):
    """What a parent's join is decided over: its spec (:func:`join_spec`), every child, every synthesised outcome."""

    spec: dict[str, Any]
    children: list[str]
    outcomes: dict[str, joins.ChildOutcome]


def join_inputs(connection: apsw.Connection, parent: str) -> JoinInputs:
    """Everything the joiner and the join view decide a parent's join over, in one read."""
    return JoinInputs(
        join_spec(connection, parent),
        fork_children(connection, parent),
        {
            child: joins.ChildOutcome(child, status, result, closer)
            for child, status, result, closer in child_outcomes(connection, parent)
        },
    )


def child_outcomes(connection: apsw.Connection, parent: str) -> list[tuple[str, str, str | None, str]]:
    """(child, status, result, closer) of every child of ``parent`` synthesised so far."""
    return [
        (str(child), str(status), result, str(closer))
        for child, status, result, closer in connection.execute(
            "SELECT child, status, result, closer FROM child_outcomes WHERE parent = ?", (parent,)
        )
    ]


def fork_children(connection: apsw.Connection, parent: str, limit: int = MAX_CHILDREN + 1) -> list[str]:
    """The children forked from ``parent`` in fork order, at most ``limit`` (one more than a join decides over,
    so the caller can tell a parent with too many)."""
    return [
        str(child)
        for (child,) in connection.execute(
            "SELECT child FROM sub_threads WHERE parent = ? ORDER BY seq LIMIT ?", (parent, limit)
        )
    ]
