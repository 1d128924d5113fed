"""CLI commands that work on the home alone, or that must fail cleanly when no daemon runs."""

from __future__ import annotations

import re
import stat
from pathlib import Path

from cli_support import Result, base_env, free_port, run_spl

from spl.daemon.home import Home

TOKEN = "spl_local_sa_0123456789abcdef_" + "ab" * 32


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def one_error_line(result: Result) -> str:
    """The failure is exit 1 with exactly one line on stderr, starting with ``error:``."""
    assert result.code == 1, f"exit {result.code}\nstdout: {result.out}\nstderr: {result.err}"
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    assert "Traceback" not in result.err
    return lines[0]


def test_version(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    assert re.fullmatch(r"spl \d+\.\d+\.\d+\S*\n", run_spl("version", env=env).ok().out)
    payload = run_spl("version", "-o", "json", env=env).ok().json()
    assert payload["version"] and payload["python"]
    refused = run_spl("version", "-o", "xml", env=env)
    assert refused.code == 2 and "'xml' is not one of text, json, yaml, wide" in refused.err


def test_init_force_and_secret_modes(tmp_path: Path) -> None:
    root = tmp_path / "home"
    env = base_env(root)
    first = run_spl("init", "-o", "json", env=env).ok().json()
    assert first["created"] is True and first["did"].startswith("did:key:z6Mk")
    home = Home.resolve(root)
    assert mode(home.key_path) == 0o600
    assert mode(home.admin_token_path) == 0o600
    assert home.load_config().did == first["did"]

    refused = one_error_line(run_spl("init", env=env))
    assert "--force" in refused
    assert home.load_config().did == first["did"]

    kept = run_spl("init", "--if-missing", "-o", "json", env=env).ok().json()
    assert kept == {"did": first["did"], "home": str(home.root), "created": False}

    replaced = run_spl("init", "--force", "-o", "json", env=env).ok().json()
    assert replaced["did"] != first["did"] and home.load_config().did == replaced["did"]
    assert mode(home.key_path) == 0o600 and mode(home.admin_token_path) == 0o600


def test_identity_generate_refuses_without_force(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    assert "spl init" in one_error_line(run_spl("identity", "generate", env=env))
    did = run_spl("init", "-o", "json", env=env).ok().json()["did"]
    assert "--force" in one_error_line(run_spl("identity", "generate", env=env))
    result = run_spl("identity", "generate", "--force", "-o", "json", env=env).ok()
    payload = result.json()
    assert payload["previous_did"] == did and payload["did"] != did
    assert "restart" in result.err
    home = Home.resolve(tmp_path / "home")
    assert home.load_config().did == payload["did"] == home.load_identity().did
    assert mode(home.key_path) == 0o600


def test_identity_show_falls_back_to_the_home(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    did = run_spl("init", "-o", "json", env=env).ok().json()["did"]
    env["SPL_SERVE_URL"] = f"http://127.0.0.1:{free_port()}"
    result = run_spl("identity", "show", "-o", "json", env=env).ok()
    payload = result.json()
    assert payload["did"] == did and payload["endpoint_url"] == "http://127.0.0.1:9100"
    assert "no daemon answers" in result.err
    text = run_spl("identity", "show", env=env).ok().out
    assert did in text and "daemon not running" in text
    del env["SPL_SERVE_URL"]  # no URL and no daemon for this home: the home's identity, nothing asked of anyone
    result = run_spl("identity", "show", "-o", "json", env=env).ok()
    assert result.json()["did"] == did and "no spl daemon is running for this home" in result.err


def test_no_daemon_fails_with_one_line(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    run_spl("init", env=env).ok()
    env["SPL_SERVE_URL"] = f"http://127.0.0.1:{free_port()}"
    for args in (["status"], ["thread", "list"], ["intend", "goal"], ["token", "list"], ["namespace", "list"]):
        line = one_error_line(run_spl(*args, env=env))
        assert "no daemon answers" in line and "spl serve" in line, args


def test_token_save_is_private_and_silent(tmp_path: Path) -> None:
    root = tmp_path / "home"
    env = base_env(root)
    run_spl("init", env=env).ok()
    result = run_spl("token", "save", TOKEN, env=env).ok()
    assert TOKEN not in result.out + result.err
    home = Home.resolve(root)
    assert home.saved_token_path.read_text().strip() == TOKEN
    assert mode(home.saved_token_path) == 0o600
    assert "not an spl token" in one_error_line(run_spl("token", "save", "hunter2", env=env))


def test_bad_input_is_one_line_before_any_request(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    env["SPL_SERVE_URL"] = f"http://127.0.0.1:{free_port()}"
    assert "not valid JSON" in one_error_line(run_spl("intend", "g", "--body", "{nope", env=env))
    assert "JSON object" in one_error_line(run_spl("intend", "g", "--body", "[1]", env=env))
    assert "cannot read" in one_error_line(run_spl("emit", "--act", "DO", "-t", "t", "--body", "@/no/such", env=env))
    assert "LEARN" in one_error_line(run_spl("emit", "--act", "SHOUT", "-t", "t", env=env))
    assert "VOID" in one_error_line(run_spl("emit", "--act", "DO", "-t", "t", "--data-type", "X", env=env))
    assert "records:read" in one_error_line(run_spl("token", "mint", "--scopes", "records:rd", env=env))


def test_usage_errors_are_clean(tmp_path: Path) -> None:
    result = run_spl("know", "summary", env=base_env(tmp_path / "home"))
    assert result.code == 2 and "Traceback" not in result.err and "--thread" in result.err


def test_serve_daemon_status_and_stop(tmp_path: Path) -> None:
    root = tmp_path / "home"
    env = base_env(root)
    run_spl("init", env=env).ok()
    home = Home.resolve(root)
    try:
        started = run_spl("serve", "--daemon", "--port", "0", "--insecure-localhost", env=env).ok()
        url = home.read_secret(home.url_path)
        assert url and url.startswith("http://127.0.0.1:") and url in started.out
        status = run_spl("status", "-o", "json", env=env).ok().json()
        assert status["endpoint_url"] == url and status["auth_required"] is False
        assert status["instance_did"] == home.load_config().did
        text = run_spl("status", env=env).ok().out
        assert f"spl daemon at {url}" in text and "auth off" in text and "Supervision" in text
        assert "already runs" in one_error_line(run_spl("serve", "--daemon", "--port", "0", env=env))
    finally:
        stopped = run_spl("serve", "--stop", env=env)
    assert stopped.code == 0 and "stopped" in stopped.out
    assert home.read_secret(home.pid_path) is None
    assert "no spl daemon is running" in run_spl("serve", "--stop", env=env).ok().out
