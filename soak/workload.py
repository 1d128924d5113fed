"""The mixed workload beside the emits: pausing and resuming pairs, and (``--faults``) restarting the receiver.

The schedule is :func:`spl.soak.plan.workload_plan`; each action is logged as an event (the plot's
dashed verticals) and as a progress note.
"""

from __future__ import annotations

import trio

from spl.soak.config import SoakError
from spl.soak.pairing import CONTROL_CONCURRENCY
from spl.soak.plan import pause_seconds, workload_plan
from spl.soak.samplers import sample_pairs
from spl.soak.session import Session

__all__ = ["PAUSED_PAIRS", "control"]

#: Pairs paused and resumed in steady. Pausing hundreds at once would measure the control
#: API (one persisted record per call), not sync lag; a handful exercises the path.
PAUSED_PAIRS = 8


async def control(session: Session) -> None:
    """Run the workload plan's actions at their times (run time), one after another."""
    events = session.ledger.events
    hold = pause_seconds(session.windows)
    for at, action in workload_plan(session.windows, faults=session.config.faults):
        await trio.sleep_until(session.t0 + at)
        started = session.now()
        if action == "pause":
            events.append((started, "pairs paused"))
            await pause_and_resume(session, hold)
            events.append((session.now(), "pairs resumed"))
            paused = min(PAUSED_PAIRS, len(session.pair_ids))
            session.progress.note(
                f"paused {paused} pair(s) at {started:.1f}s for {hold:.2f}s each; "
                f"all resumed after {session.now() - started:.2f}s"
            )
            continue
        await restart_receiver(session, kill=action == "kill")
        label = "receiver restarted (kill -9)" if action == "kill" else "receiver restarted (SIGTERM)"
        events.append((started, label))
        session.progress.note(f"{label} at {started:.1f}s, took {session.now() - started:.2f}s")


async def pause_and_resume(session: Session, hold: float) -> None:
    """Pause the (first eight) pairs, hold each for ``hold`` seconds from its own pause, then resume it.

    Pauses and resumes have separate concurrency limits, so with many pairs a resume
    never queues behind the pauses of other pairs (each pair's pause stays ``hold``).
    """
    limiters = {action: trio.CapacityLimiter(CONTROL_CONCURRENCY // 2) for action in ("pause", "resume")}

    async def call(pair_id: str, action: str) -> None:
        async with limiters[action]:
            response = await session.request(
                "POST", f"{session.receiver_url}/v1/sync/pairs/{pair_id}/{action}", json={}
            )
        if response.status_code != 200:
            raise SoakError(f"{action} {pair_id}: {response.status_code} {response.text[:200]}")

    async def cycle(pair_id: str) -> None:
        await call(pair_id, "pause")
        await trio.sleep(hold)
        await call(pair_id, "resume")

    async with trio.open_nursery() as nursery:
        for pair_id in session.pair_ids[:PAUSED_PAIRS]:
            nursery.start_soon(cycle, pair_id)


async def restart_receiver(session: Session, *, kill: bool) -> None:
    """Stop the receiver (SIGTERM, or ``kill -9``) and start it again on the same home and port."""
    with trio.move_on_after(5):
        await sample_pairs(session)  # the last errors_total of this incarnation
    session.receiver_down = True
    receiver = session.cluster.receiver
    try:
        if kill:
            await trio.to_thread.run_sync(receiver.kill)
        else:
            await trio.to_thread.run_sync(receiver.stop)
        session.epoch += 1
        await trio.to_thread.run_sync(receiver.start)
    finally:
        session.receiver_down = False
