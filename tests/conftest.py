"""Shared fixtures: daemons in the test's own trio run, and real daemons on loopback.

- ``in_process_daemon`` / ``secure_in_process_daemon``: the real actors and Quart app driven through the app's test
  client (``tests/support/inprocess.py``). Use them for HTTP behaviour: they cost milliseconds.
- ``daemon`` / ``secure_daemon`` / ``daemon_factory``: ``spl serve`` subprocesses
  (``spl.daemon.launcher.DaemonProcess``) for what needs a real server: the wire, SSE streams, kill -9, signals,
  the SDK. Never mocks: a loopback daemon is cheap, an in-process one cheaper.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from inprocess import InProcessDaemon, copy_home, run_in_process
from xdist.scheduler import LoadFileScheduling
from zygote_client import spawn_from_zygote

from spl.daemon.bootstrap import initialise
from spl.daemon.home import Home
from spl.daemon.launcher import DaemonProcess, quiet_discovery

# Daemons start as forks of one pre-imported interpreter (tests/support/daemon_zygote.py): the same `spl serve`
# entry point without paying its imports each time. SPL_TEST_ZYGOTE=0 starts each in a fresh interpreter.
if os.environ.get("SPL_TEST_ZYGOTE", "1") == "1":
    DaemonProcess.spawner = staticmethod(spawn_from_zygote)  # type: ignore[assignment]

__all__ = ["DaemonProcess", "InProcessDaemon"]

# Files that start many daemons, longest first. ``make test`` runs ``--dist loadfile``, which hands files to the
# workers in the order given here (``pytest_xdist_make_scheduler`` below turns off xdist's own most-tests-first
# order), so a long file collected late would leave one worker running it alone at the end. Order *within* a file
# never changes: module-scoped daemons rely on it.
RUN_FIRST = (
    "tests/e2e/test_federation_e2e.py",
    "tests/e2e/test_trust.py",
    "tests/soak/",
    "tests/e2e/",
    "tests/cli/",
    "tests/daemon/",
)

# Files whose tests share nothing (each starts its own daemons through function-scoped fixtures) and that take
# longer together than a worker's fair share: under ``--dist loadfile`` each of their tests is scheduled on its own,
# so several workers run them at once. Every other file still goes to one worker whole.
ONE_UNIT_PER_TEST = ("tests/e2e/test_federation_e2e.py", "tests/e2e/test_trust.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = Path(item.path).relative_to(config.rootpath).as_posix()
        return next((index for index, prefix in enumerate(RUN_FIRST) if path.startswith(prefix)), len(RUN_FIRST))

    items.sort(key=rank)  # stable: files keep their order within a rank, tests theirs within a file


class FileOrTestScheduling(LoadFileScheduling):  # type: ignore[misc]
    """``--dist loadfile``, except that the tests of the files in ``ONE_UNIT_PER_TEST`` are scheduled one by one.

    (``--dist loadgroup`` with ``xdist_group`` marks would say the same, but pytest-xdist 3.8 renames node ids
    through an attribute pytest 9 no longer reads, so its groups are silently ignored.)
    """

    def _split_scope(self, nodeid: str) -> str:
        path = nodeid.split("::", 1)[0]
        return nodeid if path in ONE_UNIT_PER_TEST else path


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> FileOrTestScheduling | None:
    if config.getvalue("dist") != "loadfile":
        return None  # xdist's own scheduler for every other mode
    config.option.loadscopereorder = False  # keep RUN_FIRST's order: xdist would put files with most tests first
    return FileOrTestScheduling(config, log)


@pytest.fixture(scope="session")
def home_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One initialised home per test session (per xdist worker), copied for every in-process daemon."""
    path = tmp_path_factory.mktemp("template") / "home"
    initialise(Home.resolve(path))
    quiet_discovery(Home.resolve(path))
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
