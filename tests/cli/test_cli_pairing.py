"""``spl pair redeem`` on the device's side, against a stand-in that is not spl: what it sends, what it saves.

The whole flow against a real daemon is tests/e2e/test_device_pairing.py; these check the device's CLI alone: it
sends the code and nothing else (no credential, even with one configured), saves only a real token, and says
where the instance is wanted when it was not told.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

from cli_support import FakeDaemon, base_env, one_error_line, run_spl

TOKEN = "spl_local_sa_0123456789abcdef_" + "ab" * 32
ANSWER = {
    "object": "device_token",
    "device": "laptop",
    "token": TOKEN,
    "token_id": "f" * 64,
    "label": "device:laptop",
    "scopes": ["records:read"],
    "url": "http://127.0.0.1:9",
    "instance_did": "did:key:z6Mk",
}


def test_redeem_sends_the_code_only_and_saves_the_token(tmp_path: Path) -> None:
    env = base_env(tmp_path / "device")
    env["SPL_TOKEN"] = "spl_local_sa_elsewhere_" + "cd" * 32  # configured for something else: never sent here
    with FakeDaemon(status=201, body=json.dumps(ANSWER).encode()) as server:
        link = f"syncropel://pair?url={server.url.replace(':', '%3A').replace('/', '%2F')}&code=abcd-efgh-jkmn-pqrs"
        result = run_spl("pair", "redeem", link, "--label", "work laptop", "-o", "json", env=env)
    assert result.code == 0, result.err
    (seen,) = server.seen
    assert (seen.method, seen.path) == ("POST", "/v1/pairing/redeem")
    assert "x-api-key" not in seen.headers and "authorization" not in seen.headers
    assert json.loads(seen.body) == {"code": "abcd-efgh-jkmn-pqrs", "label": "work laptop"}
    saved = tmp_path / "device" / "token"
    assert saved.read_text().strip() == TOKEN and stat.S_IMODE(saved.stat().st_mode) == 0o600
    shown = result.json()
    assert "token" not in shown and shown["saved_to"] == str(saved)
    assert TOKEN not in result.out + result.err


def test_an_answer_without_a_token_saves_nothing(tmp_path: Path) -> None:
    env = base_env(tmp_path / "device")
    with FakeDaemon(status=201, body=json.dumps({**ANSWER, "token": "not-a-token"}).encode()) as server:
        result = run_spl("pair", "redeem", "ABCD-EFGH-JKMN-PQRS", "--url", server.url, env=env)
    assert "without a usable token" in one_error_line(result)
    assert not (tmp_path / "device" / "token").exists()


def test_a_refused_redeem_shows_the_instances_reason(tmp_path: Path) -> None:
    refusal = {"object": "error", "type": "conflict_error", "code": "PAIRING_CODE_USED", "message": "a code works once"}
    with FakeDaemon(status=409, body=json.dumps(refusal).encode()) as server:
        result = run_spl("pair", "redeem", "ABCD-EFGH-JKMN-PQRS", "--url", server.url, env=base_env(tmp_path / "d"))
    line = one_error_line(result)
    assert "PAIRING_CODE_USED" in line and "a code works once" in line
    assert not (tmp_path / "d" / "token").exists()


def test_redeem_needs_to_know_where_the_instance_is(tmp_path: Path) -> None:
    env = base_env(tmp_path / "device")
    assert "--url" in one_error_line(run_spl("pair", "redeem", "ABCD-EFGH-JKMN-PQRS", env=env))
    not_a_link = run_spl("pair", "redeem", "syncropel://pair?url=http%3A%2F%2Fx&url=http%3A%2F%2Fy", env=env)
    assert "not a pairing link" in one_error_line(not_a_link)


def test_pair_without_a_device_shows_its_help(tmp_path: Path) -> None:
    result = run_spl("pair", env=base_env(tmp_path / "home"))
    assert result.code == 0 and "--device" in result.out and "redeem" in result.out


def test_the_code_can_come_from_stdin_out_of_sight_of_ps(tmp_path: Path) -> None:
    """A code in the command line is readable by every user of the machine (``/proc/PID/cmdline``) for as long as
    the CLI starts up, time enough for another user to redeem it first; ``-`` reads it from stdin instead."""
    env = base_env(tmp_path / "device")
    with FakeDaemon(status=201, body=json.dumps(ANSWER).encode()) as server:
        result = run_spl("pair", "redeem", "-", "--url", server.url, env=env, stdin="abcd-efgh-jkmn-pqrs\nignored\n")
        empty = run_spl("pair", "redeem", "-", "--url", server.url, env=env, stdin="")
    assert result.code == 0, result.err
    (seen,) = server.seen
    assert json.loads(seen.body) == {"code": "abcd-efgh-jkmn-pqrs"}
    assert "no code on stdin" in one_error_line(empty)


def test_a_link_with_too_many_fields_is_refused_without_a_traceback(tmp_path: Path) -> None:
    """A pasted link is untrusted text: one with more fields than a pairing link has crashed with a traceback."""
    crowded = "syncropel://pair?a=1&b=2&c=3&d=4&e=5&code=ABCD-EFGH-JKMN-PQRS"
    result = run_spl("pair", "redeem", crowded, "--url", "http://127.0.0.1:9", env=base_env(tmp_path / "d"))
    assert result.code == 1 and "not a pairing link" in one_error_line(result)
    assert "Traceback" not in result.err


def test_a_hostile_offer_is_printed_inert_and_drawn_only_when_it_fits(tmp_path: Path) -> None:
    """``spl pair`` prints what the daemon answered: escapes come out inert, and a link no spl makes (too long for
    a QR code) is printed but not drawn (segno failed with a traceback)."""
    offer = {
        "device": "laptop\x1b]0;owned\x07",
        "code": "ABCD-EFGH-JKMN-PQRS\x1b[2J",
        "link": "syncropel://pair?url=" + "x" * 4000 + "&code=ABCD-EFGH-JKMN-PQRS",
        "url": "http://127.0.0.1:9",
        "scopes": ["records:read"],
    }
    env = base_env(tmp_path / "admin")
    env["SPL_TOKEN"] = TOKEN
    with FakeDaemon(status=201, body=json.dumps(offer).encode()) as server:
        result = run_spl("pair", "--device", "laptop", "--url", server.url, env=env)
    assert result.code == 0, result.err
    assert "\x1b" not in result.out + result.err and "\x07" not in result.out
    assert "█" not in result.out and "Traceback" not in result.err
