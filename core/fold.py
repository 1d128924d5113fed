"""The thread fold: a thread's lifecycle and participants, derived only from its records.

Seed 003 ("Threads"): INTEND opens (``open``), DO/CALL make it ``active``, KNOW makes it
``observed``, a KNOW whose ``body.fulfills`` names an INTEND of the thread closes it
(``done``); a DO with ``body.cancels`` or a KNOW with ``verdict: "reject"`` cancels it
(``cancelled``). Nothing is stored as a status column: state is ``fold(records)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Participant", "ThreadFold"]

_TERMINAL = ("done", "cancelled")
_ACTIVE_ACTS = ("DO", "CALL", "GET", "PUT", "MAP")


def _mentions(value: Any, wanted: set[str]) -> bool:
    if isinstance(value, str):
        return value in wanted
    if isinstance(value, list):
        return any(isinstance(item, str) and item in wanted for item in value)
    return False


@dataclass
class Participant:
    actor: str
    record_count: int = 0
    role: str = "observer"

    def to_wire(self) -> dict[str, Any]:
        return {"actor": self.actor, "record_count": self.record_count, "role": self.role}


@dataclass
class ThreadFold:
    """Incremental fold state for one thread; ``apply`` ignores records it already saw."""

    thread: str
    state: str = "empty"
    record_count: int = 0
    last_clock: int | None = None
    last_seq: int = 0
    opened_by: str | None = None
    closed_by: str | None = None
    intents: set[str] = field(default_factory=set)
    participants: dict[str, Participant] = field(default_factory=dict)

    def apply(self, record: dict[str, Any]) -> None:
        seq = int(record.get("sequence", 0))
        if seq and seq <= self.last_seq:
            return
        self.last_seq = max(self.last_seq, seq)
        self.record_count += 1
        clock = record["clock"]
        self.last_clock = clock if self.last_clock is None else max(self.last_clock, clock)
        actor, act = record["actor"], record["act"]
        body = record.get("body") or {}
        participant = self.participants.setdefault(actor, Participant(actor))
        participant.record_count += 1
        self._advance(act, body, record["id"], participant)

    def _advance(self, act: str, body: dict[str, Any], record_id: str, participant: Participant) -> None:
        if act == "INTEND":
            self.intents.add(record_id)
            if self.opened_by is None:
                self.opened_by = record_id
                participant.role = "opener"
            if self.state == "empty":
                self.state = "open"
            return
        if self.state in _TERMINAL:
            return
        if act == "KNOW":
            if body.get("verdict") in ("accept", "reject") and participant.role != "opener":
                participant.role = "reviewer"
            if body.get("verdict") == "reject":
                self._close("cancelled", record_id)
            elif _mentions(body.get("fulfills"), self.intents):
                self._close("done", record_id)
            else:
                self.state = "observed"
        elif act == "DO" and _mentions(body.get("cancels"), self.intents):
            self._close("cancelled", record_id)
        elif act in _ACTIVE_ACTS:
            if self.state in ("empty", "open"):
                self.state = "active"

    def _close(self, state: str, record_id: str) -> None:
        self.state = state
        self.closed_by = record_id

    def to_wire(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "record_count": self.record_count,
            "last_clock": self.last_clock,
            "watermark": self.last_seq,
            "opened_by": self.opened_by,
            "closed_by": self.closed_by,
            "participants": [p.to_wire() for p in sorted(self.participants.values(), key=lambda p: p.actor)],
        }
