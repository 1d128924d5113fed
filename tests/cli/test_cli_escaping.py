"""What any client or peer wrote reaches the operator's terminal as inert text.

An actor, a record body, a token label or a namespace description is whatever its writer
chose; a pair's peer_url and last_error and a thread id are whatever a daemon reports. In
text output the CLI escapes every such value (``spl.core.text.printable``): no OSC or CSI
escape reaches the terminal and no value starts a line of its own. ``-o json`` stays exact
JSON that decodes to the very same strings.

A real auth-off daemon holds the records, tokens and namespaces. ``FakeDaemon(answer=hostile_answer)`` plays a
daemon that reports hostile pairs, threads, status and health: what a real daemon never
produces (it validates thread ids and escapes peer messages itself) but a compromised one,
or anything at ``--url``, may send.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest
from cli_support import Cli, FakeDaemon, Result, base_env, cli_for

from spl.cli.answers import Pair
from spl.cli.fleet import federation_lines
from spl.cli.main import run
from spl.cli.output import json_text
from spl.daemon.bootstrap import initialise
from spl.daemon.home import Home
from spl.daemon.launcher import DaemonProcess

FORGED = "2026-01-01T00:00:00Z CRITICAL forged line"
# OSC (retitle the terminal), a newline forging a line, CSI (clear the screen), a bidi
# override, a C1 CSI, DEL, a zero-width joiner, a line separator.
HOSTILE = f"bob\x1b]0;pwned\x07\n{FORGED}\r\x1b[2J\u202etxt\u202c\x9b31m\x7f\u200d\u2028end"
THREAD = "th_escaping"
PAIR_ID = "pair_00000000000000aa"


def assert_inert(text: str, *, lines: int | None = None) -> list[str]:
    """``text`` holds no character a terminal acts on but the line ends, and no forged line."""
    rows = text.split("\n")
    assert rows[-1] == "", repr(text[-80:])  # the CLI ends what it prints with a newline
    rows = rows[:-1]
    for row in rows:
        assert row.isprintable(), repr(row)
        assert not row.startswith(FORGED), text
    if lines is not None:
        assert len(rows) == lines, text
    return rows


def in_process(*args: str, env: dict[str, str]) -> Result:
    """``spl *args`` run by ``spl.cli.main.run`` inside this process, with ``env`` as the environment.

    The same code path as the console script (one-line errors, exit codes) at a few
    milliseconds a command instead of the ~0.4 s of a fresh interpreter importing the CLI.
    """
    saved_env, saved_argv = dict(os.environ), sys.argv
    out, err = io.StringIO(), io.StringIO()
    code = 0
    os.environ.clear()
    os.environ.update(env)
    sys.argv = ["spl", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                run()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv = saved_argv
    return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = DaemonProcess(tmp_path_factory.mktemp("escaping") / "home")
    process.start(port=0)
    yield process
    process.kill()


@pytest.fixture(scope="module")
def cli(daemon: DaemonProcess) -> Cli:
    """``spl`` against the real daemon, in this process (see :func:`in_process`)."""
    environment = {**daemon.env(), "SPL_SERVE_URL": daemon.url, "COLUMNS": "200"}

    def spl(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Result:
        assert stdin is None and env is None, "in-process runs take neither stdin nor extra env"
        return in_process(*args, env=environment)

    return spl


@pytest.fixture(scope="module")
def hostile_record(daemon: DaemonProcess) -> dict[str, Any]:
    record = {
        "act": "KNOW",
        "actor": HOSTILE,
        "body": {"summary": HOSTILE, "kind": "x.escaping"},
        "clock": 7,
        "thread": THREAD,
    }
    response = httpx.post(f"{daemon.url}/v1/records", json=record, timeout=10.0)
    assert response.status_code == 201, response.text
    stored: dict[str, Any] = response.json()
    assert stored["actor"] == HOSTILE
    return stored


def test_thread_records_escape_actor_and_body(daemon: DaemonProcess, cli: Cli, hostile_record: dict[str, Any]) -> None:
    # Once as the operator runs it (a process of its own writing to a pipe), then in-process.
    subprocess_out = cli_for(daemon)("thread", "records", THREAD).ok().out
    assert cli("thread", "records", THREAD).ok().out == subprocess_out
    (line,) = assert_inert(subprocess_out, lines=1)
    assert line.startswith(f"{hostile_record['id']}  7  KNOW    bob\\x1b]0;pwned\\x07\\x0a2026"), line
    assert "\\u202e" in line and "\\x9b" in line and "\\x7f" in line and "\\u2028" in line, line


def test_thread_show_and_list_escape_participants(cli: Cli, hostile_record: dict[str, Any]) -> None:
    shown = assert_inert(cli("thread", "show", THREAD).ok().out)
    assert any(row.startswith("  bob\\x1b]0;pwned") for row in shown), shown
    listed = assert_inert(cli("thread", "list").ok().out)
    assert any(row.startswith(THREAD) for row in listed), listed


def test_json_output_is_exact_and_inert(cli: Cli, hostile_record: dict[str, Any]) -> None:
    for command in (("thread", "records", THREAD), ("thread", "show", THREAD)):
        result = cli(*command, "-o", "json").ok()
        assert_inert(result.out)
        value = result.json()
        listed = value.get("data")  # `thread records` is a list envelope, `thread show` one object
        actors = [listed[0]["actor"]] if listed is not None else [p["actor"] for p in value["participants"]]
        assert actors == [HOSTILE]
    records = cli("thread", "records", THREAD, "-o", "json").ok().json()["data"]
    assert records[0]["body"]["summary"] == HOSTILE and records[0]["id"] == hostile_record["id"]


def test_json_text_escapes_only_what_a_terminal_acts_on() -> None:
    value = {"plain": "café ✓ 日本 😀", "hostile": HOSTILE, "astral": "\U000e0001tag", "lone": "\ud800"}
    text = json_text(value)
    assert json.loads(text) == value
    assert all(row.isprintable() for row in text.split("\n"))
    assert '"café ✓ 日本 😀"' in text  # ordinary text stays readable
    assert "\\udb40\\udc01" in text  # an astral format character, as a JSON surrogate pair


def test_token_labels_and_namespace_descriptions_are_escaped(cli: Cli) -> None:
    # Control characters are refused in labels; a bidi override is not, and would reorder the line.
    label = "ci\u202egnp.exe"
    cli("token", "mint", "--scopes", "records:read", "--label", label).ok()
    tokens = assert_inert(cli("token", "list").ok().out)
    assert any(row.endswith("ci\\u202egnp.exe") for row in tokens), tokens
    cli("namespace", "create", "acme", "--description", HOSTILE).ok()
    namespaces = assert_inert(cli("namespace", "list").ok().out)
    assert any(row.startswith("acme") and "bob\\x1b]0;pwned" in row for row in namespaces), namespaces


# -- a daemon that reports hostile data --------------------------------------------------------

HOSTILE_PAIR: dict[str, Any] = {
    "object": "sync_pair",
    "pair_id": PAIR_ID,
    "direction": "pull",
    "peer_did": f"did:key:{HOSTILE}",
    "peer_url": f"http://evil.example:9200/{HOSTILE}",
    "thread_id": f"th_{HOSTILE}",
    "mode": "polling",
    "poll_interval": 5,
    "state": "failing",
    "state_reason": HOSTILE,
    "cursor": HOSTILE,
    "lag_records": 1,
    "lag_seconds": 2,
    "records_per_minute": 0,
    "last_error": {"code": f"HTTP_5XX{HOSTILE}", "message": HOSTILE, "at": 1_700_000_000},
    "records_refused": {HOSTILE: 1},
    "history": [{"at": 1_700_000_000, "from": "running", "to": "failing", "reason": HOSTILE}],
    "pulled_now": 0,
}
HOSTILE_THREAD = {
    "id": f"th_{HOSTILE}",
    "namespace": HOSTILE,
    "state": HOSTILE,
    "record_count": 1,
    "last_clock": 1,
    "opened_by": HOSTILE,
    "participants": [{"actor": HOSTILE, "role": HOSTILE, "record_count": 1}],
}
ROUTES: dict[str, tuple[int, Any]] = {
    "/v1/sync/pairs": (200, {"object": "list", "data": [HOSTILE_PAIR]}),
    f"/v1/sync/pairs/{PAIR_ID}": (200, HOSTILE_PAIR),
    f"/v1/sync/pairs/{PAIR_ID}/stats": (200, {"totals": {"pulls": 3}, "errors_last_hour": 4}),
    f"/v1/sync/pairs/{PAIR_ID}/pause": (200, HOSTILE_PAIR),
    f"/v1/sync/pairs/{PAIR_ID}/resume": (200, HOSTILE_PAIR),
    f"/v1/sync/pairs/{PAIR_ID}/kick": (200, HOSTILE_PAIR),
    "/v1/threads": (200, {"object": "list", "data": [HOSTILE_THREAD]}),
    "/v1/threads/th_x": (200, HOSTILE_THREAD),
    "/health": (503, {"status": HOSTILE, "version": HOSTILE, "problems": [HOSTILE], "sequence": 1}),
    "/.well-known/syncropel": (200, {"federation_manifest": {"daemon": {"did": HOSTILE}}}),
    "/v1/status": (
        200,
        {
            "bind_host": HOSTILE,
            "endpoint_url": HOSTILE,
            "instance_did": HOSTILE,
            "home": HOSTILE,
            "sequence": 1,
            "uptime_secs": 1,
            "auth_required": True,
            "federation": {"pairs": [HOSTILE_PAIR, HOSTILE_PAIR]},
        },
    ),
}


def hostile_answer(method: str, path: str) -> tuple[int, bytes]:
    """Each path of :data:`ROUTES` with its canned JSON (404 otherwise); any DELETE answers the hostile pair."""
    status, payload = ROUTES.get(urlsplit(path).path, (404, {"object": "error", "code": "NOPE"}))
    if method == "DELETE":
        status, payload = 200, HOSTILE_PAIR
    return status, json.dumps(payload).encode()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeDaemon, dict[str, str]]]:
    """The hostile daemon, and an environment for ``spl`` with a home of its own."""
    home = tmp_path_factory.mktemp("escaping-hostile") / "home"
    initialise(Home.resolve(home))
    with FakeDaemon(answer=hostile_answer) as server:
        yield server, base_env(home)


def run_against(hostile: tuple[FakeDaemon, dict[str, str]], *args: str) -> Result:
    server, env = hostile
    return in_process(*args, "--url", server.url, env=env)


Hostile = tuple[FakeDaemon, dict[str, str]]


def test_fleet_list_and_status_escape_what_the_daemon_reports(hostile: Hostile) -> None:
    assert_inert(run_against(hostile, "fleet", "sync", "list").ok().out, lines=3)  # header, rule, one pair
    rows = assert_inert(run_against(hostile, "fleet", "sync", "status", PAIR_ID).ok().out)
    assert any(row.startswith("  last error:    HTTP_5XXbob\\x1b]0;pwned") for row in rows), rows
    assert any(row.startswith("pair pair_00000000000000aa  (pull ← http://evil.example") for row in rows), rows


def test_fleet_actions_escape_what_the_daemon_reports(hostile: Hostile) -> None:
    pulled = run_against(hostile, "fleet", "sync", "pull")
    assert pulled.code == 1, pulled.err  # the pair is failing
    (line,) = assert_inert(pulled.out, lines=1)
    assert "FAILING: HTTP_5XXbob\\x1b" in line, line
    for action in ("pause", "resume", "kick", "remove"):
        assert_inert(run_against(hostile, "fleet", "sync", action, PAIR_ID).ok().out, lines=1)


def test_thread_list_and_show_escape_what_the_daemon_reports(hostile: Hostile) -> None:
    listed = assert_inert(run_against(hostile, "thread", "list").ok().out, lines=3)
    assert listed[2].startswith("th_bob\\x1b]0;pwned\\x07\\x0a2026"), listed
    shown = assert_inert(run_against(hostile, "thread", "show", "th_x").ok().out)
    assert shown[0].startswith("thread:     th_bob\\x1b"), shown


def test_status_federation_lines_are_escaped() -> None:
    pairs = [HOSTILE_PAIR, {**HOSTILE_PAIR, "state": HOSTILE, "last_error": None}]
    lines = federation_lines([msgspec.convert(pair, Pair) for pair in pairs])
    assert_inert("\n".join(lines) + "\n", lines=3)


def test_doctor_escapes_what_the_daemon_reports(hostile: Hostile) -> None:
    doctor = run_against(hostile, "doctor")
    assert doctor.code == 2, doctor.out + doctor.err
    rows = assert_inert(doctor.out)
    assert sum("bob\\x1b]0;pwned" in row for row in rows) >= 3, rows
    as_json = run_against(hostile, "doctor", "-o", "json")
    assert_inert(as_json.out)
    messages = [check["message"] for check in json.loads(as_json.out)["checks"]]
    assert any(HOSTILE in message for message in messages), messages  # exact in JSON
