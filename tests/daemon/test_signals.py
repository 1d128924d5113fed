"""Signals to a real detached daemon: SIGHUP reopens the log (logrotate), SIGTERM stops it within its budget."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from cli_support import base_env, run_spl

from spl.daemon.home import Home

DEADLINE = 20.0


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached in {DEADLINE:.0f}s"
        time.sleep(0.02)


def test_sighup_after_logrotate_moves_the_log_to_a_new_file_and_keeps_serving(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    home = Home.resolve(tmp_path / "home")
    run_spl("init", env=env).ok()
    run_spl("serve", "--daemon", "--port", "0", "--insecure-localhost", env=env).ok()
    running = home.running()
    assert running is not None and running.pid is not None and running.url
    try:
        rotated = home.log_path.with_name("spl.log.1")
        home.log_path.rename(rotated)  # what logrotate does before its postrotate `kill -HUP`
        os.kill(running.pid, signal.SIGHUP)
        wait_until(lambda: home.log_path.exists() and "received SIGHUP" in home.log_path.read_text(), "a new spl.log")
        assert f"received SIGHUP: reopened {home.log_path}" in home.log_path.read_text()
        assert httpx.get(f"{running.url}/health", timeout=10).status_code == 200
        assert home.running() == running
    finally:
        stopped = run_spl("serve", "--stop", env=env)
    assert stopped.code == 0, stopped.err
    new, old = home.log_path.read_text(), rotated.read_text()
    assert "shutdown phase 1/5 'stop accepting'" in new and "stopped" in new.splitlines()[-1]
    assert "listening on" in old and "SIGHUP" not in old and "shutdown phase" not in old


def test_a_second_sigterm_exits_at_once(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    home = Home.resolve(tmp_path / "home")
    run_spl("init", env=env).ok()
    run_spl("serve", "--daemon", "--port", "0", "--insecure-localhost", env=env).ok()
    running = home.running()
    assert running is not None and running.pid is not None and running.url
    host, port = running.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as slow:
        # A request whose body never completes is an exchange in flight: it holds "end streams" for its 1 s of
        # grace, long enough to send the second signal while the graceful stop is still under way.
        slow.sendall(b"POST /v1/records HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n")
        slow.sendall(b"content-length: 1000\r\n\r\n{")
        began = time.monotonic()
        os.kill(running.pid, signal.SIGTERM)
        wait_until(lambda: "graceful stop" in home.log_path.read_text(), "the first signal seen")
        os.kill(running.pid, signal.SIGTERM)
        wait_until(lambda: home.running() is None, "the daemon gone")
        took = time.monotonic() - began
    log = home.log_path.read_text()
    assert "second signal (SIGTERM): exiting at once" in log, log
    assert "shutdown phase 3/5" not in log, (took, log)
