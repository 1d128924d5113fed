"""The task fold: a task's status is a pure function of its thread's records (seed 003, "Tasks are threads").

A task is a thread whose opening INTEND has ``body.task = true`` and carries the alias, title (``goal``),
assignee, domain, priority, labels and success criteria. Nothing stores a status: the store's ``tasks``
index is this fold's output, written in the same transaction as the records it folds and rebuilt from the
records like every other projection (``spl.store.threads``).

Statuses and the records that move them (``task_event`` is the body key the ``spl task`` commands write):

==========  ============================================================================================
open        the opening INTEND; ``reopen`` (an INTEND with ``task_event: "reopen"``) from any other status
active      ``start`` (a DO with ``task_event: "start"``) from open/observed/blocked; any other DO, CALL,
            GET, PUT or MAP from open or blocked
observed    any KNOW that is not one of the below, from open or active
blocked     ``block`` (a KNOW with ``task_event: "block"``) from any open status
done        a KNOW whose ``fulfills`` names an INTEND of the thread (``spl task done``, a join that holds)
failed      ``fail`` (a KNOW with ``task_event: "fail"``; a join that can no longer hold writes one)
cancelled   a DO whose ``cancels`` names an INTEND of the thread (``spl task cancel``), or a KNOW with
            ``verdict: "reject"``
==========  ============================================================================================

done, failed and cancelled are terminal: only ``reopen`` leaves them. A ``comment`` (a KNOW with
``task_event: "comment"``) never changes the status. These are the thread fold's rules (``spl.core.fold``)
plus blocked/failed and reopen: a task's status and its thread's state agree wherever both name a state.

Like the thread fold, one :func:`step` per record at a constant cost: whether an id names an earlier INTEND
of the thread is asked of an ``is_intent`` predicate (one index probe in the store). Every value read from a
body is bounded and type-checked: a record from any writer or peer folds without raising.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from spl.core.errors import InvalidRequest
from spl.core.fold import mentioned_ids

__all__ = [
    "ALIAS",
    "EVENTS",
    "STATUSES",
    "TERMINAL",
    "TaskHead",
    "alias_number",
    "format_alias",
    "is_task_opening",
    "open_task",
    "step",
    "validate_alias",
    "validate_task_fields",
]

STATUSES = ("open", "active", "observed", "blocked", "done", "failed", "cancelled")
TERMINAL = frozenset({"done", "failed", "cancelled"})
EVENTS = ("start", "block", "fail", "comment", "reopen")  # body.task_event values; done/cancel use fulfills/cancels
_ACTIVE_ACTS = ("DO", "CALL", "GET", "PUT", "MAP")

# An alias: letters, digits, '_', '.', '-', starting with a letter; never a thread id (those start with "th_"
# and are longer), so `spl task show X` can tell the two apart. Allocated ones are TASK-0001, TASK-0002, ...
ALIAS = re.compile(r"\A(?!th_)[A-Za-z][A-Za-z0-9_.-]{0,63}\Z")
_ALLOCATED = re.compile(r"\ATASK-([0-9]{1,12})\Z")
MAX_TEXT = 2000  # title, criteria item, reason: characters kept
MAX_SHORT = 128  # assignee, domain, priority, label
MAX_LABELS = 32
MAX_CRITERIA = 32

IsIntent = Callable[[Sequence[str]], bool]


class TaskHead(msgspec.Struct, kw_only=True):
    """What the fold keeps of a task: its opening fields and its status (the store's ``tasks`` row)."""

    alias: str
    title: str = ""
    assignee: str | None = None
    domain: str | None = None
    priority: str | None = None
    labels: list[str] = msgspec.field(default_factory=list)
    criteria: list[str] = msgspec.field(default_factory=list)
    nonce: str | None = None
    status: str = "open"
    opened_by: str = ""  # the opening INTEND's id
    closed_by: str | None = None  # the record that made the status terminal
    reason: str | None = None  # why it is blocked, failed or cancelled (the record's reason/summary)
    parent: str | None = None  # the thread this task was forked from (body.parent of the opening INTEND)


def format_alias(number: int) -> str:
    return f"TASK-{number:04d}"


def alias_number(alias: str) -> int | None:
    """The number of an allocated alias (``TASK-0042`` -> 42); ``None`` for a chosen one."""
    match = _ALLOCATED.fullmatch(alias)
    return int(match.group(1)) if match else None


def _text(value: object, limit: int = MAX_TEXT) -> str | None:
    if isinstance(value, str) and value:
        return value[:limit]
    return None


def _texts(value: object, limit: int, count: int) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return [item[:limit] for item in value[:count] if isinstance(item, str) and item]


def is_task_opening(act: str, body: Any) -> bool:
    """Whether a thread's first INTEND opens a task: ``body.task`` is true and the alias is well formed."""
    return (
        act == "INTEND"
        and isinstance(body, dict)
        and body.get("task") is True
        and isinstance(body.get("alias"), str)
        and ALIAS.fullmatch(body["alias"]) is not None
    )


def open_task(body: dict[str, Any], record_id: str) -> TaskHead:
    """The head of a task opened by an INTEND for which :func:`is_task_opening` holds."""
    return TaskHead(
        alias=body["alias"],
        title=_text(body.get("goal")) or _text(body.get("title")) or "",
        assignee=_text(body.get("assignee"), MAX_SHORT),
        domain=_text(body.get("domain"), MAX_SHORT),
        priority=_text(body.get("priority"), MAX_SHORT),
        labels=_texts(body.get("labels"), MAX_SHORT, MAX_LABELS),
        criteria=_texts(body.get("criteria"), MAX_TEXT, MAX_CRITERIA),
        nonce=_text(body.get("nonce"), MAX_SHORT),
        opened_by=record_id,
        parent=_text(body.get("parent"), 300),
    )


def step(head: TaskHead, act: str, body: Any, record_id: str, is_intent: IsIntent) -> str | None:
    """Advance ``head`` by one record of its thread (after the opening one); the new status, or ``None``."""
    if not isinstance(body, dict):
        body = {}
    event = body.get("task_event")
    before = head.status
    if act == "INTEND":
        if event == "reopen" and before != "open":
            _move(head, "open", None, None)
        return _changed(head, before)
    if before in TERMINAL:
        return None
    reason = _text(body.get("reason")) or _text(body.get("summary"))
    if act == "KNOW":
        if event == "fail":
            _move(head, "failed", record_id, reason)
        elif body.get("verdict") == "reject":
            _move(head, "cancelled", record_id, reason)
        elif (named := mentioned_ids(body.get("fulfills"))) and is_intent(named):
            _move(head, "done", record_id, None)
        elif event == "block":
            _move(head, "blocked", None, reason)
        elif event != "comment" and before in ("open", "active"):
            head.status = "observed"
    elif act == "DO" and (named := mentioned_ids(body.get("cancels"))) and is_intent(named):
        _move(head, "cancelled", record_id, reason)
    elif act == "DO" and event == "start":
        _move(head, "active", None, None)
    elif act in _ACTIVE_ACTS and before in ("open", "blocked"):
        _move(head, "active", None, None)
    return _changed(head, before)


def _move(head: TaskHead, status: str, closed_by: str | None, reason: str | None) -> None:
    head.status = status
    head.closed_by = closed_by
    head.reason = reason


def _changed(head: TaskHead, before: str) -> str | None:
    return head.status if head.status != before else None


def validate_alias(alias: object) -> str:
    if not isinstance(alias, str) or ALIAS.fullmatch(alias) is None:
        raise InvalidRequest(
            "a task alias is 1-64 characters: a letter, then letters, digits, '_', '.' or '-' (e.g. TASK-0042), "
            "and never starts with 'th_' (that names a thread)",
            code="INVALID_ALIAS",
        )
    return alias


def validate_task_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Check what ``spl task add`` / ``POST /v1/tasks`` sends; the body keys of a task's opening INTEND.

    Strict where the fold is lenient: a client is told what is wrong instead of having a field dropped.
    """
    title = fields.get("title")
    if not isinstance(title, str) or not title.strip() or len(title) > MAX_TEXT:
        raise InvalidRequest(f"a task needs a title of 1-{MAX_TEXT} characters", code="INVALID_TASK")
    body: dict[str, Any] = {"goal": title}
    for key in ("assignee", "domain", "priority"):
        value = fields.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value or len(value) > MAX_SHORT or not value.isprintable():
            raise InvalidRequest(f"'{key}' must be 1-{MAX_SHORT} printable characters", code="INVALID_TASK")
        body[key] = value
    for key, limit, count in (("labels", MAX_SHORT, MAX_LABELS), ("criteria", MAX_TEXT, MAX_CRITERIA)):
        value = fields.get(key) or []
        if isinstance(value, str):
            value = [value]
        if (
            not isinstance(value, list)
            or len(value) > count
            or not all(isinstance(item, str) and 0 < len(item) <= limit for item in value)
        ):
            raise InvalidRequest(
                f"'{key}' must be a list of at most {count} strings of 1-{limit} characters", code="INVALID_TASK"
            )
        if value:
            body[key] = list(value)
    return body
