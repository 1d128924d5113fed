"""Task routes (``/v1/tasks``): add, list, show, the events ``spl task`` writes, fan-out, tree and join status.

A task is a thread whose opening INTEND carries ``body.task = true`` (seed 003, ``spl.core.tasks``); its status is
the fold's output, read from the store's ``tasks`` index. Every route here writes only the records the fold
reads (an INTEND, DO or KNOW signed by this instance, ``LocalRecords``), so a task made here and one made by any
SDK or peer are the same thing.

* ``POST /v1/tasks`` (``records:write``): open a task; the alias is allocated (``TASK-0001``, ...) when not given.
* ``GET /v1/tasks`` / ``GET /v1/tasks/{alias_or_thread}`` (``records:read``): the list (newest first) and one
  task with its thread's fold.
* ``POST /v1/tasks/{alias_or_thread}/events`` (``records:write``): start, done, fail, cancel, block, reopen,
  comment; a transition the fold would ignore is a 409 ``TASK_STATE`` instead of a record nobody reads.
* ``POST /v1/tasks/{alias_or_thread}/fan-out`` (``records:write``): child tasks forked from the task.
* ``GET /v1/tasks/{alias_or_thread}/tree|join``: its sub-threads (bounded walk) and its join's decision.

The fork, tree and join logic is shared with the plain-thread routes (``routes_threads``).
"""

from __future__ import annotations

import json
from typing import Any

import apsw
from quart import Blueprint, Response, request

from spl.core import joins
from spl.core import tasks as task_fold
from spl.core.errors import Conflict, InvalidRequest, NotFound
from spl.core.record import THREAD, Envelope, validate_thread
from spl.core.reserved import refuse_reserved
from spl.core.stored import Accepted
from spl.core.threadids import new_nonce, sub_thread, task_thread
from spl.store import queries
from spl.store import tasks as task_store
from spl.transport.auth import require, require_thread_readable
from spl.transport.context import caller, services
from spl.transport.requests import int_arg, json_body
from spl.transport.responses import json_response, with_rfc3339_times
from spl.transport.routes_records import MAX_LIMIT

__all__ = [
    "MAX_GOALS",
    "MAX_TREE_DEPTH",
    "MAX_TREE_NODES",
    "blueprint",
    "fork_children",
    "join_view",
    "tree_view",
]

blueprint = Blueprint("tasks", __name__)

ALIAS_ATTEMPTS = 5  # allocations retried when a concurrent add took the alias just read
MAX_GOALS = 64  # children of one fan-out
MAX_TREE_DEPTH = 8
MAX_TREE_NODES = 1000
MAX_REASON = task_fold.MAX_TEXT
_TASK_KEYS = frozenset({"title", "alias", "assignee", "domain", "priority", "labels", "criteria", "join"})
_EVENT_KEYS = frozenset({"event", "reason", "summary", "text"})
EVENT_NAMES = ("start", "done", "fail", "cancel", "block", "reopen", "comment")


class TaskNotFound(NotFound):
    code = "TASK_NOT_FOUND"


class TaskState(Conflict):
    code = "TASK_STATE"


class JoinFixed(Conflict):
    code = "JOIN_FIXED"


class ParentClosed(Conflict):
    code = "PARENT_CLOSED"


def _object(payload: Any, keys: frozenset[str], what: str) -> dict[str, Any]:
    """The request body as an object with only known keys: an unknown key is a typo, not something to drop."""
    if not isinstance(payload, dict):
        raise InvalidRequest(f"{what} takes a JSON object", code="INVALID_REQUEST")
    unknown = sorted(str(key)[:40] for key in payload if key not in keys)
    if unknown:
        raise InvalidRequest(
            f"{what} does not take {', '.join(unknown[:5])}; it takes {', '.join(sorted(keys))}",
            code="INVALID_REQUEST",
        )
    return payload


def _text(payload: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = payload.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_REASON:
        need = "needs" if required else "takes"
        raise InvalidRequest(f"this event {need} '{key}': 1-{MAX_REASON} characters", code="INVALID_TASK_EVENT")
    return value


def parse_join_request(value: Any) -> Any:
    """The wire form of a requested join predicate (``None`` when none is given); 400 ``INVALID_JOIN`` if bad."""
    if value is None:
        return None
    return joins.join_wire(joins.parse_join(value))


# --- looking a task up ---------------------------------------------------------------------------------------


def _lookup(connection: apsw.Connection, key: str) -> dict[str, Any] | None:
    """A task by alias, else by thread id (no alias starts with ``th_``, so ``th_…`` always names a thread)."""
    if task_fold.ALIAS.fullmatch(key):
        row = task_store.task_by_alias(connection, key)
        if row is not None:
            return row
    if THREAD.fullmatch(key):
        return task_store.task_row(connection, key)
    return None


async def find_task(key: str) -> dict[str, Any]:
    """The task named by ``key`` (alias or thread), readable by the caller; 404 ``TASK_NOT_FOUND`` otherwise."""
    if len(key) > 256 or not (task_fold.ALIAS.fullmatch(key) or THREAD.fullmatch(key)):
        raise InvalidRequest(
            "name a task by its alias (TASK-0042) or its thread id (th_ + 64 hex)", code="INVALID_ALIAS"
        )
    row = await services().read(_lookup, key)
    if row is None:
        raise TaskNotFound(f"no task {key} on this instance; list them with `spl task list`")
    require_thread_readable(caller(), row["thread"])
    return row


# --- add, list, show -----------------------------------------------------------------------------------------


@blueprint.post("/v1/tasks")
async def add_task() -> Response:
    """Open a task: one INTEND on ``task_thread(alias, nonce)``. 201 and the task as the index has it."""
    require(caller(), "records:write")
    svc = services()
    payload = _object(await json_body(svc.config.max_body_bytes), _TASK_KEYS, "POST /v1/tasks")
    body = task_fold.validate_task_fields(payload)
    join = parse_join_request(payload.get("join"))
    if join is not None:
        body["join"] = join
    chosen = payload.get("alias")
    if chosen is not None:
        task_fold.validate_alias(chosen)
    accepted: Accepted | None = None
    for attempt in range(ALIAS_ATTEMPTS):
        alias = chosen if chosen is not None else await svc.read(task_store.next_alias)
        nonce = new_nonce()
        record_body = {**body, "task": True, "alias": alias, "nonce": nonce}
        envelope = svc.local.instance_envelope(task_thread(alias, nonce), "INTEND", record_body)
        try:
            accepted = await svc.local.accept(envelope)
            break
        except task_store.TaskAliasTaken:
            if chosen is not None or attempt == ALIAS_ATTEMPTS - 1:
                raise
    assert accepted is not None  # the loop either stored the record or raised
    row = await svc.read(task_store.task_row, accepted.record.thread)
    if row is None:  # the index is written in the commit that stored the record: this is a bug
        raise NotFound(f"task {accepted.record.thread} was stored but is not in the task index; see the daemon log")
    return json_response(row, 201)


@blueprint.get("/v1/tasks")
async def list_tasks() -> Response:
    require(caller(), "records:read")
    status = request.args.get("status") or None
    if status is not None and status not in task_fold.STATUSES:
        raise InvalidRequest(
            f"query parameter 'status' must be one of {', '.join(task_fold.STATUSES)}", code="INVALID_PARAMETER"
        )
    filters: dict[str, Any] = {"status": status}
    for key in ("assignee", "label"):
        value = request.args.get(key) or None
        if value is not None and len(value) > task_fold.MAX_SHORT:
            raise InvalidRequest(
                f"query parameter '{key}' is at most {task_fold.MAX_SHORT} characters", code="INVALID_PARAMETER"
            )
        filters[key] = value
    limit = int_arg("limit", 100, minimum=1, maximum=MAX_LIMIT) or 100
    before = _cursor(request.args.get("cursor"))
    rows = await services().read(task_store.list_tasks, **filters, limit=limit + 1, before_seq=before)
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = str(rows[-1]["opened_sequence"]) if has_more else None
    return json_response({"object": "list", "data": rows, "has_more": has_more, "next_cursor": next_cursor})


def _cursor(value: str | None) -> int | None:
    """A task list's cursor: the last row's ``opened_sequence`` (a plain number, opaque to clients)."""
    if not value:
        return None
    if not value.isdigit() or len(value) > 18:
        raise InvalidRequest(
            "query parameter 'cursor' must be the next_cursor of a previous page", code="INVALID_PARAMETER"
        )
    return int(value)


@blueprint.get("/v1/tasks/<key>")
async def show_task(key: str) -> Response:
    require(caller(), "records:read")
    row = await find_task(key)
    row["fold"] = await services().read(queries.thread_fold, row["thread"])
    return json_response(with_rfc3339_times(row))


# --- events --------------------------------------------------------------------------------------------------


def event_record(event: str, payload: dict[str, Any], opened_by: str) -> tuple[str, dict[str, Any]]:
    """(act, body) of the record the task fold reads for ``event`` (see ``spl.core.tasks``)."""
    reason = _text(payload, "reason")
    if event == "start":
        return "DO", {"task_event": "start", **({"reason": reason} if reason else {})}
    if event == "done":
        summary = _text(payload, "summary")
        return "KNOW", {"fulfills": opened_by, **({"summary": summary} if summary else {})}
    if event == "fail":
        return "KNOW", {"task_event": "fail", **({"reason": reason} if reason else {})}
    if event == "cancel":
        return "DO", {"cancels": opened_by, **({"reason": reason} if reason else {})}
    if event == "block":
        return "KNOW", {"task_event": "block", **({"reason": reason} if reason else {})}
    if event == "reopen":
        return "INTEND", {"task_event": "reopen", "reopens": opened_by, **({"reason": reason} if reason else {})}
    if event == "comment":
        return "KNOW", {"task_event": "comment", "text": _text(payload, "text", required=True)}
    raise InvalidRequest(f"'event' must be one of {', '.join(EVENT_NAMES)}", code="INVALID_TASK_EVENT")


def _would_move(row: dict[str, Any], act: str, body: dict[str, Any]) -> bool:
    """Whether the fold moves the task's status for this record (asked of the fold itself, not re-stated)."""
    head = task_fold.TaskHead(alias=row["alias"], status=row["status"], opened_by=row["opened_by"])
    opened_by = row["opened_by"]
    return task_fold.step(head, act, body, "", lambda ids: opened_by in ids) is not None


@blueprint.post("/v1/tasks/<key>/events")
async def task_event(key: str) -> Response:
    """Write the record for one ``spl task`` event; the task as the fold has it after the commit."""
    require(caller(), "records:write")
    svc = services()
    payload = _object(await json_body(svc.config.max_body_bytes), _EVENT_KEYS, "a task event")
    event = payload.get("event")
    if event not in EVENT_NAMES:
        raise InvalidRequest(f"'event' must be one of {', '.join(EVENT_NAMES)}", code="INVALID_TASK_EVENT")
    row = await find_task(key)
    act, body = event_record(event, payload, row["opened_by"])
    if event != "comment" and not _would_move(row, act, body):
        hint = (
            "reopen it first (`spl task reopen`)"
            if row["status"] in task_fold.TERMINAL
            else "it is already there; see `spl task show`"
        )
        raise TaskState(f"task {row['alias']} is {row['status']}: '{event}' would not change it; {hint}")
    if row.get("namespace") not in (None, "default"):
        body["namespace"] = row["namespace"]  # the task's records stay in its namespace (feeds, consent, joins)
    await svc.local.accept(svc.local.instance_envelope(row["thread"], act, body))
    after = await svc.read(task_store.task_row, row["thread"])
    return json_response(after or row)


# --- fan-out, tree, join (shared with routes_threads) --------------------------------------------------------


def _goals(payload: dict[str, Any]) -> list[str]:
    goals = payload.get("goals")
    if (
        not isinstance(goals, list)
        or not 1 <= len(goals) <= MAX_GOALS
        or not all(isinstance(g, str) and g.strip() and len(g) <= task_fold.MAX_TEXT for g in goals)
    ):
        raise InvalidRequest(
            f"'goals' must be a list of 1-{MAX_GOALS} goals, each 1-{task_fold.MAX_TEXT} characters",
            code="INVALID_FORK",
        )
    return list(goals)


def _parent_state(connection: apsw.Connection, parent: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    return task_store.join_spec(connection, parent), task_store.task_row(connection, parent)


async def fork_children(parent: str, payload: dict[str, Any], *, as_tasks: bool) -> dict[str, Any]:
    """Fork one child per goal from ``parent`` in ONE writer request; the children (thread, alias).

    Per child: the parent's INTEND naming ``sub_thread`` (and the join predicate, when one is given), then the
    child's opening INTEND naming its ``parent`` (a task INTEND with an allocated alias when ``as_tasks``). An
    alias a concurrent add took rolls the request back whole, and it is retried with fresh aliases; any other
    refusal is per record (see ``LocalRecords.accept_many``) and is the answer.

    Raises:
        ReservedThread: 403, the parent is a configuration thread.
        NotFound: the parent has no records here. ParentClosed: 409, it is done, failed or cancelled.
        InvalidRequest: goals, join or assignee are not valid.
    """
    refuse_reserved(parent)
    require_thread_readable(caller(), parent)
    svc = services()
    goals = _goals(payload)
    join = parse_join_request(payload.get("join"))
    assignee = payload.get("assignee")
    if assignee is not None and not (
        isinstance(assignee, str) and 0 < len(assignee) <= task_fold.MAX_SHORT and assignee.isprintable()
    ):
        raise InvalidRequest(f"'assignee' must be 1-{task_fold.MAX_SHORT} printable characters", code="INVALID_FORK")
    spec, task = await svc.read(_parent_state, parent)
    if spec["state"] is None:
        raise NotFound(f"thread {parent} has no records on this instance; open it first (`spl intend`)")
    status = task["status"] if task is not None else spec["state"]
    if status in task_fold.TERMINAL:
        raise ParentClosed(
            f"{parent} is {status}: a closed parent takes no children; reopen it first (`spl task reopen`)"
        )
    if join is not None and spec["stated"] and joins.join_wire(joins.parse_join(spec["join"])) != join:
        raise JoinFixed(
            f"{parent}'s join is {json.dumps(spec['join'])}, stated by its first INTEND that carried one, and stays "
            "so; leave --join out, or fork from a new parent"
        )
    namespace = spec["namespace"] if spec["namespace"] not in (None, "default") else None
    for attempt in range(ALIAS_ATTEMPTS):
        envelopes, children = await _fork_records(parent, goals, join, assignee, as_tasks, namespace)
        try:
            await svc.local.accept_many(envelopes)
            break
        except task_store.TaskAliasTaken:  # a concurrent add took an alias: the request rolled back whole
            if attempt == ALIAS_ATTEMPTS - 1:
                raise
    return {"object": "fork", "parent": parent, "join": join or spec["join"], "children": children}


async def _fork_records(
    parent: str, goals: list[str], join: Any, assignee: str | None, as_tasks: bool, namespace: str | None
) -> tuple[list[Envelope], list[dict[str, Any]]]:
    """The envelopes of one fork (per child: the parent's INTEND, then the child's) and the children.

    Both records carry the parent's namespace: a child in another namespace than its parent is never joined
    into it (``spl.store.tasks.child_close``), and a pair syncing the namespace must see the fork.
    """
    svc = services()
    first_number = 0
    if as_tasks:
        first_number = task_fold.alias_number(await svc.read(task_store.next_alias)) or 1
    actor = assignee or svc.local.did
    envelopes: list[Envelope] = []
    children: list[dict[str, Any]] = []
    for index, goal in enumerate(goals):
        child = sub_thread(parent, actor, svc.local.next_clock())
        fork_body: dict[str, Any] = {"goal": f"sub-thread: {goal}", "sub_thread": child}
        if join is not None:
            fork_body["join"] = join
        child_body: dict[str, Any] = {"goal": goal, "parent": parent}
        alias = None
        if as_tasks:
            alias = task_fold.format_alias(first_number + index)
            child_body.update(task=True, alias=alias, nonce=new_nonce())
            if assignee is not None:
                child_body["assignee"] = assignee
        if namespace is not None:
            fork_body["namespace"] = child_body["namespace"] = namespace
        envelopes.append(svc.local.instance_envelope(parent, "INTEND", fork_body))
        envelopes.append(svc.local.instance_envelope(child, "INTEND", child_body))
        children.append({"thread": child, "alias": alias, "goal": goal})
    return envelopes, children


def _tree(connection: apsw.Connection, root: str) -> dict[str, Any]:
    """The sub-thread tree under ``root``, breadth first, at most :data:`MAX_TREE_DEPTH` deep and
    :data:`MAX_TREE_NODES` nodes (``truncated`` says when it stopped early). A cycle (a peer's records may fork
    a thread from its own descendant) is cut where a thread repeats."""
    seen = {root}
    top: dict[str, Any] = {"thread": root, "children": []}
    row = task_store.task_row(connection, root)
    spec = task_store.join_spec(connection, root)
    top.update(alias=row["alias"] if row else None, status=row["status"] if row else spec["state"])
    level = [top]
    nodes, truncated = 1, False
    for _depth in range(MAX_TREE_DEPTH):
        following = []
        for node in level:
            if truncated:
                break
            for child in task_store.children(connection, node["thread"]):
                if child["thread"] in seen:
                    continue
                if nodes >= MAX_TREE_NODES:
                    truncated = True
                    break
                seen.add(child["thread"])
                nodes += 1
                entry = {**child, "children": []}
                node["children"].append(entry)
                following.append(entry)
        level = following
        if not level:
            break
    else:
        truncated = truncated or any(task_store.fork_children(connection, n["thread"]) for n in level)
    return {"object": "tree", **top, "nodes": nodes, "truncated": truncated}


async def tree_view(thread: str) -> dict[str, Any]:
    return await services().read(_tree, thread)


def _join(connection: apsw.Connection, parent: str) -> dict[str, Any]:
    """The parent's join predicate, its children with their outcomes, and the decision ``decide`` gives now."""
    spec = task_store.join_spec(connection, parent)
    children = task_store.children(connection, parent)
    view: dict[str, Any] = {
        "object": "join",
        "thread": parent,
        "state": spec["state"],
        "join": spec["join"],
        "children": children,
    }
    view["children_truncated"] = len(children) >= task_store.MAX_CHILDREN_SHOWN
    try:
        predicate = joins.parse_join(spec["join"])
    except InvalidRequest as exc:
        reason = f"the join predicate is not valid ({exc.message}): the joiner never closes this parent"
        view["decision"] = {"verdict": "pending", "reason": reason}
        return view
    # Decided as the joiner decides: over every child (not the shown page) and every synthesised outcome.
    inputs = task_store.join_inputs(connection, parent)
    forked, outcomes = inputs.children, inputs.outcomes
    if len(forked) > task_store.MAX_CHILDREN:
        reason = f"more than {task_store.MAX_CHILDREN} children: the joiner never closes this parent"
        view["decision"] = {"verdict": "pending", "reason": reason}
        return view
    decision = joins.decide(predicate, forked, outcomes)
    view["join"] = joins.join_wire(predicate)
    view["decision"] = {
        "verdict": decision.verdict,
        "accepted": decision.accepted,
        "rejected": decision.rejected,
        "open": decision.open,
        "total": decision.total,
        "reason": decision.reason,
    }
    return view


async def join_view(thread: str) -> dict[str, Any]:
    """Decided in the read worker thread: a CEL predicate costs CPU, and the event loop must not pay it."""
    return await services().read(_join, thread)


@blueprint.post("/v1/tasks/<key>/fan-out")
async def fan_out(key: str) -> Response:
    require(caller(), "records:write")
    svc = services()
    payload = _object(await json_body(svc.config.max_body_bytes), frozenset({"goals", "join", "assignee"}), "a fan-out")
    row = await find_task(key)
    return json_response(await fork_children(row["thread"], payload, as_tasks=True), 201)


@blueprint.get("/v1/tasks/<key>/tree")
async def task_tree(key: str) -> Response:
    require(caller(), "records:read")
    row = await find_task(key)
    return json_response(await tree_view(row["thread"]))


@blueprint.get("/v1/tasks/<key>/join")
async def task_join(key: str) -> Response:
    require(caller(), "records:read")
    row = await find_task(key)
    view = await join_view(row["thread"])
    view["alias"] = row["alias"]
    return json_response(view)


def checked_thread(thread: str) -> str:
    validate_thread(thread)
    require_thread_readable(caller(), thread)
    return thread
