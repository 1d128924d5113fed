"""systemd notify: STATUS lines, READY=1 only once serving, STOPPING=1 and the shutdown phases (a real daemon,
a real notify socket)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import apsw
import httpx
import pytest
from e2e_support import envelope

from spl.daemon import systemd
from spl.daemon.assembly import SHUTDOWN_PLAN
from spl.daemon.bootstrap import initialise
from spl.daemon.home import Home
from spl.daemon.launcher import DaemonProcess

PHASES = [phase.name for phase in SHUTDOWN_PLAN.phases]


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket standing in for systemd's, named by ``$NOTIFY_SOCKET`` for the daemons started here."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(30)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield listener


def receive_until(listener: socket.socket, wanted: str, lines: list[str]) -> list[str]:
    """Append every line the daemon sends to ``lines`` until ``wanted`` arrived (one datagram may hold several)."""
    while wanted not in lines:
        lines.extend(listener.recv(4096).decode().splitlines())
    return lines


def queued(listener: socket.socket) -> list[str]:
    """Whatever is still queued on the socket, without waiting."""
    listener.setblocking(False)
    lines: list[str] = []
    while True:
        try:
            lines.extend(listener.recv(4096).decode().splitlines())
        except BlockingIOError:
            return lines


def test_notify_without_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False


def test_status_ready_watchdog_and_every_shutdown_phase(
    tmp_path: Path, notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    daemon = DaemonProcess(tmp_path / "home", log_level="info")
    try:
        url = daemon.start(port=0)
        lines = receive_until(notify_socket, "READY=1", [])
        assert lines[0] == "STATUS=starting"
        ready = lines.index("READY=1")
        assert lines[ready + 1] == f"STATUS=serving on {url}"  # sent in the same datagram as READY=1
        receive_until(notify_socket, "WATCHDOG=1", lines)
        began = time.monotonic()
        assert daemon.stop() == 0
        took = time.monotonic() - began
        lines += queued(notify_socket)
    finally:
        daemon.kill()
    # The watchdog child returns at the stop (it once held the stop for its whole 5 s budget).
    assert took < 3.0, f"SIGTERM to exit took {took:.1f} s"
    stopping = lines[lines.index("STOPPING=1") - 1 :]
    assert [line for line in stopping if line.startswith("STATUS=")] == [f"STATUS=stopping: {p}" for p in PHASES]
    log = daemon.log_path.read_text()
    logged = [line.split("shutdown phase ", 1)[1] for line in log.splitlines() if "shutdown phase " in line]
    assert logged == [
        f"{n}/{len(PHASES)} {p!r} (budget {SHUTDOWN_PLAN.phases[n - 1].budget:g} s)" for n, p in enumerate(PHASES, 1)
    ]
    assert "WARNING" not in log and "overran" not in log, log


def test_no_ready_when_the_port_is_taken(tmp_path: Path, notify_socket: socket.socket) -> None:
    home = Home.resolve(tmp_path / "home")
    initialise(home)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        serve = [sys.executable, "-m", "spl.cli", "serve", "--port", str(busy.getsockname()[1])]
        env = {**os.environ, "SYNCROPEL_HOME": str(home.root)}
        result = subprocess.run(serve, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and result.stderr.startswith("error: cannot listen on 127.0.0.1:"), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    sent = queued(notify_socket)  # the daemon has exited: whatever it sent is queued on the socket
    assert sent == ["STATUS=starting"], sent


def test_a_store_upgrade_at_start_asks_systemd_for_time_and_says_why(
    tmp_path: Path, notify_socket: socket.socket
) -> None:
    daemon = DaemonProcess(tmp_path / "home", log_level="info")
    url = daemon.start(port=0)
    httpx.post(f"{url}/v1/records", json=envelope("th_upgrade", 1), timeout=30).raise_for_status()
    assert daemon.stop() == 0
    queued(notify_socket)
    # What a store written by an older spl (schema 2) holds: no ordinals, no folds.
    connection = apsw.Connection(str(daemon.home.db_path))
    connection.execute(
        "UPDATE records SET ordinal = 0; DELETE FROM thread_participants; UPDATE threads SET state = 'empty'; "
        "UPDATE meta SET value = '2' WHERE key = 'schema_version'"
    )
    ((stored,),) = connection.execute("SELECT COUNT(*) FROM records").fetchall()  # the genesis records too
    connection.close()
    try:
        url = daemon.start(port=0)
        lines = receive_until(notify_socket, "READY=1", [])
        upgrade = lines.index("EXTEND_TIMEOUT_USEC=60000000")
        assert upgrade < lines.index("READY=1")
        assert lines[upgrade + 1] == f"STATUS=upgrading the store (records folded: {stored})"
        assert httpx.get(f"{url}/v1/threads/th_upgrade", timeout=30).json()["state"] == "active"
    finally:
        daemon.kill()
