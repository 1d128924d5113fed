"""What one soak run does (:class:`SoakConfig`, checked when it is made) and the error a run raises."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from spl.soak.plan import SEED_STEADY_RATE, Window

__all__ = ["EMIT_PATHS", "MODES", "SoakConfig", "SoakError"]

MODES = ("continuous", "polling")
EMIT_PATHS = ("records", "push")


class SoakError(Exception):
    """The soak could not run (bad options, setup failed, peer unreachable …); the message names the fix."""


@dataclass(frozen=True)
class SoakConfig:
    """What one run does; ``windows`` comes from :func:`spl.soak.plan.plan_windows`."""

    windows: tuple[Window, ...]
    rate: float = SEED_STEADY_RATE  # steady emit rate per pair, records/s
    pairs: int = 1
    mode: str = "continuous"
    poll_interval: float = 0.2
    faults: bool = False
    peer_url: str | None = None
    peer_token: str | None = None
    connections: int | None = None  # emit connections; None = by peak rate
    drain_timeout: float = 60.0
    setup_timeout: float | None = None  # None = 60 s + 0.1 s per pair
    log_level: str = "warning"
    queue_interval: float = 0.1
    readback_interval: float = 2.0
    settle: float = 1.0  # after the pairs are live, before the clock starts
    relay: bool = False  # pairs reach the source through a byte-counting relay (bandwidth per pair)
    emit: str = "records"  # "records": POST /v1/records per record; "push": signed batches, POST /v1/sync/records
    resource_interval: float = 1.0  # RSS / fd samples of the daemons started here

    def __post_init__(self) -> None:
        """Refuse a config that cannot run, before anything is started; the message names the option."""
        if not self.windows:
            raise SoakError("a soak needs its windows (spl.soak.plan.plan_windows)")
        if self.pairs < 1:
            raise SoakError("--pairs must be at least 1")
        if self.mode not in MODES:
            raise SoakError(f"--mode {self.mode!r} is not a mode; use {' or '.join(MODES)}")
        if self.emit not in EMIT_PATHS:
            raise SoakError(f"--emit {self.emit!r}: use {' or '.join(EMIT_PATHS)}")
        if not self.rate > 0:
            raise SoakError("--rate must be above zero (records/s per pair)")
        if not self.poll_interval > 0:
            raise SoakError("--poll-interval must be above zero")
        if self.peer_token is not None and self.peer_url is None:
            raise SoakError("--peer-token needs --peer-url")
        if self.connections is not None and self.connections < 1:
            raise SoakError("--connections must be at least 1")

    @property
    def total_seconds(self) -> float:
        return self.windows[-1].end

    @property
    def peak_total_rate(self) -> float:
        return self.rate * self.pairs * max(max(w.rate_from, w.rate_to) for w in self.windows)

    def emit_connections(self) -> int:
        if self.connections is not None:
            return max(1, self.connections)
        if self.emit == "push":
            return 2  # each request carries a batch: two keep one in flight while the other is built
        return int(min(16, max(2, math.ceil(self.peak_total_rate / 200))))

    def pairs_interval(self) -> float:
        return min(5.0, 0.5 * max(1.0, self.pairs / 100))

    def describe(self) -> dict[str, Any]:
        """The config as written into the ``--out`` JSON (never the token)."""
        return {
            "rate_per_pair": self.rate,
            "pairs": self.pairs,
            "mode": self.mode,
            "poll_interval": self.poll_interval if self.mode == "polling" else None,
            "faults": self.faults,
            "peer_url": self.peer_url,
            "peer_token": "(given)" if self.peer_token else None,
            "emit_connections": self.emit_connections(),
            "drain_timeout": self.drain_timeout,
            "total_seconds": self.total_seconds,
            "relay": self.relay,
            "emit": self.emit,
        }
