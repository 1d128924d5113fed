"""``spl serve`` and ``spl init`` on a home: one daemon per home, honest start-up, a checked store, private files.

Every daemon here is a real ``spl serve`` on 127.0.0.1 port 0. Waits poll a condition within a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from cli_support import Result, base_env, one_error_line, run_spl

from spl.daemon.home import Home
from spl.store.database import check_store

DEADLINE = 20.0
SERVE_TIMEOUT = 25.0  # a daemon that wrongly starts would serve forever: the subprocess times out instead


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def flat(text: str) -> str:
    return " ".join(text.split())


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached in {DEADLINE:.0f}s"
        time.sleep(0.02)


@contextmanager
def detached(home: Home, env: dict[str, str], *args: str) -> Iterator[Result]:
    """``spl serve --daemon --port 0 …`` for the body of the block, then ``spl serve --stop``."""
    started = run_spl("serve", "--daemon", "--port", "0", *args, env=env)
    try:
        yield started
    finally:
        running = home.running()
        if running is not None and running.pid is not None:
            run_spl("serve", "--stop", env=env)


def serve_refused(env: dict[str, str], *args: str) -> str:
    """A foreground ``spl serve`` that must refuse at once with one line."""
    return one_error_line(run_spl("serve", "--port", "0", *args, env=env, timeout=SERVE_TIMEOUT))


@pytest.fixture
def home_env(tmp_path: Path) -> tuple[Home, dict[str, str]]:
    env = base_env(tmp_path / "home")
    run_spl("init", env=env).ok()
    return Home.resolve(tmp_path / "home"), env


def test_a_second_serve_on_the_same_home_refuses_and_touches_nothing(home_env: tuple[Home, dict[str, str]]) -> None:
    home, env = home_env
    with detached(home, env, "--insecure-localhost") as started:
        started.ok()
        pid, url = home.read_secret(home.pid_path), home.read_secret(home.url_path)
        assert pid and url and f"(pid {pid}) at {url}" in started.out
        expected = (
            f"error: an spl daemon already runs for {home.root} (pid {pid}, {url}); stop it with `spl serve --stop`"
        )
        assert serve_refused(env) == expected
        assert serve_refused(env, "--insecure-localhost") == expected
        assert one_error_line(run_spl("serve", "--daemon", "--port", "0", env=env)) == expected
        # The first daemon's run files are untouched and it still serves; the CLI still finds it.
        assert (home.read_secret(home.pid_path), home.read_secret(home.url_path)) == (pid, url)
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
        assert run_spl("status", "-o", "json", env=env).ok().json()["endpoint_url"] == url
        stopped = run_spl("serve", "--stop", env=env).ok()
        assert stopped.out == f"stopped spl daemon (pid {pid})\n"
    assert home.running() is None and not home.pid_path.exists() and not home.url_path.exists()


def test_serve_daemon_reports_a_child_that_cannot_listen(home_env: tuple[Home, dict[str, str]]) -> None:
    home, env = home_env
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_error_line(run_spl("serve", "--daemon", "--port", str(port), env=env))
        assert line.startswith(f"error: the daemon exited at start (status 1): cannot listen on 127.0.0.1:{port} ")
        assert "--port" in line and str(home.log_path) in line
        foreground = serve_refused(env, "--port", str(port))
        assert foreground.startswith(f"error: cannot listen on 127.0.0.1:{port} (OSError: ")
    assert home.running() is None and not home.url_path.exists() and not home.pid_path.exists()


def test_after_kill_9_the_home_serves_again(home_env: tuple[Home, dict[str, str]]) -> None:
    home, env = home_env
    with detached(home, env, "--insecure-localhost") as first:
        first.ok()
        running = home.running()
        assert running is not None and running.pid is not None
        os.kill(running.pid, signal.SIGKILL)
        wait_until(lambda: home.running() is None, "the lock released by the killed daemon")
        assert home.url_path.exists()  # stale, and ignored: no daemon holds the lock
        line = one_error_line(run_spl("status", env=env))
        assert line.startswith(f"error: no spl daemon is running for {home.root}")
        second = run_spl("serve", "--daemon", "--port", "0", "--insecure-localhost", env=env).ok()
        assert "spl daemon started" in second.out
        assert run_spl("status", "-o", "json", env=env).ok().json()["endpoint_url"] == home.read_secret(home.url_path)


def test_init_creates_the_store(home_env: tuple[Home, dict[str, str]]) -> None:
    home, _ = home_env
    check_store(home.db_path)  # a valid, non-empty store: the daemon never creates one


@pytest.mark.parametrize("damage", ["missing", "empty"])
def test_a_lost_store_refuses_to_start(home_env: tuple[Home, dict[str, str]], damage: str) -> None:
    home, env = home_env
    home.db_path.unlink()
    for leftover in ("hub.db-wal", "hub.db-shm"):
        (home.root / leftover).unlink(missing_ok=True)
    if damage == "empty":
        home.db_path.touch(mode=0o600)
    assert serve_refused(env) == (
        f"error: {home.db_path} is {damage} while the home has an identity: restore it from a backup "
        "or run `spl init --force` to start an empty store"
    )
    assert home.db_path.exists() == (damage == "empty") and home.running() is None
    # The fix named in the message works.
    run_spl("init", "--force", env=env).ok()
    with detached(home, env, "--insecure-localhost") as started:
        started.ok()


def test_a_damaged_store_refuses_with_one_line(home_env: tuple[Home, dict[str, str]]) -> None:
    home, env = home_env
    home.db_path.write_bytes(os.urandom(8192))
    line = serve_refused(env)
    assert str(home.db_path) in line and "backup" in line, line
    assert home.running() is None and not home.pid_path.exists()


def test_init_and_serve_make_the_home_private(tmp_path: Path) -> None:
    root = tmp_path / "home"
    env = base_env(root)
    previous = os.umask(0o022)  # the usual login umask; spl must not depend on it
    try:
        run_spl("init", env=env).ok()
    finally:
        os.umask(previous)
    home = Home.resolve(root)
    assert mode(root) == 0o700 and mode(home.db_path) == 0o600 and mode(home.config_path) == 0o600
    for sub in ("keys", "secrets", "run", "logs"):
        assert mode(root / sub) == 0o700, sub

    # A home from before: world-readable store and config in a 0755 home.
    root.chmod(0o755)
    home.db_path.chmod(0o644)
    home.config_path.chmod(0o644)
    doctor = run_spl("doctor", env=env)
    assert doctor.code == 2, doctor.out
    report = flat(doctor.out)
    assert f"✗ file modes other local users may read the home: {root} is 0755" in report, report
    assert f"`chmod 700 {root}`" in report and f"`chmod 600 {home.config_path} {home.db_path}`" in report

    with detached(home, env, "--insecure-localhost") as started:
        started.ok()
        private = [home.db_path, home.config_path, home.log_path, home.pid_path, home.url_path, home.lock_path]
        private += [root / "hub.db-wal", root / "hub.db-shm"]
        assert {path.name: mode(path) for path in private} == {path.name: 0o600 for path in private}
        assert mode(root) == 0o700
        assert "✓ file modes" in run_spl("doctor", env=env).out
        assert f"{home.db_path} was 0644: set to 0600" in home.log_path.read_text()


def test_trust_loopback_is_reported_as_obsolete(home_env: tuple[Home, dict[str, str]]) -> None:
    home, env = home_env
    text = home.config_path.read_text()
    home.config_path.write_text(text.replace("[federation]\n", "[federation]\ntrust_loopback = true\n"))
    doctor = run_spl("doctor", env=env)
    report = flat(doctor.out)
    assert "! config" in doctor.out and "federation.trust_loopback is obsolete and ignored" in report, report
    with detached(home, env, "--insecure-localhost") as started:
        started.ok()
        warnings = [line for line in home.log_path.read_text().splitlines() if "trust_loopback" in line]
        assert len(warnings) == 1 and "WARNING" in warnings[0] and "ignored" in warnings[0], warnings


@pytest.mark.parametrize("daemon", [False, True], ids=["foreground", "daemon"])
@pytest.mark.parametrize("port", ["99999", "-1"])
def test_a_port_out_of_range_is_one_line(home_env: tuple[Home, dict[str, str]], port: str, daemon: bool) -> None:
    home, env = home_env
    args = ["serve", "--port", port] + (["--daemon"] if daemon else [])
    assert one_error_line(run_spl(*args, env=env, timeout=SERVE_TIMEOUT)) == (
        f"error: --port {port} is out of range: use 0 to 65535 (0 picks a free port)"
    )
    assert home.running() is None and not home.log_path.exists()  # refused before anything started


@pytest.mark.parametrize(
    ("host", "fix"),
    [
        ("999.1.1.1", "'999.1.1.1' is not an IP address or a known host name"),
        ("no-such-host.invalid", "'no-such-host.invalid' is not an IP address or a known host name"),
        ("192.0.2.1", "192.0.2.1 is not an address of this machine"),  # TEST-NET-1: never local
    ],
)
def test_a_bad_host_is_one_line_naming_the_fix(home_env: tuple[Home, dict[str, str]], host: str, fix: str) -> None:
    home, env = home_env
    foreground = serve_refused(env, "--host", host)
    assert foreground.startswith(f"error: cannot listen on {host}:0: {fix}") and "--host" in foreground
    detached_line = one_error_line(run_spl("serve", "--daemon", "--port", "0", "--host", host, env=env))
    # The detaching parent waited for its child and relays the child's own line.
    assert detached_line.startswith(f"error: the daemon exited at start (status 1): cannot listen on {host}:0: {fix}")
    assert home.running() is None and not home.url_path.exists()


def test_an_unknown_log_level_is_a_usage_error_naming_the_choices(home_env: tuple[Home, dict[str, str]]) -> None:
    _, env = home_env
    refused = run_spl("serve", "--port", "0", "--log-level", "loud", env=env, timeout=SERVE_TIMEOUT)
    assert refused.code == 2 and "Traceback" not in refused.err
    assert "'loud' is not one of 'debug', 'info', 'warning', 'error'" in flat(refused.err), refused.err


def test_json_logs_are_one_object_per_line(home_env: tuple[Home, dict[str, str]]) -> None:
    home, env = home_env
    with detached(home, env, "--insecure-localhost", "--log-format", "json") as started:
        started.ok()
    entries = [json.loads(line) for line in home.log_path.read_text().splitlines()]
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries), entries
    phases = [entry for entry in entries if entry["logger"] == "spl.shutdown"]
    assert [entry["phase"] for entry in phases] == [
        "stop accepting",
        "end streams",
        "stop pairs",
        "flush writer",
        "release home",
    ]
    assert any(entry["message"].startswith("listening on http://127.0.0.1:") for entry in entries)
