"""systemd notify: READY=1 when serving, STOPPING=1 on SIGTERM (a real daemon, a real socket)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from spl.daemon import systemd
from spl.daemon.bootstrap import initialise
from spl.daemon.home import Home
from spl.daemon.launcher import DaemonProcess


def test_notify_without_socket_is_a_no_op(monkeypatch: object) -> None:
    import os

    os.environ.pop("NOTIFY_SOCKET", None)
    assert systemd.notify("READY=1") is False


def test_daemon_reports_ready_and_stopping(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(30)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        monkeypatch.setenv("WATCHDOG_USEC", "2000000")
        daemon = DaemonProcess(tmp_path / "home")
        try:
            daemon.start(port=0)
            messages = []
            while "READY=1" not in messages:
                messages.append(listener.recv(256).decode())
            while "WATCHDOG=1" not in messages:
                messages.append(listener.recv(256).decode())
            began = time.monotonic()
            assert daemon.stop() == 0
            # The watchdog child returns at the stop instead of being cancelled after its 5 s budget.
            assert time.monotonic() - began < 3.0
            while "STOPPING=1" not in messages:
                messages.append(listener.recv(256).decode())
        finally:
            daemon.kill()


def test_no_ready_when_the_port_is_taken(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    home = Home.resolve(tmp_path / "home")
    initialise(home)
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener, socket.socket() as busy:
        listener.bind(str(path))
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        env = {**os.environ, "SYNCROPEL_HOME": str(home.root), "NOTIFY_SOCKET": str(path)}
        serve = [sys.executable, "-m", "spl.cli", "serve", "--port", str(busy.getsockname()[1])]
        result = subprocess.run(serve, env=env, capture_output=True, text=True, timeout=30)
        assert result.returncode == 1 and result.stderr.startswith("error: cannot listen on 127.0.0.1:")
        listener.setblocking(False)
        sent = []
        while True:  # the daemon has exited: whatever it sent is queued on the socket
            try:
                sent.append(listener.recv(256).decode())
            except BlockingIOError:
                break
        assert "READY=1" not in sent, sent
