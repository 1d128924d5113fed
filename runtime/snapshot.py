"""Snapshots of a supervision tree: what the HTTP API and ``spl status`` show (design/runtime.md).

Plain frozen ``msgspec`` structs, apart from the supervisor machinery, so that readers (the HTTP layer, the CLI
decoding the API's answer) need nothing else. States: "starting", "running", "restarting", "paused",
"stopped", "failed", "exited". Times are trio time (``trio.current_time()``).
"""

from __future__ import annotations

import msgspec


class ChildSnapshot(msgspec.Struct, frozen=True):
    """One child as the HTTP API and ``spl status`` show it. ``next_retry_at`` is in trio time."""

    id: str
    state: str
    restarts: int
    last_error: str | None
    next_retry_at: float | None
    restart: str
    paused: bool
    children: SupervisorSnapshot | None


class SupervisorSnapshot(msgspec.Struct, frozen=True):
    """A supervisor and, recursively, its children."""

    id: str
    strategy: str
    state: str
    children: list[ChildSnapshot]
