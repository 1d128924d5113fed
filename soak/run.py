"""Running one soak end to end: :func:`run_soak`.

It starts (or reuses, with ``--peer-url``) the daemons (:mod:`spl.soak.cluster`), then runs one
trio program over a :class:`~spl.soak.session.Session`:

- setup (:mod:`spl.soak.pairing`): the pairs, a priming record per thread, until all of them pull;
- the **emitter** (:mod:`spl.soak.emitter`) at the window rates, beside the **workload**
  (:mod:`spl.soak.workload`: pause/resume, and with ``--faults`` receiver restarts);
- the **samplers** (:mod:`spl.soak.samplers`) and the **read-back** of the receiver's records
  every 2 s (:mod:`spl.soak.readback`), which gives each record's commit time on the receiver;
- the **drain**: read back until every acknowledged record is on the receiver, bounded by
  ``drain_timeout``; then the figures (:func:`spl.soak.result.build_result`).

Every loop is bounded in time and concurrency is bounded everywhere. The daemons it started are
stopped and their homes removed in a ``finally`` — on errors, on Ctrl-C, and on SIGTERM
(:mod:`spl.soak.interrupts`), which raises :class:`~spl.soak.interrupts.SoakInterrupted`.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from functools import partial
from pathlib import Path

import httpx
import trio

from spl.soak.cluster import Cluster
from spl.soak.config import SoakConfig, SoakError
from spl.soak.emitter import emit
from spl.soak.interrupts import SoakInterrupted, StopSignals
from spl.soak.pairing import set_up
from spl.soak.progress import Progress
from spl.soak.readback import read_receiver, read_source
from spl.soak.result import SoakResult, build_result
from spl.soak.samplers import every, report_progress, sample_pairs, sample_queue, sample_resources
from spl.soak.session import Session
from spl.soak.workload import control

__all__ = ["DRAIN_POLL", "run_soak"]

DRAIN_POLL = 0.25  # seconds between read-backs while draining
FINAL_ERROR_READS = 5  # tries at the last GET /v1/sync/pairs, a second apart


def run_soak(
    config: SoakConfig, progress: Progress | None = None, *, workdir: Path | None = None, keep: bool = False
) -> SoakResult:
    """Run one soak end to end; the daemons it starts are always stopped (and their homes removed unless ``keep``).

    Raises:
        SoakError: the run could not start or a control action failed.
        SoakInterrupted: SIGINT, SIGTERM or SIGHUP stopped it (after the daemons were stopped and their homes
            removed); its ``partial`` holds the figures so far when emitting had begun.
    """
    progress = progress or Progress()
    with StopSignals() as signals:
        root: Path | None = None
        cluster: Cluster | None = None
        session: Session | None = None
        try:
            root = Path(tempfile.mkdtemp(prefix="spl-soak-", dir=workdir))
            cluster = Cluster(config, root)
            where = f"the peer {config.peer_url}" if config.peer_url else "a throw-away source"
            progress.note(f"starting the receiving daemon and {where} on 127.0.0.1")
            cluster.start()
            session = Session(config, cluster, progress)
            try:
                result: SoakResult = signals.run(partial(_drive, session))
                return result
            except BaseExceptionGroup as group:
                raise _unwrap(group) from None
        except KeyboardInterrupt as stop:
            interrupted = signals.interrupted(stop)
            progress.note(f"interrupted ({interrupted}): stopping the daemons")
            interrupted.partial = _partial(session, interrupted)
            raise interrupted from None
        except (RuntimeError, OSError) as exc:
            raise SoakError(f"{type(exc).__name__}: {exc}") from None
        finally:
            progress.close()
            with signals.hurrying(cluster.kill_now if cluster is not None else lambda: None):
                if cluster is not None:
                    cluster.stop()
                if root is not None and keep:
                    progress.note(f"kept the daemons' homes and logs (test-daemon.log) in {root}")
                elif root is not None:
                    shutil.rmtree(root, ignore_errors=True)


async def _drive(session: Session) -> SoakResult:
    """The trio program of one run: setup, then emit + workload beside the samplers, then drain."""
    config, progress = session.config, session.progress
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=16)
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0), limits=limits) as session.http,
        httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=2.0), limits=limits) as session.samples_http,
    ):
        await set_up(session)
        session.t0 = trio.current_time()
        started_at = session.started_at = time.time()
        session.status.phase = "running"
        progress.total = config.total_seconds
        progress.note(
            f"running {config.total_seconds:.0f}s: {config.pairs} pair(s) × {config.rate:g} "
            f"records/s steady, {config.emit_connections()} emit connection(s)"
            + (", with faults" if config.faults else "")
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(every, config.queue_interval, partial(sample_queue, session))
            nursery.start_soon(every, config.pairs_interval(), partial(sample_pairs, session))
            # Read-backs are not stretched: a later one would only have more to read.
            nursery.start_soon(partial(every, stretch=False), config.readback_interval, partial(_read_live, session))
            nursery.start_soon(every, config.resource_interval, partial(sample_resources, session))
            if config.emit == "push":
                nursery.start_soon(
                    partial(every, stretch=False), config.readback_interval, partial(read_source, session)
                )
            nursery.start_soon(report_progress, session)
            async with trio.open_nursery() as load:
                load.start_soon(emit, session)
                load.start_soon(control, session)
            session.status.phase = "draining"
            progress.note(f"emitting done ({len(session.ledger.emitted)} records); draining")
            drain_seconds = await drain(session)
            nursery.cancel_scope.cancel()
        progress.close()
    return build_result(config, session.ledger, started_at=started_at, drain_seconds=drain_seconds)


def _partial(session: Session | None, stop: SoakInterrupted) -> SoakResult | None:
    """The figures of a run stopped by a signal, up to the stop (None before the first window began).

    Records emitted since the last read-back (every 2 s) were not seen on the receiver yet and count as
    not synced; a note says so.
    """
    if session is None or session.started_at is None:
        return None
    stopped_at = time.time() - session.started_at
    result = build_result(session.config, session.ledger, started_at=session.started_at, drain_seconds=0.0)
    result.interrupted = f"{stop} at {stopped_at:.1f} s"
    result.notes.insert(
        0,
        f"partial figures: stopped by {stop} at {stopped_at:.1f} s of {session.config.total_seconds:.0f} s, "
        "without a drain (records emitted in the last read-back interval count as not synced)",
    )
    return result


async def _read_live(session: Session) -> None:
    if not session.receiver_down:
        await read_receiver(session)


async def drain(session: Session) -> float:
    """Read back until every acknowledged record is on the receiver (bounded by ``drain_timeout``),
    then take the last pair-error figures; returns the seconds it took."""
    ledger = session.ledger
    started = trio.current_time()
    with trio.move_on_after(session.config.drain_timeout):
        while True:
            try:
                await read_receiver(session)
            except (httpx.HTTPError, ValueError):
                pass
            if session.config.emit == "push" and ledger.unconfirmed:
                try:
                    await read_source(session)
                except (httpx.HTTPError, ValueError):
                    pass
            if ledger.all_synced():
                break
            await trio.sleep(DRAIN_POLL)
    for _ in range(FINAL_ERROR_READS):  # the figures that decide the verdict: never skip them silently
        if await sample_pairs(session):
            ledger.final_errors_read = True
            break
        await trio.sleep(1.0)
    return trio.current_time() - started


def _unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception a nursery raised: a KeyboardInterrupt (SoakInterrupted included) if there is
    one, then a SoakError, then anything."""
    leaves: list[BaseException] = []

    def walk(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                walk(inner)
        else:
            leaves.append(error)

    walk(group)
    for kinds in ((SoakInterrupted,), (KeyboardInterrupt,), (SoakError,), (BaseException,)):
        for leaf in leaves:
            if isinstance(leaf, kinds):
                return leaf
    return group
