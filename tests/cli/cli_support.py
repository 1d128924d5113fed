"""CLI test helpers: run ``spl`` as a subprocess against real loopback daemons (no mocks)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from spl.runtime.home import Home


class DaemonLike(Protocol):
    """What the CLI tests use of ``tests/conftest.py``'s ``DaemonProcess``."""

    url: str
    home: Home

    def env(self) -> dict[str, str]: ...


CLI_TIMEOUT = 30.0


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def ok(self) -> Result:
        assert self.code == 0, f"exit {self.code}\nstdout: {self.out}\nstderr: {self.err}"
        return self


Cli = Callable[..., Result]


def run_spl(*args: str, env: dict[str, str], stdin: str | None = None, timeout: float = CLI_TIMEOUT) -> Result:
    process = subprocess.run(
        [sys.executable, "-m", "spl.cli.main", *args],
        env=env,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Result(process.returncode, process.stdout, process.stderr)


def base_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["SYNCROPEL_HOME"] = str(home)
    for name in ("SPL_SERVE_URL", "SPL_TOKEN"):
        env.pop(name, None)
    env["COLUMNS"] = "200"
    return env


def free_port() -> int:
    """A loopback port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli_for(daemon: DaemonLike, **extra: str) -> Cli:
    def run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Result:
        environment = daemon.env()
        environment["SPL_SERVE_URL"] = daemon.url
        environment["COLUMNS"] = "200"
        environment.update(extra)
        environment.update(env or {})
        return run_spl(*args, env=environment, stdin=stdin)

    return run
