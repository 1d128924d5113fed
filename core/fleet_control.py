"""The kill switch (``th_fleet_control``): which writes this instance refuses right now. Pure: no I/O.

An operator freezes the instance with ``spl kill --soft|--hard|--emergency`` and thaws it with ``spl unkill``.
Each is one ``LEARN`` on ``th_fleet_control`` signed by the instance (only its own routes write there, and only
records it signed change the state, like every reserved thread, spec §15.18)::

    {"kind": "core.fleet.freeze.v1", "_v": 1, "level": "soft"|"hard"|"emergency", "reason": "…"}
    {"kind": "core.fleet.unfreeze.v1", "_v": 1, "reason": "…"}

The state is the last such record (in store order): its level, when (its clock, microseconds, as RFC 3339), its
reason and its id. Because it is folded from the log, a freeze survives a restart, an import and a crash.

What each level refuses, by where the write comes from (:data:`ORIGINS`):

========== ======================================== ==================================================
level      refused                                  still accepted
========== ======================================== ==================================================
soft       ``INTEND`` from client, push, pull,      every other act; everything the instance itself
           import (no new work starts)              writes (system, joiner)
hard       every origin but ``system``              the daemon's own configuration (``spl unkill``,
                                                    namespaces, pairs, actors)
emergency  as hard, and the HTTP front refuses      ``/health``, ``/v1/identity``, ``/.well-known/*``
           every request but those on the right     and callers holding the ``admin`` scope
========== ======================================== ==================================================

An import is refused under any freeze (a bundle restores a whole log: there is no INTEND-only way to take it).
Every refusal is a 503 :class:`FleetFrozen` whose code names the level and whose message says since when, why,
and how to lift it: a 503 tells a pusher or a pair to retry later, which is what a freeze asks of them.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from spl.core.errors import InvalidRequest, Unavailable
from spl.core.rotation import owns
from spl.core.text import printable

__all__ = [
    "FLEET_THREAD",
    "FREEZE_KIND",
    "LEVELS",
    "MAX_REASON",
    "ORIGINS",
    "UNFREEZE_KIND",
    "FleetFrozen",
    "FleetState",
    "check_level",
    "check_reason",
    "freeze_body",
    "unfreeze_body",
]

FLEET_THREAD = "th_fleet_control"
# Where a write comes from: a client's emit (POST /v1/records, tasks), a peer's push, a pair's pull, an
# import, this instance's own configuration record (a reserved thread), the joiner's synthesis.
ORIGINS = ("client", "push", "pull", "import", "system", "joiner")
LEVELS = ("soft", "hard", "emergency")  # in increasing strength; "none" is the thawed state
FREEZE_KIND = "core.fleet.freeze.v1"
UNFREEZE_KIND = "core.fleet.unfreeze.v1"
MAX_REASON = 500

# Origins whose INTENDs a soft freeze refuses: new work from outside. The instance's own records pass.
_SOFT_REFUSED = frozenset({"client", "push", "pull", "import"})
_CODES = {level: f"FLEET_FROZEN_{level.upper()}" for level in LEVELS}
_MEANING = {
    "soft": "new INTENDs are refused",
    "hard": "every write but the daemon's own configuration is refused",
    "emergency": "every request but /health, /v1/identity, /.well-known/* and admin callers is refused",
}


class FleetFrozen(Unavailable):
    """A write (or, under an emergency freeze, a request) refused by the kill switch: 503, code per level."""

    def __init__(self, level: str, since: str | None, reason: str) -> None:
        why = f": {printable(reason, MAX_REASON)}" if reason else " (no reason given)"
        super().__init__(
            f"this instance is frozen ({level}) since {since or 'an unknown time'}{why}; {_MEANING[level]}. "
            "An operator lifts the freeze with `spl unkill` (see `spl status`); retry after that",
            code=_CODES[level],
        )
        self.level = level


def check_level(value: object) -> str:
    """A freeze level from a request, or 400 naming the choices."""
    if not isinstance(value, str) or value not in LEVELS:
        raise InvalidRequest(
            f"level must be one of {', '.join(LEVELS)} (got {printable(value, 32)})", code="INVALID_LEVEL"
        )
    return value


def check_reason(value: object) -> str:
    """A reason from a request: a string of at most 500 printable characters (empty allowed), or 400.

    It is shown in every refusal, in ``/health`` and in ``spl status``: printable only, so it cannot drive a
    terminal or forge a log line, and bounded, so it cannot bloat every error answer.
    """
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRequest("reason must be a string of at most 500 printable characters", code="INVALID_REASON")
    if len(value) > MAX_REASON or not value.isprintable():
        raise InvalidRequest(
            f"reason must be at most {MAX_REASON} printable characters (no newlines or control characters)",
            code="INVALID_REASON",
        )
    return value


def freeze_body(level: str, reason: str) -> dict[str, Any]:
    """The ``LEARN`` body of ``spl kill``; both fields checked as a request's are."""
    return {"kind": FREEZE_KIND, "_v": 1, "level": check_level(level), "reason": check_reason(reason)}


def unfreeze_body(reason: str) -> dict[str, Any]:
    """The ``LEARN`` body of ``spl unkill``."""
    return {"kind": UNFREEZE_KIND, "_v": 1, "reason": check_reason(reason)}


def _rfc3339_micros(clock: int) -> str:
    """A system record's clock (microseconds since the epoch) as RFC 3339, to the second, UTC."""
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock / 1_000_000))
    except (OverflowError, OSError, ValueError):
        return "an unknown time"


@dataclass
class FleetState:
    """The kill switch as the last freeze/unfreeze record this instance signed left it.

    ``level`` is ``"none"`` or one of :data:`LEVELS`; ``since`` the RFC 3339 time of that record (None before any).
    """

    level: str = "none"
    since: str | None = None
    reason: str = ""
    record_id: str | None = None

    @property
    def frozen(self) -> bool:
        return self.level != "none"

    def error(self) -> FleetFrozen | None:
        """The refusal for anything the current level refuses outright (an import, a gated request); None if thawed."""
        return FleetFrozen(self.level, self.since, self.reason) if self.frozen else None

    def refusal(self, origin: str, act: str) -> FleetFrozen | None:
        """Why a record of ``act`` from ``origin`` may not be written now, or None when it may."""
        if self.level == "none" or origin == "system":
            return None
        if self.level == "soft":
            if act != "INTEND" or origin not in _SOFT_REFUSED:
                return None
        return self.error()

    def apply(self, act: str, body: Any, record_id: str, clock: int) -> bool:
        """Take one record of ``th_fleet_control`` signed by this instance; True when it moved the switch.

        Anything but a well-formed freeze or unfreeze ``LEARN`` (a genesis record, a later kind, a damaged body)
        changes nothing: the switch only ever moves on a record that says exactly what to do.
        """
        if act != "LEARN" or not isinstance(body, Mapping):
            return False
        kind = body.get("kind")
        try:
            reason = check_reason(body.get("reason"))
            if kind == FREEZE_KIND:
                level = check_level(body.get("level"))
            elif kind == UNFREEZE_KIND:
                level = "none"
            else:
                return False
        except InvalidRequest:
            return False
        self.level, self.reason, self.record_id = level, reason, record_id
        self.since = _rfc3339_micros(clock) if isinstance(clock, int) else None
        return True

    def to_wire(self) -> dict[str, Any]:
        return {
            "object": "fleet_control",
            "level": self.level,
            "frozen": self.frozen,
            "since": self.since,
            "reason": self.reason,
            "record_id": self.record_id,
        }

    @classmethod
    def folded(cls, records: Iterable[Mapping[str, Any]], own_did: str | Collection[str]) -> FleetState:
        """The state from ``th_fleet_control``'s stored records (decoded, in store order): own records only
        (signed by any key of the instance's rotation chain: a rotated steward keeps its freeze)."""
        state = cls()
        for record in records:
            if owns(own_did, record.get("signer")) and record.get("thread", FLEET_THREAD) == FLEET_THREAD:
                state.apply(
                    record.get("act", ""), record.get("body"), str(record.get("id", "")), record.get("clock", 0)
                )
        return state
