"""Shared fixtures: daemons in the test's own trio run, and real daemons on loopback.

- ``in_process_daemon`` / ``secure_in_process_daemon``: the real actors and Quart app driven through the app's test
  client (``tests/support/inprocess.py``). Use them for HTTP behaviour: they cost milliseconds.
- ``daemon`` / ``secure_daemon`` / ``daemon_factory``: ``spl serve`` subprocesses
  (``spl.daemon.launcher.DaemonProcess``) for what needs a real server: the wire, SSE streams, kill -9, signals,
  the SDK. Never mocks: a loopback daemon is cheap, an in-process one cheaper.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from inprocess import InProcessDaemon, copy_home, run_in_process

from spl.daemon.bootstrap import initialise
from spl.daemon.home import Home
from spl.daemon.launcher import DaemonProcess

__all__ = ["DaemonProcess", "InProcessDaemon"]

# Files that start many daemons, longest first. ``make test`` runs ``-n 2 --dist loadfile``: xdist hands whole files
# to the two workers in collection order, so a long file collected late leaves one worker running it alone at the
# end. Collecting the longest ones first (then everything else in its usual order) lets the workers finish
# together. Order *within* a file never changes: module-scoped daemons rely on it.
RUN_FIRST = (
    "tests/e2e/test_federation_e2e.py",
    "tests/soak/",
    "tests/e2e/",
    "tests/cli/",
    "tests/daemon/",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = Path(item.path).relative_to(config.rootpath).as_posix()
        return next((index for index, prefix in enumerate(RUN_FIRST) if path.startswith(prefix)), len(RUN_FIRST))

    items.sort(key=rank)  # stable: files keep their order within a rank, tests theirs within a file


@pytest.fixture(scope="session")
def home_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One initialised home per test session (per xdist worker), copied for every in-process daemon."""
    path = tmp_path_factory.mktemp("template") / "home"
    initialise(Home.resolve(path))
    return path


@pytest.fixture
async def in_process_daemon(home_template: Path, tmp_path: Path) -> AsyncIterator[InProcessDaemon]:
    """An in-process daemon with auth off (``--insecure-localhost``) on a fresh copy of the template home."""
    async with run_in_process(copy_home(home_template, tmp_path / "in-process"), insecure=True) as daemon:
        yield daemon


@pytest.fixture
async def secure_in_process_daemon(home_template: Path, tmp_path: Path) -> AsyncIterator[InProcessDaemon]:
    """An in-process daemon with auth on (the default) on a fresh copy of the template home."""
    async with run_in_process(copy_home(home_template, tmp_path / "in-process-secure"), insecure=False) as daemon:
        yield daemon


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[type[DaemonProcess]]:
    started: list[DaemonProcess] = []

    class Factory(DaemonProcess):
        def __init__(self, name: str = "a", **kwargs: object) -> None:
            super().__init__(tmp_path / name, **kwargs)  # type: ignore[arg-type]
            started.append(self)

    yield Factory
    for daemon in started:
        daemon.kill()


@pytest.fixture
def daemon(daemon_factory: type[DaemonProcess]) -> DaemonProcess:
    """A started daemon with auth off (``--insecure-localhost``)."""
    process = daemon_factory("insecure")
    process.start(port=0)
    return process


@pytest.fixture
def secure_daemon(daemon_factory: type[DaemonProcess]) -> DaemonProcess:
    """A started daemon with auth on (the default)."""
    process = daemon_factory("secure", insecure=False)
    process.start(port=0)
    return process
