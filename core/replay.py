"""Replaying a thread record by record: which transition each record caused (``spl debug replay``, issue 12).

The store keeps only each fold's current output; to explain *how* a thread or task got there, this walks its
records in sequence order through the same pure steps the store runs at commit (``spl.core.fold.step`` and,
for a task, ``spl.core.tasks.step``) and notes, per record, the thread state and task status before and after
it, plus the join decision a joiner's record carries (a parent's ``core.join.*`` records).

The walk follows the store's rules exactly: a thread is a task when its *opening* INTEND (the thread fold's
``opened_by``) is a task opening; an id in ``fulfills``/``cancels`` counts when it names an INTEND of the
thread seen before. Pure and total: records are whatever a daemon served, so every field is read defensively
and an odd record is replayed (as the store folded it), never raised on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from spl.core import fold as thread_fold
from spl.core import joins
from spl.core import tasks as task_fold

__all__ = ["JOIN_KINDS", "ReplayStep", "Replayer", "replay"]

JOIN_KINDS = (joins.SYNTHESIS_KIND, joins.CLOSED_KIND, joins.FAILED_KIND)
_JOIN_FIELDS = ("child", "outcome", "result", "summary", "reason", "join", "accepted", "total")
MAX_FIELD = 300  # characters of a body string carried into a step


def _short(value: Any) -> Any:
    if isinstance(value, str):
        return value[:MAX_FIELD]
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k)[:40]: _short(v) for k, v in list(value.items())[:8] if isinstance(v, str | int | float)}
    return None


@dataclass(frozen=True)
class ReplayStep:
    """One record and what it did: the thread state and task status before and after it."""

    sequence: int | None
    id: str
    act: str
    actor: str
    kind: str | None
    event: str | None
    thread_before: str
    thread_after: str
    task_before: str | None
    task_after: str | None
    role: str | None = None  # a role the record earned its actor (opener, reviewer, adapter)
    forks: str | None = None  # the child a parent's INTEND forks (body.sub_thread)
    join: dict[str, Any] | None = None  # the decision a joiner's record carries

    @property
    def thread_changed(self) -> bool:
        return self.thread_before != self.thread_after

    @property
    def task_changed(self) -> bool:
        return self.task_before != self.task_after

    def to_wire(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "id": self.id,
            "act": self.act,
            "actor": self.actor,
            "kind": self.kind,
            "event": self.event,
            "thread": {"before": self.thread_before, "after": self.thread_after},
            "task": None if self.task_after is None else {"before": self.task_before, "after": self.task_after},
            "role": self.role,
            "forks": self.forks,
            "join": self.join,
        }


@dataclass
class Replayer:
    """The walk's state; :meth:`apply` one record at a time (``replay`` applies a whole list)."""

    head: thread_fold.FoldHead = field(default_factory=thread_fold.FoldHead)
    task: task_fold.TaskHead | None = None
    intents: set[str] = field(default_factory=set)

    def _is_intent(self, ids: Any) -> bool:
        return any(record_id in self.intents for record_id in ids)

    def apply(self, record: Mapping[str, Any]) -> ReplayStep:
        act = str(record.get("act", ""))
        record_id = str(record.get("id", ""))
        body = record.get("body")
        if not isinstance(body, dict):
            body = {}
        sequence = record.get("sequence")
        thread_before = self.head.state
        task_before = self.task.status if self.task is not None else None
        role = thread_fold.step(self.head, act, body, record_id, self._is_intent)
        if self.task is not None:
            task_fold.step(self.task, act, body, record_id, self._is_intent)
        elif self.head.opened_by == record_id and task_fold.is_task_opening(act, body):
            self.task = task_fold.open_task(body, record_id)
        if act == "INTEND":
            self.intents.add(record_id)
        kind = body.get("kind")
        join = None
        if kind in JOIN_KINDS:
            join = {"kind": kind, **{key: _short(body[key]) for key in _JOIN_FIELDS if key in body}}
        event = body.get("task_event")
        forks = body.get("sub_thread") if act == "INTEND" else None
        return ReplayStep(
            sequence=sequence if isinstance(sequence, int) and not isinstance(sequence, bool) else None,
            id=record_id,
            act=act,
            actor=str(record.get("actor", "")),
            kind=kind[:MAX_FIELD] if isinstance(kind, str) else None,
            event=event[:40] if isinstance(event, str) else None,
            thread_before=thread_before,
            thread_after=self.head.state,
            task_before=task_before,
            task_after=self.task.status if self.task is not None else None,
            role=role,
            forks=forks[:MAX_FIELD] if isinstance(forks, str) else None,
            join=join,
        )


def replay(records: Iterable[Mapping[str, Any]]) -> list[ReplayStep]:
    """Each record of one thread (in sequence order) with the transitions it caused."""
    replayer = Replayer()
    return [replayer.apply(record) for record in records]
