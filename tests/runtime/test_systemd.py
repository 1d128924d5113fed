"""systemd notify: READY=1 when serving, STOPPING=1 on SIGTERM (a real daemon, a real socket)."""

from __future__ import annotations

import socket
from pathlib import Path

from spl.runtime import systemd
from spl.runtime.launcher import DaemonProcess


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
            assert daemon.stop() == 0
            while "STOPPING=1" not in messages:
                messages.append(listener.recv(256).decode())
        finally:
            daemon.kill()
