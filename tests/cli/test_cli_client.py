"""Where the CLI sends requests and credentials (cli/client.py), against real daemons and a ``FakeDaemon``.

The CLI never guesses a URL, sends the home's admin credential only to the home's own running daemon,
sends a JSON body with every write, and turns any answer that is not spl's into one clean line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cli_support import Cli, DaemonLike, FakeDaemon, Result, base_env, one_error_line, run_spl

from spl.daemon.home import Home

COMMANDS = (
    ("status",),
    ("thread", "list"),
    ("intend", "a goal"),
    ("token", "list"),
    ("fleet", "sync", "list"),
    ("fleet", "sync", "pull"),
)
PAIR = "pair_0123456789abcdef"


def flat(text: str) -> str:
    """Doctor output with its wrapping undone (one space between words)."""
    return " ".join(text.split())


def init_home(root: Path) -> tuple[Home, dict[str, str]]:
    env = base_env(root)
    run_spl("init", env=env).ok()
    return Home.resolve(root), env


def no_daemon_line(result: Result, home: Home) -> None:
    line = one_error_line(result)
    assert line == (
        f"error: no spl daemon is running for {home.root}; start one with `spl serve --daemon` or pass --url"
    ), line


def test_no_daemon_means_no_request_not_a_guessed_port(tmp_path: Path) -> None:
    home, env = init_home(tmp_path / "home")
    with FakeDaemon() as fake:
        # Before: with no daemon the CLI fell back to http://127.0.0.1:<config port> and sent the admin token.
        config = home.load_config()
        config.port = int(fake.url.rsplit(":", 1)[1])
        home.save_config(config)
        for command in COMMANDS:
            no_daemon_line(run_spl(*command, env=env), home)
    assert fake.seen == []


def test_run_files_without_the_lock_are_stale(tmp_path: Path) -> None:
    home, env = init_home(tmp_path / "home")
    with FakeDaemon() as fake:
        # What a daemon killed with -9 leaves behind, with a pid that is alive (this test's own).
        home.pid_path.write_text(f"{os.getpid()}\n")
        home.url_path.write_text(f"{fake.url}\n")
        for command in COMMANDS[:3]:
            no_daemon_line(run_spl(*command, env=env), home)
        doctor = run_spl("doctor", env=env)
        assert doctor.code == 2 and f"✗ daemon no spl daemon is running for {home.root}" in flat(doctor.out)
    assert fake.seen == []


def test_admin_credential_goes_only_to_the_home_daemon(secure_daemon: DaemonLike, secure_cli: Cli) -> None:
    admin = secure_daemon.home.read_secret(secure_daemon.home.admin_token_path)
    assert admin
    # The home's own daemon, found through its run files or named explicitly: the admin credential.
    env = secure_daemon.env()
    assert run_spl("status", "-o", "json", env=env).ok().json()["auth_required"] is True
    secure_cli("status").ok()
    secure_cli("fleet", "sync", "list").ok()
    secure_cli("status", env={"SPL_SERVE_URL": secure_daemon.url + "/"}).ok()

    with FakeDaemon(body=b'{"object": "identity", "did": "did:key:zFake"}') as fake:
        run_spl("identity", "show", "--url", fake.url, env=env).ok()
        run_spl("identity", "show", env={**env, "SPL_SERVE_URL": fake.url}).ok()
        assert [seen.headers.get("x-api-key") for seen in fake.seen] == [None, None]
        run_spl("identity", "show", "--url", fake.url, env={**env, "SPL_TOKEN": "spl_explicit"}).ok()
        assert fake.seen[-1].headers.get("x-api-key") == "spl_explicit"
    assert all(admin not in json.dumps(seen.headers) for seen in fake.seen)

    # Refused for want of a credential, the CLI says why it sent none.
    refusal = b'{"object": "error", "code": "AUTH_REQUIRED", "message": "this route needs a token"}'
    with FakeDaemon(status=401, body=refusal) as fake:
        line = one_error_line(secure_cli("status", "--url", fake.url))
    assert line.startswith("error: AUTH_REQUIRED: this route needs a token (the admin credential of ")
    assert f"goes only to its own daemon, at {secure_daemon.url}; set SPL_TOKEN" in line, line


def test_answers_that_are_not_spl_are_one_line_errors(tmp_path: Path) -> None:
    _, env = init_home(tmp_path / "home")
    with FakeDaemon(content_type="text/html", body=b"<html><body>\n<h1>Welcome</h1>\n</body></html>") as fake:
        for command in (*COMMANDS, ("identity", "show"), ("namespace", "list")):
            line = one_error_line(run_spl(*command, "--url", fake.url, env=env))
            assert "not spl's JSON" in line and "--url" in line, (command, line)
        doctor = run_spl("doctor", "--url", fake.url, env=env)
        assert doctor.code == 2 and "Traceback" not in doctor.err and "not spl's JSON" in doctor.out
    for url in ("http://[::1", "ftp://example.org", "http://127.0.0.1:99999"):
        line = one_error_line(run_spl("status", "--url", url, env=env))
        assert f"--url {url!r} is not a daemon URL" in line, line
        line = one_error_line(run_spl("status", env={**env, "SPL_SERVE_URL": url}))
        assert f"$SPL_SERVE_URL {url!r} is not a daemon URL" in line, line


def test_every_write_sends_a_json_body(tmp_path: Path) -> None:
    _, env = init_home(tmp_path / "home")
    answer = json.dumps({"pair_id": PAIR, "state": "paused", "token_id": "t"}).encode()
    with FakeDaemon(body=answer) as fake:
        for command in (
            ("fleet", "sync", "pause", PAIR),
            ("fleet", "sync", "resume", PAIR),
            ("fleet", "sync", "kick", PAIR),
            ("fleet", "sync", "remove", PAIR),
            ("token", "revoke", "t" * 16),
        ):
            run_spl(*command, "--url", fake.url, env=env).ok()
    writes = [(seen.method, seen.headers.get("content-type"), seen.body) for seen in fake.seen]
    assert [method for method, _, _ in writes] == ["POST", "POST", "POST", "DELETE", "DELETE"]
    assert all(kind == "application/json" and body == b"{}" for _, kind, body in writes), writes


def test_answers_of_the_wrong_shape_are_one_line_errors(tmp_path: Path) -> None:
    """JSON objects that lack a field a command prints, or hold it with the wrong type, name the URL and the field."""
    _, env = init_home(tmp_path / "home")
    cases = (
        (("status",), b'{"object": "status"}', "missing required field `endpoint_url`"),
        (("thread", "list"), b'{"object": "list", "data": {"id": "th_x"}}', "at `$.data`"),
        (("token", "list"), b'{"object": "list", "data": [{"token_id": 7}]}', "at `$.data[0].token_id`"),
        (("fleet", "sync", "list"), b'{"data": [{"state": "running"}]}', "missing required field `pair_id`"),
    )
    for command, body, problem in cases:
        with FakeDaemon(body=body) as fake:
            line = one_error_line(run_spl(*command, "--url", fake.url, env=env))
        assert f"GET {fake.url}/v1/" in line and problem in line and "--url" in line, (command, line)


def test_version_and_help_import_no_http_stack_nor_trio(tmp_path: Path) -> None:
    """`spl version` and `spl --help` register every group but import neither httpx, trio nor the soak engine."""
    import subprocess
    import sys

    env = base_env(tmp_path / "home")
    for args in (["version"], ["--help"]):
        process = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "spl.cli", *args], env=env, capture_output=True, text=True
        )
        assert process.returncode == 0, process.stderr
        imported = {line.rsplit("|", 1)[-1].strip() for line in process.stderr.splitlines()}
        # Command modules load only when their command runs (cli/main.py LazyGroup).
        assert "spl.cli.main" in imported and "spl.cli.soak" not in imported
        assert not imported & {"httpx", "trio", "spl.soak.run", "spl.daemon.assembly"}, sorted(imported)
