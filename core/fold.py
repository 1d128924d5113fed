"""The thread fold: a thread's lifecycle and participants, derived only from its records.

Seed 003 ("Threads"): INTEND opens (``open``), DO/CALL make it ``active``, KNOW makes it
``observed``, a KNOW whose ``body.fulfills`` names an INTEND of the thread closes it
(``done``); a DO with ``body.cancels`` or a KNOW with ``verdict: "reject"`` cancels it
(``cancelled``). Nothing is stored as a status column: state is ``fold(records)``.

A thread whose records so far neither open nor advance it (only LEARN records, say) is
``unopened``: seed 003 says every thread starts with an INTEND, so such a thread — like any
whose first record is not an INTEND — is also flagged as an anomaly where it is shown.

Participants' roles (seed 003, "Participants and roles"), by convention: the *opener* emitted
the first INTEND; a *reviewer* emitted a KNOW with a verdict; an *adapter* emitted an
INTEND/DO/CALL/KNOW with ``dispatch_handled = true`` (work dispatched to it and handled);
everyone else is an *observer*. A role only rises, in that order from observer up.

The fold is one pure step, :func:`step`, applied record by record in sequence order. It
keeps only a :class:`FoldHead` (state, opener, closer) and never the set of the thread's
intents: whether an id names an earlier INTEND of the thread is asked of an
:data:`IsIntent` predicate. That is what lets the store keep every thread's fold current
inside the commit (``spl.store.threads``) at a constant cost per record, whatever the
thread's length: the store answers the predicate with one index probe. :class:`ThreadFold`
is the same step over an in-memory set, the reference the store's projection is tested
against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FIRST_NOT_INTEND",
    "ROLE_RANK",
    "UNOPENED",
    "anomalies",
    "FoldHead",
    "IsIntent",
    "Participant",
    "ThreadFold",
    "mentioned_ids",
    "step",
]

_TERMINAL = ("done", "cancelled")
_ACTIVE_ACTS = ("DO", "CALL", "GET", "PUT", "MAP")

# A participant's role only ever rises: a reviewer who later opens the thread is its opener.
ROLE_RANK = {"observer": 0, "adapter": 1, "reviewer": 2, "opener": 3}
UNOPENED = "unopened"
_DISPATCH_ACTS = ("INTEND", "DO", "CALL", "KNOW")

IsIntent = Callable[[Sequence[str]], bool]
"""Whether any of these ids is an INTEND of the thread folded so far (earlier in sequence order)."""


def mentioned_ids(value: Any) -> list[str]:
    """The record ids a ``fulfills`` / ``cancels`` field names: one string or a list of them."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


@dataclass
class FoldHead:
    """The part of a thread's fold that one record can change besides counts."""

    state: str = UNOPENED
    opened_by: str | None = None
    closed_by: str | None = None


def step(head: FoldHead, act: str, body: Any, record_id: str, is_intent: IsIntent) -> str | None:
    """Advance ``head`` by one record; return the role the record earns its actor (``None``: no change).

    ``is_intent`` is asked only for a KNOW naming ``fulfills`` or a DO naming ``cancels`` on a
    thread that is not closed yet, so most records cost no lookup at all.
    """
    if not isinstance(body, dict):
        body = {}
    role = _advance(head, act, body, record_id, is_intent)
    if role is None and act in _DISPATCH_ACTS and body.get("dispatch_handled") is True:
        return "adapter"
    return role


def _advance(head: FoldHead, act: str, body: dict[str, Any], record_id: str, is_intent: IsIntent) -> str | None:
    if act == "INTEND":
        role = None
        if head.opened_by is None:
            head.opened_by = record_id
            role = "opener"
        if head.state == UNOPENED:
            head.state = "open"
        return role
    if head.state in _TERMINAL:
        return None
    if act == "KNOW":
        verdict = body.get("verdict")
        role = "reviewer" if verdict in ("accept", "reject") else None
        if verdict == "reject":
            _close(head, "cancelled", record_id)
        elif (named := mentioned_ids(body.get("fulfills"))) and is_intent(named):
            _close(head, "done", record_id)
        else:
            head.state = "observed"
        return role
    if act == "DO" and (named := mentioned_ids(body.get("cancels"))) and is_intent(named):
        _close(head, "cancelled", record_id)
    elif act in _ACTIVE_ACTS and head.state in (UNOPENED, "open"):
        head.state = "active"
    return None


def _close(head: FoldHead, state: str, record_id: str) -> None:
    head.state = state
    head.closed_by = record_id


FIRST_NOT_INTEND = "first_record_not_intend"


def anomalies(first_act: str | None) -> list[str]:
    """What looks wrong with a thread, by seed 003's rules: its first record should be an INTEND.

    Seed 003: "if you see a thread whose first clock is DO or KNOW, that's a bug or a partially-migrated
    import". Flagged, never refused: the records are what they are.
    """
    if first_act is not None and first_act != "INTEND":
        return [FIRST_NOT_INTEND]
    return []


@dataclass
class Participant:
    actor: str
    record_count: int = 0
    role: str = "observer"

    def earn(self, role: str | None) -> None:
        if role is not None and ROLE_RANK[role] > ROLE_RANK[self.role]:
            self.role = role

    def to_wire(self) -> dict[str, Any]:
        return {"actor": self.actor, "record_count": self.record_count, "role": self.role}


@dataclass
class ThreadFold:
    """The fold of one thread held in memory; ``apply`` ignores records it already saw.

    The daemon reads folds from the store's projection; this class is the reference that
    projection is checked against, and what a caller with a thread's records in hand uses.
    """

    thread: str
    head: FoldHead = field(default_factory=FoldHead)
    record_count: int = 0
    last_clock: int | None = None
    last_seq: int = 0
    first_act: str | None = None
    intents: set[str] = field(default_factory=set)
    participants: dict[str, Participant] = field(default_factory=dict)

    @property
    def state(self) -> str:
        return self.head.state

    @property
    def opened_by(self) -> str | None:
        return self.head.opened_by

    @property
    def closed_by(self) -> str | None:
        return self.head.closed_by

    def apply(self, record: dict[str, Any]) -> None:
        seq = int(record.get("sequence", 0))
        if seq and seq <= self.last_seq:
            return
        self.last_seq = max(self.last_seq, seq)
        self.record_count += 1
        if self.first_act is None:
            self.first_act = record["act"]
        clock = record["clock"]
        self.last_clock = clock if self.last_clock is None else max(self.last_clock, clock)
        actor, act, record_id = record["actor"], record["act"], record["id"]
        participant = self.participants.setdefault(actor, Participant(actor))
        participant.record_count += 1
        participant.earn(step(self.head, act, record.get("body"), record_id, self._is_intent))
        if act == "INTEND":
            self.intents.add(record_id)

    def _is_intent(self, ids: Sequence[str]) -> bool:
        return any(record_id in self.intents for record_id in ids)

    def to_wire(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "record_count": self.record_count,
            "last_clock": self.last_clock,
            "watermark": self.last_seq,
            "opened_by": self.opened_by,
            "closed_by": self.closed_by,
            "participants": [p.to_wire() for p in sorted(self.participants.values(), key=lambda p: p.actor)],
            "anomalies": anomalies(self.first_act),
        }
