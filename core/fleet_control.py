"""The kill switch (``th_fleet_control``): which writes this instance refuses right now. Pure: no I/O.

STUB — filled in by the kill-switch work (issue 12). The interface the store writer and the HTTP gate use:

* ``FleetState.refusal(origin, act)`` → an ``SplError`` (503, a code naming the freeze) or ``None``;
  ``origin`` is one of ``ORIGINS``.
* ``FleetState.apply(act, body, record_id, clock)`` → True when the state changed (a record signed by this
  instance landed on ``th_fleet_control``).
* ``FleetState.folded(records, own_did)`` → the state from a thread's stored records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from spl.core.errors import SplError

__all__ = ["FLEET_THREAD", "ORIGINS", "FleetState"]

FLEET_THREAD = "th_fleet_control"
# Where a write comes from: a client's emit (POST /v1/records, tasks), a peer's push, a pair's pull, an
# import, this instance's own configuration record (a reserved thread), the joiner's synthesis.
ORIGINS = ("client", "push", "pull", "import", "system", "joiner")


@dataclass
class FleetState:
    level: str = "none"

    def refusal(self, origin: str, act: str) -> SplError | None:
        return None

    def apply(self, act: str, body: Any, record_id: str, clock: int) -> bool:
        return False

    @classmethod
    def folded(cls, records: Iterable[Mapping[str, Any]], own_did: str) -> FleetState:
        return cls()
