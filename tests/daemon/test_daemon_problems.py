"""What the daemon reports as degraded (``describe_problems``, behind ``/health``), on trio's MockClock.

The root is built the way ``Daemon.run`` builds it: essential children by default, the optional ones
(``federation``, ``reconciler``, ``watchdog``) with ``essential=False``.
"""

from __future__ import annotations

import trio
import trio.testing

from spl.daemon.assembly import describe_problems
from spl.runtime.backoff import Backoff
from spl.runtime.supervisor import ChildContext, ChildSpec, Supervisor

GUARD = 1000.0


async def steady(ctx: ChildContext) -> None:
    ctx.started()
    await ctx.stop_requested.wait()


async def test_a_left_down_child_a_restart_and_stopping_are_reported(autojump_clock: trio.testing.MockClock) -> None:
    writer_fails = trio.Event()
    last_federation_start = trio.Event()

    async def federation(ctx: ChildContext) -> None:
        ctx.started()
        if ctx.incarnation == 5:  # the first start and 5 restarts: this crash goes over the limit
            last_federation_start.set()
        raise RuntimeError("peer sent garbage")

    async def writer(ctx: ChildContext) -> None:
        ctx.started()
        await writer_fails.wait()
        raise OSError("disk on fire")

    root = Supervisor(
        "root",
        [
            ChildSpec("store-writer", writer),
            ChildSpec("http-server", steady),
            ChildSpec("federation", federation, essential=False),
        ],
        max_restarts=5,
        period=60.0,
        backoff_factory=lambda: Backoff(base=0.1, factor=1.0, jitter=0.0),
    )
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            await nursery.start(root.run)
            await last_federation_start.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert describe_problems(root, stopping=False) == [
                "federation: stopped after 5 restarts in 60 s (last error: RuntimeError: peer sent garbage)"
            ]
            writer_fails.set()
            await trio.testing.wait_all_tasks_blocked()  # the writer crashed and waits for its backoff
            assert describe_problems(root, stopping=True, more=[None, "store writer: STORAGE_FULL since …"]) == [
                "stopping",
                "store-writer: restarting (last error: OSError: disk on fire)",
                "federation: stopped after 5 restarts in 60 s (last error: RuntimeError: peer sent garbage)",
                "store writer: STORAGE_FULL since …",
            ]
            root.shutdown()


async def test_nothing_to_report(autojump_clock: trio.testing.MockClock) -> None:
    root = Supervisor("root", [ChildSpec("http-server", steady), ChildSpec("watchdog", steady, essential=False)])
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            await nursery.start(root.run)
            assert describe_problems(root, stopping=False, more=[None]) == []
            root.shutdown()
