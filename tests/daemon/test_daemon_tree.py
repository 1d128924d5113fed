"""The daemon's supervision tree with a child that keeps failing: in-process ``Daemon.run`` on 127.0.0.1:0.

A child's ``run`` is replaced to fail on every start; the root's real restart policy (5 restarts in 30 s,
backoff from 0.1 s) then runs in real time, about 3 s per test.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from spl.actors.federation import FederationManager
from spl.actors.hub import Hub
from spl.daemon.assembly import Daemon, ServeError, ServeOptions
from spl.daemon.bootstrap import initialise
from spl.daemon.home import Home
from spl.runtime.supervisor import ChildContext

DEADLINE = 30.0


def new_daemon(tmp_path: Path) -> Daemon:
    home = Home.resolve(tmp_path / "home")
    initialise(home)
    return Daemon(home, ServeOptions(port=0, insecure_localhost=True, handle_signals=False))


async def test_federation_failing_for_good_leaves_the_daemon_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    last_start = trio.Event()

    async def broken(self: FederationManager, ctx: ChildContext) -> None:
        ctx.started()
        if ctx.incarnation == 5:  # the first start and 5 restarts: this crash goes over the limit
            last_start.set()
        raise RuntimeError("federation broke")

    monkeypatch.setattr(FederationManager, "run", broken)
    daemon = new_daemon(tmp_path)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(daemon.run)
            await last_start.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert daemon.services is not None and daemon.supervisor is not None
            assert daemon.services.problems() == [
                "federation: stopped after 5 restarts in 30 s (last error: RuntimeError: federation broke)"
            ]
            assert daemon.supervisor.snapshot().state == "running"
            answer = await trio.to_thread.run_sync(lambda: httpx.get(f"{urls[0]}/v1/threads", timeout=10))
            assert answer.status_code == 200
            daemon.request_stop()
    assert daemon.home.running() is None


async def test_an_essential_child_failing_for_good_stops_the_daemon_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: Hub, ctx: ChildContext) -> None:
        ctx.started()
        raise RuntimeError("hub broke")

    monkeypatch.setattr(Hub, "run", broken)
    daemon = new_daemon(tmp_path)
    with trio.fail_after(DEADLINE), pytest.raises(ServeError) as stopped:
        await daemon.run()
    assert str(stopped.value) == (
        "stopped: supervisor 'root' gave up: child 'sse-hub' went over the restart intensity "
        "(last error: RuntimeError: hub broke)"
    )
    home = daemon.home
    assert home.running() is None and not home.pid_path.exists() and not home.url_path.exists()


async def test_a_child_that_ignores_cancellation_cannot_hold_the_stop_past_its_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The phases are cut at their budgets, and once they have all run out the process exits (the backstop).

    ``os._exit`` is replaced so that this pytest process lives on: it records the exit and releases the child.
    """
    released = trio.Event()
    exits: list[tuple[int, float]] = []

    async def stubborn(self: FederationManager, ctx: ChildContext) -> None:
        ctx.started()
        with trio.CancelScope(shield=True):  # neither stop_requested nor the hard cancel ends it
            await released.wait()

    def exit_instead(status: int) -> None:
        exits.append((status, trio.current_time()))
        released.set()

    monkeypatch.setattr(FederationManager, "run", stubborn)
    monkeypatch.setattr("spl.daemon.assembly.os._exit", exit_instead)
    home = Home.resolve(tmp_path / "home")
    initialise(home)
    daemon = Daemon(home, ServeOptions(port=0, insecure_localhost=True, handle_signals=True))
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            began = trio.current_time()
            daemon.request_stop()
    assert [status for status, _ in exits] == [1]
    took = exits[0][1] - began
    assert 7.9 < took < 8.5, took  # the plan's 9 s less "release home", which needs no backstop
    assert "the graceful stop overran its 9 s (phases done: stop accepting, end streams, stop pairs" in caplog.text
    assert "child 'federation' did not stop within its 2 s shutdown budget" in caplog.text
