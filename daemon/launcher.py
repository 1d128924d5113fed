"""Start and stop real ``spl serve`` processes: used by the tests, the benchmarks and soak runs.

``DaemonProcess`` runs ``spl serve`` as a child process (its own home, 127.0.0.1, port 0
by default) so callers can SIGTERM it, ``kill -9`` it and start it again on the same
home and port. It knows its daemon is up when the home's run lock names the child's pid
and the child has written its URL (``Home.running``): run files a killed daemon left
behind are never mistaken for the new one's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import httpx

from spl.daemon.bootstrap import initialise
from spl.daemon.home import Home

__all__ = ["DaemonProcess", "ProcessHandle", "Spawner"]


class ProcessHandle(Protocol):
    """What the launcher uses of a child process (``subprocess.Popen`` has it all)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...


# ``spawn(spl_arguments, environment, log_path)``: how a daemon process is started.
Spawner = Callable[[list[str], dict[str, str], Path], ProcessHandle]


def spawn_interpreter(arguments: list[str], env: dict[str, str], log_path: Path) -> ProcessHandle:
    """``python -m spl.cli <arguments>`` with its output appended to ``log_path``."""
    log = open(log_path, "ab")  # noqa: SIM115 - the child owns it until it exits
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "spl.cli", *arguments], env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
    finally:
        log.close()


START_TIMEOUT = 30.0


def quiet_discovery(home: Home) -> None:
    """A throw-away daemon (tests, the soak's pair) keeps off the LAN: no mDNS listener.

    Hundreds of them start in a test run; each would import zeroconf and send multicast queries onto whatever
    network the machine is on. A test of discovery writes its own config.
    """
    config = home.load_config()
    config.sync.discovery.mdns_listen = False
    home.save_config(config)


class DaemonProcess:
    """One ``spl serve`` child process bound to 127.0.0.1 on a free port.

    ``spawner`` starts the process; the test suite swaps in one that forks a pre-imported interpreter
    (``tests/support/daemon_zygote.py``), everything else uses a fresh one.
    """

    spawner: Spawner = staticmethod(spawn_interpreter)  # type: ignore[assignment]

    def __init__(
        self, home: Path, *, insecure: bool = True, extra_args: tuple[str, ...] = (), log_level: str = "warning"
    ) -> None:
        self.home = Home.resolve(home)
        if not self.home.exists():
            initialise(self.home)
            quiet_discovery(self.home)
        self.insecure = insecure
        self.log_level = log_level
        self.extra_args = extra_args
        self.process: ProcessHandle | None = None
        self.url = ""
        self.port = 0
        self.log_path = home / "test-daemon.log"

    @property
    def admin_token(self) -> str:
        token = self.home.read_secret(self.home.admin_token_path)
        assert token is not None
        return token

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["SYNCROPEL_HOME"] = str(self.home.root)
        env.pop("SPL_SERVE_URL", None)
        env.pop("SPL_TOKEN", None)
        return env

    def start(self, port: int | None = None) -> str:
        """Start (or restart, keeping the port) and wait until /health answers."""
        port = self.port if port is None else port
        args = ["serve", "--port", str(port), "--log-level", self.log_level]
        if self.insecure:
            args.append("--insecure-localhost")
        args.extend(self.extra_args)
        self.process = type(self).spawner(args, self.env(), self.log_path)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"daemon exited with {self.process.returncode}:\n{self.log_path.read_text()[-3000:]}"
                )
            running = self.home.running()
            url = running.url if running is not None and running.pid == self.process.pid else None
            if url:
                self.url = url
                self.port = int(url.rsplit(":", 1)[1])
                if self._healthy():
                    return self.url
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"daemon did not start within {START_TIMEOUT}s:\n{self.log_path.read_text()[-3000:]}")

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def pid(self) -> int:
        assert self.process is not None, "the daemon was not started"
        return self.process.pid

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the running daemon (SIGHUP to reopen its log, say)."""
        assert self.process is not None and self.process.poll() is None, "the daemon is not running"
        self.process.send_signal(signum)

    def stop(self, timeout: float = 20.0) -> int:
        """Graceful stop (SIGTERM); returns the exit status."""
        if self.process is None:
            return 0
        ended = self.process.poll()
        if ended is not None:
            return ended
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"daemon ignored SIGTERM for {timeout}s") from None

    def kill(self) -> None:
        """``kill -9``: no chance to flush anything."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
