"""The CLI's output contract (issue 13, "The CLI"): ``-o text|json|yaml|wide``, one list envelope, errors as
data under ``-o json|yaml``, RFC 3339 times, ``spl fleet sync list --watch``, the progress line, and the
environment variables in help. A :class:`FakeDaemon` gives canned answers: no spl daemon is needed for any
of it.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from cli_support import FakeDaemon, base_env, ctrl_c_works, run_spl

from spl.cli.output import Progress, as_time, rfc3339, with_rfc3339

PAIR_ID = "pair_0123456789abcdef"
DID = "did:key:z6MkOutputTest"
SECONDS = 1_796_000_000.0  # 2026-11-30T00:53:20Z
STAMP = "2026-11-30T00:53:20Z"
HOSTILE = "bob\x1b]0;pwned\x07\u202etxt"

# One item every list command can read: each Struct takes the fields it needs and ignores the others.
ITEM: dict[str, Any] = {
    "object": "item",
    "id": "th_output",
    "did": DID,
    "pair_id": PAIR_ID,
    "token_id": "tok_1",
    "grant_id": "grant_1",
    "thread": "th_output",
    "thread_id": "th_output",
    "alias": "TASK-0001",
    "status": "open",
    "state": "running",
    "act": "KNOW",
    "actor": DID,
    "clock": 1,
    "sequence": 1,
    "label": HOSTILE,
    "created_at": SECONDS,  # an older daemon's Unix seconds: printed as RFC 3339
    "updated_at": STAMP,  # a newer daemon's RFC 3339: printed as it came
}

LIST_COMMANDS = [
    ("actor", "list"),
    ("token", "list"),
    ("namespace", "list"),
    ("aitl", "list"),
    ("consent", "list"),
    ("federation", "list"),
    ("fleet", "sync", "list"),
    ("fleet", "sync", "pairs"),
    ("fleet", "sync", "pull"),
    ("thread", "list"),
    ("thread", "records", "th_output"),
    ("task", "list"),
]


def _listing(method: str, path: str) -> tuple[int, bytes]:
    if method == "POST":  # the kick of `spl fleet sync pull`: the pair as it is after the pull
        return 200, json.dumps({**ITEM, "pulled_now": 1}).encode()
    return 200, json.dumps({"object": "list", "data": [ITEM], "has_more": False, "next_cursor": None}).encode()


@pytest.fixture(scope="module")
def fake() -> Any:
    with FakeDaemon(answer=_listing) as daemon:
        yield daemon


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return base_env(tmp_path / "home")


@pytest.mark.parametrize("command", LIST_COMMANDS, ids=" ".join)
def test_every_list_command_prints_one_envelope(
    command: tuple[str, ...], fake: FakeDaemon, env: dict[str, str]
) -> None:
    """``-o json``: ``{"object": "list", "data": [...], "has_more", "next_cursor"}``; ``-o yaml``: the same data."""
    as_json = run_spl(*command, "-o", "json", "--url", fake.url, env=env).ok()
    assert as_json.err == ""  # no progress line: stderr is not a terminal, and -o json never has one
    envelope = as_json.json()
    assert envelope.keys() == {"object", "data", "has_more", "next_cursor"}
    assert envelope["object"] == "list" and envelope["has_more"] is False and envelope["next_cursor"] is None
    (item,) = envelope["data"]
    assert item["pair_id"] == PAIR_ID and item["label"] == HOSTILE
    assert item["created_at"] == STAMP and item["updated_at"] == STAMP
    as_yaml = run_spl(*command, "-o", "yaml", "--url", fake.url, env=env).ok()
    assert as_yaml.out.isascii() and "\x1b" not in as_yaml.out  # inert: escapes spelt out, as in JSON
    assert yaml.safe_load(as_yaml.out) == envelope


def test_output_choices_show_in_help_and_a_bad_one_is_a_usage_error(env: dict[str, str]) -> None:
    shown = run_spl("fleet", "sync", "list", "--help", env=env).ok().out
    assert "[text|json|yaml|wide]" in shown
    refused = run_spl("fleet", "sync", "list", "-o", "xml", env=env)
    assert refused.code == 2 and refused.out == ""
    assert "'xml' is not one of text, json, yaml, wide" in refused.err


def test_wide_adds_columns_and_text_stays_as_it_was(fake: FakeDaemon, env: dict[str, str]) -> None:
    text = run_spl("fleet", "sync", "list", "--url", fake.url, env=env).ok().out.splitlines()
    wide = run_spl("fleet", "sync", "list", "-o", "wide", "--url", fake.url, env=env).ok().out.splitlines()
    assert text[0].split() == [
        "PAIR_ID",
        "DIRECTION",
        "PEER",
        "THREAD",
        "MODE",
        "STATE",
        "LAG",
        "REC/MIN",
        "LAST_ERROR",
    ]
    assert wide[0].split() == [
        *text[0].split(),
        *["POLL", "TOKEN", "PULLED", "DUPLICATE", "FAILURES", "LAST_SUCCESS", "NEXT_RETRY", "PEER_DID"],
    ]
    tasks = run_spl("task", "list", "-o", "wide", "--url", fake.url, env=env).ok().out.splitlines()
    assert tasks[0].split()[-2:] == ["CREATED", "UPDATED"] and tasks[2].split()[-2:] == [STAMP, STAMP]
    # A command with nothing more to show prints its text under -o wide.
    namespaces = ("namespace", "list", "--url", fake.url)
    assert run_spl(*namespaces, "-o", "wide", env=env).ok().out == run_spl(*namespaces, env=env).ok().out


ERROR = {"object": "error", "type": "invalid_request_error", "code": "NOT_FOUND", "message": "no pair pair_x"}


@pytest.mark.parametrize("output", ["json", "yaml"])
def test_errors_are_data_on_stdout_under_o_json_and_yaml(output: str, env: dict[str, str]) -> None:
    load = json.loads if output == "json" else yaml.safe_load
    with FakeDaemon(status=404, body=json.dumps(ERROR).encode()) as fake:
        failed = run_spl("fleet", "sync", "status", PAIR_ID, "-o", output, "--url", fake.url, env=env)
    assert failed.code == 1 and failed.err == ""
    answer = load(failed.out)
    assert answer["object"] == "error" and answer["code"] == "NOT_FOUND" and answer["message"] == "no pair pair_x"
    assert answer["type"] == "invalid_request_error"  # the daemon's own envelope, type included
    # A failure of the CLI's own: no daemon runs for this home and no --url was given.
    local = run_spl("thread", "list", "-o", output, env=env)
    assert local.code == 1 and local.err == ""
    assert load(local.out) == {
        "object": "error",
        "type": "cli_error",
        "code": "NO_DAEMON",
        "message": load(local.out)["message"],
    }
    assert "spl serve --daemon" in load(local.out)["message"]
    # Text output keeps the one error line on stderr.
    text = run_spl("thread", "list", env=env)
    assert text.code == 1 and text.out == "" and text.err.startswith("error: no spl daemon is running")


def test_times_are_read_in_both_spellings_and_printed_as_rfc3339() -> None:
    assert as_time(SECONDS) == SECONDS and as_time(STAMP) == SECONDS
    assert as_time("2026-11-30T01:53:20+01:00") == SECONDS
    for odd in (None, True, "", "yesterday", "2026-11-30T00:53:20", "x" * 100, [SECONDS]):
        assert as_time(odd) is None, odd
    assert rfc3339(SECONDS) == STAMP and rfc3339(STAMP) == STAMP and rfc3339(SECONDS + 0.25) == f"{STAMP[:-1]}.250000Z"
    assert rfc3339("not a time") is None
    nested = {"at": SECONDS, "last_error": {"at": SECONDS, "code": 7}, "history": [{"at": STAMP, "to": "running"}]}
    assert with_rfc3339(nested) == {
        "at": STAMP,
        "last_error": {"at": STAMP, "code": 7},
        "history": [{"at": STAMP, "to": "running"}],
    }
    # Only time keys change: a number elsewhere, or a flag under a time key, stays what it was.
    assert with_rfc3339({"attempts": 3, "lag_seconds": 1.5, "seen_at": False}) == {
        "attempts": 3,
        "lag_seconds": 1.5,
        "seen_at": False,
    }


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_done_total_rate_and_eta_on_a_terminal_only() -> None:
    ticks = iter([0.0, 10.0, 10.0])
    stream = _Terminal()
    progress = Progress(500, stream=stream, clock=lambda: next(ticks))
    assert progress.enabled
    progress.update(100)  # 100 records in 10 s: 10/s, 400 to go
    assert stream.getvalue() == "\rcatch-up: 100/500 records (20%), 10 records/s, ETA 40s"
    progress.finish()
    assert stream.getvalue().endswith("\r" + " " * len("catch-up: 100/500 records (20%), 10 records/s, ETA 40s") + "\r")
    piped = io.StringIO()
    quiet = Progress(500, stream=piped)
    quiet.update(100)
    quiet.finish()
    assert not quiet.enabled and piped.getvalue() == ""


def test_sync_list_watch_redraws_on_change_and_ends_on_ctrl_c(env: dict[str, str]) -> None:
    """One line per change under -o json (unchanged answers print nothing); SIGINT ends it with exit 130."""
    asked = 0
    lock = threading.Lock()

    def answer(method: str, path: str) -> tuple[int, bytes]:
        nonlocal asked
        with lock:
            asked += 1
            state = "starting" if asked <= 3 else "running"
        return 200, json.dumps({"object": "list", "data": [{**ITEM, "state": state}]}).encode()

    with FakeDaemon(answer=answer) as fake:
        args = ["fleet", "sync", "list", "--watch", "--interval", "0.2s", "-o", "json", "--url", fake.url]
        process = subprocess.Popen(
            [sys.executable, "-m", "spl.cli", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=ctrl_c_works,
        )
        try:
            assert process.stdout is not None
            first, second = (json.loads(process.stdout.readline()) for _ in range(2))
            process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
    assert [first["data"][0]["state"], second["data"][0]["state"]] == ["starting", "running"]
    assert first["object"] == "list" and first["data"][0]["created_at"] == STAMP
    assert asked >= 4 and process.returncode == 130 and "Traceback" not in err


def test_sync_list_watch_interval_is_bounded(env: dict[str, str]) -> None:
    for interval in ("0s", "0.1s", "2h"):
        refused = run_spl("fleet", "sync", "list", "--watch", "--interval", interval, "--url", "http://x:1", env=env)
        assert refused.code == 1 and "--interval" in refused.err and "0.2s to 1h" in refused.err


def _commands(command: Any, path: tuple[str, ...] = ()) -> Any:
    yield path, command
    for name, child in sorted(getattr(command, "commands", {}).items()):
        yield from _commands(child, (*path, name))


def test_options_read_from_the_environment_show_their_variable(env: dict[str, str]) -> None:
    from spl.cli.main import app

    urls = 0
    for path, command in _commands(typer.main.get_command(app)):
        for param in command.params:
            if "--url" in getattr(param, "opts", []) and "SPL_SERVE_URL" in (getattr(param, "help", "") or ""):
                urls += 1
                assert "[env var: SPL_SERVE_URL]" in param.help, " ".join(path)
    assert urls > 40
    assert "[env var: SPL_SERVE_URL]" in run_spl("thread", "list", "--help", env=env).ok().out
    assert "SPL_PEER_TOKEN]" in run_spl("debug", "thread-diff", "--help", env=env).ok().out
    root = " ".join(run_spl("--help", env=env).ok().out.split())
    assert all(name in root for name in ("SYNCROPEL_HOME", "SPL_SERVE_URL", "SPL_TOKEN")), root
