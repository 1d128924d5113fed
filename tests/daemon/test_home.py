"""The home: its run lock, how the CLI recognises a running daemon, file modes, and config.toml on disk.

A flock conflicts between two open file descriptions even inside one process, so one test process can play
both the running daemon and the one that arrives second.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from spl.daemon import home as home_module
from spl.daemon.bootstrap import initialise
from spl.daemon.home import DaemonLock, Home, HomeBusy, HomeError, LooseMode, RunningDaemon

URL = "http://127.0.0.1:9"


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    home = Home.resolve(tmp_path / "home")
    initialise(home)
    yield home


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def act_as_daemon(home: Home) -> DaemonLock:
    """What ``Daemon.run`` does first: take the lock, then write the pid and, once listening, the URL."""
    lock = DaemonLock(home)
    lock.acquire()
    home.pid_path.write_text(f"{os.getpid()}\n")
    home.url_path.write_text(f"{URL}\n")
    return lock


def test_one_lock_per_home_naming_the_holder(home: Home) -> None:
    first = act_as_daemon(home)
    assert home.running() == RunningDaemon(pid=os.getpid(), url=URL)
    with pytest.raises(HomeBusy) as refused:
        DaemonLock(home).acquire()
    assert str(refused.value) == (
        f"an spl daemon already runs for {home.root} (pid {os.getpid()}, {URL}); stop it with `spl serve --stop`"
    )
    first.release()
    assert home.running() is None
    second = DaemonLock(home)
    second.acquire()
    assert second.held and home.lock_path.read_text() == f"{os.getpid()}\n"
    second.release()
    assert home.lock_path.exists() and home.lock_path.read_text() == ""  # never deleted, pid cleared


def test_run_files_count_only_while_the_lock_is_held(home: Home) -> None:
    # A daemon killed with -9 leaves its run files; the pid in them may even be alive (here: ours).
    home.pid_path.write_text(f"{os.getpid()}\n")
    home.url_path.write_text(f"{URL}\n")
    assert home.running() is None
    home.lock_path.write_text(f"{os.getpid()}\n")
    assert home.running() is None  # a lock file nobody holds is no daemon either


def test_a_holder_that_has_not_written_its_pid_yet(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    fd = os.open(home.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert home.running() == RunningDaemon(pid=None, url=None)
        monkeypatch.setattr(home_module, "LOCK_SETTLE_SECONDS", 0.0)
        with pytest.raises(HomeBusy, match=r"\(pid unknown, not listening yet\)"):
            DaemonLock(home).acquire()
    finally:
        os.close(fd)


def test_a_cli_check_does_not_keep_a_daemon_out(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    """``Home.running`` holds the lock shared for a moment; a daemon starting right then waits it out."""
    probe = os.open(home.lock_path, os.O_RDONLY | os.O_CREAT, 0o600)
    fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
    waits: list[float] = []

    def probe_lets_go(seconds: float) -> None:
        waits.append(seconds)
        os.close(probe)  # the probe ends while the daemon waits

    monkeypatch.setattr(home_module.time, "sleep", probe_lets_go)
    lock = DaemonLock(home)
    lock.acquire()
    assert lock.held and len(waits) == 1
    lock.release()


def test_init_makes_a_private_home_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        home = Home.resolve(tmp_path / "home")
        initialise(home)
    finally:
        os.umask(previous)
    assert home.loose_modes() == []
    assert mode(home.root) == 0o700 and mode(home.config_path) == 0o600 and mode(home.db_path) == 0o600


def test_tighten_reports_and_fixes_loose_modes(home: Home) -> None:
    (home.root / "hub.db-wal").write_bytes(b"")
    home.log_path.write_text("log\n")
    for path, loose in ((home.root, 0o755), (home.db_path, 0o644), (home.root / "hub.db-wal", 0o640)):
        path.chmod(loose)
    home.log_path.chmod(0o604)
    expected = [
        LooseMode(home.root, 0o755, 0o700),
        LooseMode(home.root / "hub.db", 0o644, 0o600),
        LooseMode(home.root / "hub.db-wal", 0o640, 0o600),
        LooseMode(home.log_path, 0o604, 0o600),
    ]
    assert home.loose_modes() == expected
    assert home.tighten() == expected
    assert home.loose_modes() == []
    assert mode(home.root) == 0o700 and mode(home.db_path) == 0o600 and mode(home.log_path) == 0o600


def test_save_config_is_private(home: Home) -> None:
    home.config_path.chmod(0o644)
    home.save_config(home.load_config())
    assert mode(home.config_path) == 0o600


# -- config.toml ----------------------------------------------------------------------------------------


def test_a_damaged_config_names_the_key_and_the_check_not_init_force(home: Home) -> None:
    text = home.config_path.read_text().replace("port = 9100", "prot = 19403")
    home.config_path.write_text(text)
    with pytest.raises(HomeError) as refused:
        home.load_config()
    assert str(refused.value) == (
        f"{home.config_path}: serve.prot is not a config key (did you mean serve.port?); rename or remove it; "
        "fix it, then check with `spl config validate`"
    )
    assert "init --force" not in str(refused.value)


def test_save_config_keeps_the_users_comments_and_what_spl_does_not_read(home: Home) -> None:
    user_text = (
        home.config_path.read_text()
        .replace("port = 9100", "# opened in the firewall\nport = 9300")
        .replace("[federation]\n", "[federation]\ntrust_loopback = true\n")
        + '\n[relay]\nurl = "wss://relay.example"\n'
    )
    home.config_path.write_text(user_text)
    config = home.load_config()
    config.max_connections = 64
    home.save_config(config)
    saved = home.config_path.read_text()
    assert saved == user_text.replace("max_connections = 512", "max_connections = 64")
    assert mode(home.config_path) == 0o600
    assert [p.name for p in home.root.iterdir() if p.name.endswith(".tmp")] == []


def test_save_config_refuses_a_value_out_of_range(home: Home) -> None:
    before = home.config_path.read_text()
    config = home.load_config()
    config.port = 70000
    with pytest.raises(HomeError, match=r"serve\.port must be an integer from 0 to 65535"):
        home.save_config(config)
    assert home.config_path.read_text() == before


def test_init_force_keeps_config_and_rotates_the_did_and_admin_token(home: Home) -> None:
    config = home.load_config()
    config.port = 9200
    config.cors_origins = ["https://app.example"]
    home.save_config(config)
    before, old_did = home.config_path.read_text(), config.did
    old_token, old_seed = home.read_secret(home.admin_token_path), home.key_path.read_bytes()

    initialise(home, force=True)

    after = home.load_config()
    assert after.port == 9200 and after.cors_origins == ["https://app.example"]
    assert after.did != old_did and after.did == home.load_identity().did
    assert home.config_path.read_text() == before.replace(old_did, after.did)  # only the DID changed
    assert home.read_secret(home.admin_token_path) != old_token and home.key_path.read_bytes() != old_seed


def test_init_force_refuses_a_damaged_config_and_changes_nothing(home: Home) -> None:
    home.config_path.write_text(home.config_path.read_text().replace("required = true", 'required = "no"'))
    before, seed = home.config_path.read_text(), home.key_path.read_bytes()
    with pytest.raises(HomeError, match=r"auth\.required must be true or false .*`spl config validate`"):
        initialise(home, force=True)
    assert home.config_path.read_text() == before and home.key_path.read_bytes() == seed
