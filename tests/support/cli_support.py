"""CLI test helpers: run ``spl`` as a subprocess against real loopback daemons (no mocks).

``FakeDaemon`` is the one stand-in: a loopback server that is deliberately *not* spl, to see
what the CLI sends to a URL it was pointed at and how it takes answers no daemon gives.
"""

from __future__ import annotations

import atexit
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from spl.daemon.home import Home


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


class _ForkServer:
    """``tests/support/cli_forkserver.py`` for this test process: started on first use, one call at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._scratch = Path(tempfile.mkdtemp(prefix="spl-cli-"))

    def _server(self) -> subprocess.Popen[str]:
        if self._process is None or self._process.poll() is not None:
            env = dict(os.environ, COLUMNS="200")
            self._process = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("cli_forkserver.py"))],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                text=True,
            )
            atexit.register(self._process.kill)
        return self._process

    def run(self, args: tuple[str, ...], env: dict[str, str], stdin: str, timeout: float) -> Result:
        with self._lock:
            server = self._server()
            paths = {name: self._scratch / name for name in ("stdin", "out", "err")}
            paths["stdin"].write_text(stdin, encoding="utf-8")
            request = {"args": list(args), "env": env, "timeout": timeout, **{k: str(v) for k, v in paths.items()}}
            assert server.stdin is not None and server.stdout is not None
            server.stdin.write(json.dumps(request) + "\n")
            server.stdin.flush()
            answer = json.loads(server.stdout.readline() or '{"code": -1}')
            if answer.get("timeout"):
                raise subprocess.TimeoutExpired(["spl", *args], timeout)
            out, err = (paths[name].read_text(encoding="utf-8", errors="replace") for name in ("out", "err"))
            return Result(int(answer["code"]), out, err)


_FORK_SERVER = _ForkServer()


def run_spl(*args: str, env: dict[str, str], stdin: str | None = None, timeout: float = CLI_TIMEOUT) -> Result:
    """``spl *args`` in its own process, as a user would run it: exit code, stdout, stderr.

    The process is a fork of a server that has the CLI imported already (``cli_forkserver.py``), which saves
    an interpreter start and the imports on every call; ``SPL_TEST_CLI_FORK=0`` runs ``python -m spl.cli``
    instead. Tests about what a fresh ``spl`` imports start their own interpreter.
    """
    if os.environ.get("SPL_TEST_CLI_FORK", "1") == "1":
        return _FORK_SERVER.run(args, env, stdin if stdin is not None else "", timeout)
    process = subprocess.run(
        [sys.executable, "-m", "spl.cli", *args],
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


@dataclass(frozen=True)
class Seen:
    """One request a :class:`FakeDaemon` received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FakeDaemon:
    """A loopback HTTP server that is *not* an spl daemon: it records every request and gives one canned answer.

    Used to prove what the CLI sends where (credentials, content types) and that odd answers become one-line
    errors. Requests are recorded before the answer is written, so once a CLI subprocess has exited, everything
    it sent is in ``seen``.
    """

    def __init__(
        self,
        *,
        status: int = 200,
        content_type: str = "application/json",
        body: bytes = b"{}",
        answer: Callable[[str, str], tuple[int, bytes]] | None = None,
    ) -> None:
        """``answer(method, path) -> (status, body)``, when given, replaces the one canned answer."""
        self.seen: list[Seen] = []
        self.status, self.content_type, self.body = status, content_type, body
        self.answer = answer
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {name.lower(): value for name, value in self.headers.items()}
                fake.seen.append(Seen(self.command, self.path, headers, body))
                status, reply = fake.answer(self.command, self.path) if fake.answer else (fake.status, fake.body)
                self.send_response(status)
                self.send_header("content-type", fake.content_type)
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep pytest's output clean

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> FakeDaemon:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def one_error_line(result: Result) -> str:
    """The failure is exit 1 with exactly one line on stderr, starting with ``error:``, and no traceback."""
    assert result.code == 1, f"exit {result.code}\nstdout: {result.out}\nstderr: {result.err}"
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    assert "Traceback" not in result.err
    return lines[0]


def ctrl_c_works() -> None:
    """``preexec_fn`` for a ``spl`` subprocess a test ends with SIGINT, as Ctrl-C would.

    A shell runs a background job with SIGINT ignored, and Python leaves an ignored SIGINT alone (no
    KeyboardInterrupt): a test suite started in the background would otherwise wait for a child that never stops.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
