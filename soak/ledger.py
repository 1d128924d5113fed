"""What a soak run saw, as plain data: every acknowledged emit, every read-back, every sample, every event.

The run's tasks (emitter, read-back, samplers, workload) write here; :func:`spl.soak.result.build_result`
turns it into the figures once the run is over. No I/O, no clock: times are run seconds or, for
commit times, the Unix seconds the daemons wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from spl.soak.figures import ErrorSample, QueueSample
from spl.soak.procfs import ResourceSample

__all__ = ["Emitted", "Ledger"]


@dataclass
class Emitted:
    """One record the source acknowledged: when it was sent, its window, and its commit time on the source."""

    t: float
    window: int
    source_committed: float | None  # None until read back from the source (push acks carry no time)


@dataclass
class Ledger:
    """Everything one run observed; sized by the number of windows and of pairs."""

    windows: int
    pairs: int
    emitted: dict[str, Emitted] = field(default_factory=dict)
    emitted_by_window: list[int] = field(default_factory=list)
    skipped_by_window: list[int] = field(default_factory=list)  # scheduled emits dropped: the source fell behind
    synced: dict[str, float] = field(default_factory=dict)  # record id → commit time on the receiver
    primed: list[bool] = field(default_factory=list)  # the clock-1 record of each thread reached the receiver
    source_times: dict[str, float] = field(default_factory=dict)  # --emit push: id → commit time on the source
    unconfirmed: int = 0  # pushed records whose source commit time is not known yet
    queue_samples: list[QueueSample] = field(default_factory=list)
    error_samples: list[ErrorSample] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    emit_failures: list[str] = field(default_factory=list)
    last_errors: dict[str, str] = field(default_factory=dict)  # pair id → its last error, as the receiver said
    resources: list[ResourceSample] = field(default_factory=list)
    baseline: dict[str, ResourceSample] = field(default_factory=dict)  # before any pair existed
    traffic: list[tuple[float, int, int]] = field(default_factory=list)  # (t, bytes to source, bytes from source)
    final_errors_read: bool = False  # GET /v1/sync/pairs answered after the drain

    def __post_init__(self) -> None:
        self.emitted_by_window = self.emitted_by_window or [0] * self.windows
        self.skipped_by_window = self.skipped_by_window or [0] * self.windows
        self.primed = self.primed or [False] * self.pairs

    def all_synced(self) -> bool:
        """Every acknowledged record is known on the source and was read back from the receiver."""
        return not self.unconfirmed and all(record_id in self.synced for record_id in self.emitted)
