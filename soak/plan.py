"""The soak's schedule, sans I/O: the five windows, the emit rate over time, and the control actions.

``spl federation soak`` reports, per window, the CSV of the pairing seed (``001_…`` "Soak results");
this module says what those windows are and how hard each one drives the pair. Times are seconds since
the start of the first window (the driver reads them off trio's clock); nothing here touches the
network, the disk or a clock, so the arithmetic is testable on its own. The figures computed from a run
are in :mod:`spl.soak.figures`, their CSV/table/JSON in :mod:`spl.soak.report`, the plot in
:mod:`spl.soak.plot`.

The load shape (seed proportions 5 / 15 / 60 / 5 / 15 minutes, ``R`` = the steady
emit rate per pair):

========== ================= ===================================
window     share of the run  emit rate per pair
========== ================= ===================================
warmup     5 %               0.5 R
ramp       15 %              0.5 R → R, linear
steady     60 %              R
spike      5 %               4 R
recovery   15 %              R
========== ================= ===================================
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "RATE_SHAPE",
    "SEED_MINUTES",
    "SEED_STEADY_RATE",
    "SEED_TOTAL_SECONDS",
    "WINDOW_NAMES",
    "Window",
    "emits_due",
    "pause_seconds",
    "plan_windows",
    "rate_at",
    "window_index",
    "workload_plan",
]

WINDOW_NAMES = ("warmup", "ramp", "steady", "spike", "recovery")
SEED_MINUTES = (5.0, 15.0, 60.0, 5.0, 15.0)
SEED_TOTAL_SECONDS = sum(SEED_MINUTES) * 60.0  # 100 minutes
SEED_STEADY_RATE = 33_180 / 3_600  # records/s: the seed's steady window, 33,180 records in 60 minutes
#: Emit-rate multipliers (start, end) of each window, relative to the steady rate.
RATE_SHAPE = ((0.5, 0.5), (0.5, 1.0), (1.0, 1.0), (4.0, 4.0), (1.0, 1.0))


# -- the schedule ------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """One soak window: ``[start, end)`` seconds after the run starts, and its rate shape."""

    name: str
    start: float
    end: float
    rate_from: float  # multiplier of the steady rate at ``start``
    rate_to: float  # … and at ``end`` (linear in between)

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def minutes(self) -> float:
        return self.seconds / 60.0

    def at(self, fraction: float) -> float:
        """The time ``fraction`` (0..1) of the way through this window."""
        return self.start + fraction * self.seconds


def plan_windows(scale: float | None = None, duration: float | None = None) -> tuple[Window, ...]:
    """The five windows in the seed's proportions.

    Args:
        scale: multiplies the seed's 100 minutes (``0.1`` = 10 minutes, ``0.01`` = 1 minute).
        duration: the total length in seconds instead (exclusive with ``scale``).

    Returns:
        ``warmup, ramp, steady, spike, recovery``, back to back from time 0.

    Raises:
        ValueError: both or a non-positive value given.
    """
    if scale is not None and duration is not None:
        raise ValueError("give --scale or --duration, not both")
    if duration is not None:
        total = duration
    else:
        factor = 1.0 if scale is None else scale
        if not factor > 0 or math.isinf(factor):
            raise ValueError("--scale must be a positive number (0.1 = a 10-minute run)")
        total = SEED_TOTAL_SECONDS * factor
    if not total > 0 or math.isinf(total):
        raise ValueError("--duration must be longer than zero")
    windows: list[Window] = []
    start = 0.0
    share_total = sum(SEED_MINUTES)
    for index, (name, minutes, (rate_from, rate_to)) in enumerate(
        zip(WINDOW_NAMES, SEED_MINUTES, RATE_SHAPE, strict=True)
    ):
        end = total if index == len(WINDOW_NAMES) - 1 else start + total * minutes / share_total
        windows.append(Window(name, start, end, rate_from, rate_to))
        start = end
    return tuple(windows)


def window_index(windows: Sequence[Window], t: float) -> int:
    """The window ``t`` falls in (a boundary belongs to the later window); clamped to the run."""
    for index, window in enumerate(windows):
        if t < window.end:
            return index
    return len(windows) - 1


def rate_at(windows: Sequence[Window], steady_rate: float, t: float) -> float:
    """Emit rate per pair (records/s) at time ``t``; 0 outside the run."""
    if not windows or t < 0 or t >= windows[-1].end:
        return 0.0
    window = windows[window_index(windows, t)]
    fraction = (t - window.start) / window.seconds if window.seconds > 0 else 0.0
    return steady_rate * (window.rate_from + (window.rate_to - window.rate_from) * fraction)


def emits_due(windows: Sequence[Window], steady_rate: float, t: float) -> float:
    """Records one pair should have emitted by time ``t``: the integral of :func:`rate_at` over ``[0, t]``."""
    total = 0.0
    for window in windows:
        if t <= window.start:
            break
        span = min(t, window.end) - window.start
        slope = (window.rate_to - window.rate_from) / window.seconds if window.seconds > 0 else 0.0
        total += steady_rate * (window.rate_from * span + slope * span * span / 2)
    return total


# -- the mixed workload ----------------------------------------------------------------------


def pause_seconds(windows: Sequence[Window]) -> float:
    """How long the pair(s) stay paused: 0.5 % of the steady window, between 0.1 s and 2 s.

    Records emitted while paused wait for the resume, so the pause is kept well inside
    the 1 % of records that p99 may leave out.
    """
    steady = windows[WINDOW_NAMES.index("steady")]
    return min(2.0, max(0.1, 0.005 * steady.seconds))


def workload_plan(windows: Sequence[Window], *, faults: bool) -> list[tuple[float, str]]:
    """The control actions of a run, as ``(run time, action)`` in time order.

    Always: ``pause`` 40 % into steady — the pair (with ``--pairs``, the first eight)
    is paused, held for :func:`pause_seconds`, then resumed, each on its own clock.
    With ``faults``: ``restart`` (SIGTERM, start again) of the receiving daemon half-way
    through ramp, and ``kill`` (``kill -9``, start again) 70 % into steady.
    """
    ramp = windows[WINDOW_NAMES.index("ramp")]
    steady = windows[WINDOW_NAMES.index("steady")]
    plan = [(steady.at(0.4), "pause")]
    if faults:
        plan += [(ramp.at(0.5), "restart"), (steady.at(0.7), "kill")]
    return sorted(plan)
