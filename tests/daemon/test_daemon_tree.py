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
from spl.actors.folds import ThreadFolds
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
    async def broken(self: ThreadFolds, ctx: ChildContext) -> None:
        ctx.started()
        raise RuntimeError("folds broke")

    monkeypatch.setattr(ThreadFolds, "run", broken)
    daemon = new_daemon(tmp_path)
    with trio.fail_after(DEADLINE), pytest.raises(ServeError) as stopped:
        await daemon.run()
    assert str(stopped.value) == (
        "stopped: supervisor 'root' gave up: child 'thread-folds' went over the restart intensity "
        "(last error: RuntimeError: folds broke)"
    )
    home = daemon.home
    assert home.running() is None and not home.pid_path.exists() and not home.url_path.exists()
