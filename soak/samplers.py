"""Sampling the receiver (and the local daemons) while the run goes on, without distorting what is measured.

- ``/v1/sync/health`` → the reconcile queue's depth and high-water mark (every 100 ms at most);
- ``/v1/sync/pairs`` → each pair's ``errors_total`` and last error (every 0.5 s, slower for many pairs);
- /proc → resident memory and descriptors of the daemons started here, and the relay's byte counters;
- the progress line on stderr.

Samples taken while the receiver restarts (or answered by an earlier incarnation) are dropped: each
keeps the epoch it was taken in, since the daemon's counters restart with it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import trio

from spl.soak.cluster import Cluster
from spl.soak.figures import ErrorSample, QueueSample, error_deltas_by_window
from spl.soak.plan import rate_at, window_index
from spl.soak.procfs import ResourceSample, resources
from spl.soak.session import Session

__all__ = [
    "PROGRESS_PERIOD",
    "SAMPLE_DUTY",
    "every",
    "look_at_daemons",
    "report_progress",
    "sample_pairs",
    "sample_queue",
    "sample_resources",
]

SAMPLE_DUTY = 0.02  # samplers may keep the receiver busy 2 % of the time at most
PROGRESS_PERIOD = 0.5  # seconds between two updates of the progress line


async def every(interval: float, action: Callable[[], Awaitable[object]], *, stretch: bool = True) -> None:
    """Run ``action`` every ``interval`` seconds until cancelled; a failure is skipped, not fatal.

    With ``stretch`` the period grows so that sampling keeps the receiver busy at most
    ``SAMPLE_DUTY`` of the time: ``/v1/sync/health`` walks every pair's last hour of
    figures, so at high rates one call costs tens of milliseconds, and sampling it every
    100 ms would take a fifth of the receiver's CPU and distort the lag being measured.
    Peaks between samples are not lost: the queue's high-water mark carries them.
    """
    while True:
        started = trio.current_time()
        try:
            with trio.move_on_after(max(5.0, interval * 10)):
                await action()
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        took = trio.current_time() - started
        await trio.sleep_until(started + (max(interval, took / SAMPLE_DUTY) if stretch else interval))


async def _sample(session: Session, path: str) -> tuple[int, dict[str, Any]] | None:
    """GET on the receiver unless it is restarting; None when it did not answer in this epoch."""
    if session.receiver_down:
        return None
    epoch = session.epoch
    try:
        response = await session.sampler().get(
            f"{session.receiver_url}{path}", timeout=10.0 + session.config.pairs / 50
        )
    except httpx.HTTPError:
        return None
    if session.receiver_down or epoch != session.epoch or response.status_code != 200:
        return None
    payload: dict[str, Any] = response.json()
    return epoch, payload


async def sample_queue(session: Session) -> None:
    """One read of the receiver's reconcile queue."""
    answer = await _sample(session, "/v1/sync/health")
    if answer is None:
        return
    epoch, health = answer
    queue = health.get("reconcile_queue") or {}
    sample = QueueSample(session.now(), epoch, int(queue.get("depth", 0)), int(queue.get("high_water", 0)))
    session.ledger.queue_samples.append(sample)
    session.status.queue = sample.depth


async def sample_pairs(session: Session) -> bool:
    """Read every pair's ``errors_total``; False when the receiver did not answer."""
    answer = await _sample(session, "/v1/sync/pairs")
    if answer is None:
        return False
    epoch, listing = answer
    ledger = session.ledger
    t = session.now()
    ours = set(session.pair_ids)
    for pair in listing.get("data", []):
        if pair.get("pair_id") in ours:
            ledger.error_samples.append(ErrorSample(t, epoch, str(pair["pair_id"]), int(pair.get("errors_total", 0))))
            error = pair.get("last_error")
            if isinstance(error, dict) and error.get("code"):
                ledger.last_errors[str(pair["pair_id"])] = f"{error.get('code')}: {error.get('message')}"
    session.status.errors = sum(error_deltas_by_window(session.windows, ledger.error_samples))
    return True


def look_at_daemons(cluster: Cluster, t: float) -> list[ResourceSample]:
    """Resident memory and descriptors of the daemons started here that are running (blocking /proc reads)."""
    samples = []
    for role, daemon in (("source", cluster.source), ("receiver", cluster.receiver)):
        if daemon is None or daemon.process is None or daemon.process.poll() is not None:
            continue
        found = resources(daemon.process.pid)
        if found is not None:
            samples.append(ResourceSample(t, role, *found))
    return samples


async def sample_resources(session: Session) -> None:
    """RSS and fds of the daemons started here, and the relay's byte counters (local /proc reads)."""
    t = session.now()
    ledger = session.ledger
    if not session.receiver_down:
        ledger.resources.extend(await trio.to_thread.run_sync(look_at_daemons, session.cluster, t))
    relay = session.cluster.relay
    if relay is not None:
        counters = await trio.to_thread.run_sync(relay.counters)
        if counters is not None:
            ledger.traffic.append((t, *counters))


async def report_progress(session: Session) -> None:
    """Refresh the progress line until cancelled."""
    config, ledger, status = session.config, session.ledger, session.status
    while True:
        t = session.now()
        status.t = min(t, config.total_seconds)
        status.window = session.windows[window_index(session.windows, t)].name if t < config.total_seconds else ""
        status.emitted = len(ledger.emitted)
        status.synced = len(ledger.synced) - sum(ledger.primed)
        status.rate = config.pairs * rate_at(session.windows, config.rate, t)
        session.progress.update(status)
        await trio.sleep(PROGRESS_PERIOD)
