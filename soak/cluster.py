"""The throw-away daemons of one soak run: a source (unless ``--peer-url``), the receiver, and the relay.

They live in one temporary directory, each with its own home. :meth:`Cluster.stop` is the one way
they end (SIGTERM, then ``kill -9`` for what ignores it); :meth:`Cluster.kill_now` is the hurried
form a second Ctrl-C uses.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from spl.daemon.launcher import DaemonProcess
from spl.soak.config import SoakConfig
from spl.soak.relay import Relay

__all__ = ["Cluster"]

STOP_TIMEOUT = 20.0  # seconds a daemon gets to stop gracefully before kill -9


class Cluster:
    """The daemons of one run, under ``root``; see the module docstring."""

    def __init__(self, config: SoakConfig, root: Path) -> None:
        self.root = root
        self.source = None if config.peer_url else DaemonProcess(root / "source", log_level=config.log_level)
        self.receiver = DaemonProcess(root / "receiver", log_level=config.log_level)
        self.peer_url = config.peer_url.rstrip("/") if config.peer_url else None
        self.use_relay = config.relay
        self.relay: Relay | None = None

    @property
    def pair_url(self) -> str:
        """The URL the pairs pull from: the source's own, or the counting relay in front of it."""
        return self.relay.url if self.relay is not None else self.source_url

    @property
    def source_url(self) -> str:
        if self.source is not None:
            return self.source.url
        assert self.peer_url is not None
        return self.peer_url

    def daemons(self) -> list[DaemonProcess]:
        """The daemons started here (not a ``--peer-url`` source)."""
        return [d for d in (self.source, self.receiver) if d is not None]

    def start(self) -> None:
        """Start the daemons side by side (each waits for its /health), then the relay if asked for."""
        with ThreadPoolExecutor(max_workers=2) as pool:
            for future in [pool.submit(d.start, 0) for d in self.daemons()]:
                future.result()
        if self.use_relay:
            self.relay = Relay.start(self.source_url, self.root / "relay.json")

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM every daemon still running, wait, ``kill -9`` what ignores it."""
        if self.relay is not None:
            self.relay.stop()
        running = [d.process for d in self.daemons() if d.process is not None and d.process.poll() is None]
        for process in running:
            try:
                process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def kill_now(self) -> None:
        """``kill -9`` every process started here, without waiting: safe inside a signal handler.

        :meth:`stop` (which may be running when this is called) still reaps them.
        """
        if self.relay is not None:
            self.relay.kill()
        for daemon in self.daemons():
            if daemon.process is not None and daemon.process.returncode is None:
                try:
                    os.kill(daemon.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
