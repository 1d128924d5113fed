"""Shared fixtures: real daemons on loopback (``spl.daemon.launcher.DaemonProcess``).

Tests that need a daemon use these, never mocks: a loopback daemon is cheap.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from spl.daemon.launcher import DaemonProcess

__all__ = ["DaemonProcess"]


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
