"""``spl fleet sync``, the Federation block of ``spl status`` and ``spl doctor``, against real loopback daemons.

The walk-throughs are the user-facing ones: seed 002 (pair two local daemons, then go
bidirectional) and seed 000 (one thread, flag spelling, ``pairs`` alias, ``pull``). No
sleeps: every wait polls a CLI command until its answer matches, within a deadline.
"""

from __future__ import annotations

import re
import stat
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from cli_support import Cli, Result, cli_for, free_port
from fake_peer import FakePeer
from fed_support import signed

from spl.cli.client import CliError
from spl.cli.fleet import parse_duration
from spl.core.identity import Identity

PAIR_ID = re.compile(r"^pair_[0-9a-f]{16}$")
DEADLINE = 20.0
BIND_WARNING = (
    "! federation bind host 1 sync pair(s) configured but daemon is bound\n"
    "                       to 127.0.0.1. Remote peers cannot reach this\n"
    "                       instance. Restart with\n"
    "                       `spl serve --host 0.0.0.0 --daemon`.\n"
)
DEMO = "th_federation_demo"


def until(run: Callable[[], Result], done: Callable[[Result], bool], what: str) -> Result:
    """Run ``run`` until ``done`` holds for its result (each run is a subprocess with its own timeout)."""
    deadline = time.monotonic() + DEADLINE
    result = run()
    while not done(result):
        assert time.monotonic() < deadline, f"{what} not reached in {DEADLINE:.0f}s\nstdout: {result.out}\n{result.err}"
        result = run()
    return result


def did_of(url: str) -> str:
    """``curl -s $URL/v1/identity | jq -r .did`` (seed 002, step 2)."""
    did = httpx.get(f"{url}/v1/identity", timeout=10).json()["did"]
    assert isinstance(did, str)
    return did


def pair_state(cli: Cli, pair_id: str) -> dict[str, Any]:
    payload: dict[str, Any] = cli("fleet", "sync", "status", pair_id, "-o", "json").ok().json()
    return payload


def flat(text: str) -> str:
    """Doctor output with its wrapping undone (one space between words)."""
    return " ".join(text.split())


def record_ids(result: Result) -> list[str]:
    return [line.split()[0] for line in result.ok().out.splitlines()]


def test_seed_002_two_daemons_then_bidirectional(daemon_factory: Any) -> None:
    a = daemon_factory("a", insecure=False)
    b = daemon_factory("b", insecure=False)
    a.start(port=0)
    b.start(port=0)
    on_a, on_b = cli_for(a), cli_for(b)
    did_a, did_b = did_of(a.url), did_of(b.url)

    # 3. B pulls A's thread (positional spelling), with a token minted on A: loopback is not an identity.
    token_a = on_a("token", "mint", "--scopes", "federation:sync", "--label", "pull by B").ok().out.strip()
    add_on_b = ("fleet", "sync", "add", "--peer-url", a.url, did_a, DEMO, "--poll-interval", "0.2", "--token", token_a)
    added = on_b(*add_on_b).ok()
    pair_b = added.out.strip()
    assert PAIR_ID.match(pair_b), added.out
    assert f"added pair {pair_b}" in added.err and "with token" in added.err and "warning:" not in added.err

    # 4. Emit on A, observe on B.
    record = on_a("intend", "--thread", DEMO, "hello from A", "-o", "json").ok().json()
    pulled = until(
        lambda: on_b("fleet", "sync", "pull", "--thread", DEMO, "-o", "json"),
        lambda r: r.code == 0 and r.json()["data"][0]["records_pulled"] >= 1,
        "the record reaching B",
    )
    (answer,) = pulled.json()["data"]
    assert answer["pair_id"] == pair_b and answer["state"] == "running" and answer["lag_records"] == 0
    assert "pulled_now" in answer
    text = on_b("fleet", "sync", "pull", "--thread", DEMO).ok().out
    assert text.startswith(f"{pair_b} ← 127.0.0.1:{a.port} thread:{DEMO}  running: pulled ")
    assert "(1 in total)" in text
    on_b_records = on_b("thread", "records", DEMO).ok()
    assert record_ids(on_b_records) == [record["id"]] and "hello from A" in on_b_records.out

    # 5. Go bidirectional: a pair on A pulling B, with a token minted on B.
    token_b = on_b("token", "mint", "--scopes", "federation:sync", "--label", "pull by A").ok().out.strip()
    add_on_a = ("fleet", "sync", "add", "--peer-url", b.url, did_b, DEMO, "--poll-interval", "0.2", "--token", token_b)
    pair_a = on_a(*add_on_a).ok().out.strip()
    assert PAIR_ID.match(pair_a) and pair_a != pair_b
    reply = on_b("do", "--thread", DEMO, "hello from B", "-o", "json").ok().json()
    until(
        lambda: on_a("thread", "records", DEMO),
        lambda r: r.code == 0 and reply["id"] in record_ids(r),
        "B's record reaching A",
    )
    assert on_a("thread", "records", DEMO).ok().out == on_b("thread", "records", DEMO).ok().out

    # 6-7. Pair status and the Federation block.
    status = on_b("status").ok().out
    assert "\nSync pairs (1 pair: 1 running)\n" in status
    line = rf"^  {pair_b[5:13]} ← 127\.0\.0\.1:{a.port} thread:{DEMO} \d+ rec/min, lag \d+s$"
    assert re.search(line, status, re.M), status
    federation = on_b("status", "--json").ok().json()["federation"]
    assert [p["pair_id"] for p in federation["pairs"]] == [pair_b] and federation["health"]["pairs_total"] == 1

    # Troubleshooting: both daemons on this machine, so a loopback bind is no problem and doctor says so.
    doctor = on_b("doctor")
    assert doctor.code == 0, doctor.out + doctor.err
    assert "! federation bind host" not in doctor.out
    assert "✓ federation bind host 1 sync pair(s), every peer on this machine" in flat(doctor.out)
    assert "federation trust" not in doctor.out  # loopback callers are never trusted: nothing to warn about
    report = on_b("doctor", "-o", "json")
    assert report.code == 0 and report.json()["status"] == "ok"
    checks = {check["name"]: check for check in report.json()["checks"]}
    assert checks["federation bind host"]["status"] == "ok" and checks["manifest"]["status"] == "ok"


def test_seed_000_flags_token_alias_and_lifecycle(daemon_factory: Any) -> None:
    peer = daemon_factory("peer", insecure=False)  # auth on: a pull must present the token the peer minted
    config = peer.home.load_config()
    local = daemon_factory("local")
    peer.start(port=0)
    local.start(port=0)
    on_peer, here = cli_for(peer), cli_for(local)
    thread = "th_task_0042"
    token = on_peer("token", "mint", "--scopes", "federation:sync", "--label", "pair").ok().out.strip()

    added = here(
        *("fleet", "sync", "add", "--peer-did", config.did, "--peer-url", peer.url, "--thread", thread),
        *("--token", token, "--mode", "polling", "--poll-interval", "0.2", "-o", "json"),
    ).ok()
    assert token not in added.out + added.err
    pair = added.json()
    pair_id = pair["pair_id"]
    assert pair["has_token"] is True and pair["thread_id"] == thread and pair["peer_did"] == config.did
    assert pair["mode"] == "polling" and pair["poll_interval"] == 0.2 and pair["direction"] == "pull"
    token_file = local.home.root / "secrets" / "pairs" / f"{pair_id}.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600

    # A second pair without a token is refused by the peer (auth on; loopback is not an identity).
    bare = here("fleet", "sync", "add", "--peer-url", peer.url, config.did, "th_no_token", "--poll-interval", "5m")
    assert bare.ok().out.strip() != pair_id
    refused = until(
        lambda: here("fleet", "sync", "pull", "--thread", "th_no_token"),
        lambda r: "FAILING: HTTP_4XX" in r.out,
        "the tokenless pair failing",
    )
    assert refused.code == 1 and refused.err.startswith("error: 1 pair(s) failing")

    emitted = on_peer("intend", "--thread", thread, "task 42 update", "-o", "json").ok().json()
    pulled = until(
        lambda: here("fleet", "sync", "pull", "--thread", thread, "-o", "json"),
        lambda r: r.code == 0 and r.json()["data"][0]["records_pulled"] == 1,
        "the record arriving with the token",
    )
    assert pulled.json()["data"][0]["has_token"] is True
    assert record_ids(here("thread", "records", thread)) == [emitted["id"]]

    # `pairs` is `list`; neither shows the token.
    listing = here("fleet", "sync", "list", "-o", "json").ok()
    assert [p["pair_id"] for p in here("fleet", "sync", "pairs", "-o", "json").ok().json()["data"]] == [
        p["pair_id"] for p in listing.json()["data"]
    ]
    table = here("fleet", "sync", "pairs").ok().out
    assert table.startswith("PAIR_ID") and pair_id in table and "HTTP_4XX" in table
    assert "LAST_ERROR" in table and "REC/MIN" in table
    assert here("fleet", "sync", "list", "--thread", thread).ok().out.count("pair_") == 1
    assert token not in listing.out + table

    # Status of one pair, by a prefix of its id.
    detail = here("fleet", "sync", "status", pair_id[5:13]).ok().out
    for field in ("state:         running", "cursor:        s1.", "lag:", "last success:", "refused:       none"):
        assert field in detail, detail
    assert "latency:       p50 " in detail and "History (" in detail and "starting → running" in detail
    assert token not in detail
    full = pair_state(here, pair_id)
    assert full["stats"]["totals"]["records_pulled"] == 1 and full["stats"]["latency_ms"]["count"] == 1

    # pause → paused, resume → running, kick, remove → stopped.
    assert here("fleet", "sync", "pause", pair_id).ok().out == f"paused {pair_id} (state paused)\n"
    assert pair_state(here, pair_id)["state"] == "paused"
    assert re.search(rf"^  {pair_id[5:13]} ← .* PAUSED$", here("status").ok().out, re.M)
    assert here("fleet", "sync", "resume", pair_id).ok().out.startswith(f"resumed {pair_id}: pulling from s1.")
    until(
        lambda: here("fleet", "sync", "status", pair_id, "-o", "json"),
        lambda r: r.json()["state"] == "running",
        "the resumed pair running",
    )
    assert here("fleet", "sync", "kick", pair_id).ok().out.startswith(f"kicked {pair_id}: pulling now")
    assert here("fleet", "sync", "remove", pair_id).ok().out == f"removed {pair_id} (state stopped)\n"
    assert not token_file.exists()
    # Gone at once from every listing, not STOPPED until a restart.
    assert pair_id not in here("fleet", "sync", "list").ok().out
    status = here("status").ok().out
    assert "FAILING: HTTP_4XX" in status and pair_id[5:13] not in status
    assert here("fleet", "sync", "status", pair_id).code == 1
    gone = here("fleet", "sync", "kick", pair_id)
    assert gone.code == 1 and gone.err.startswith("error: NOT_FOUND:") and len(gone.err.splitlines()) == 1


def test_pair_to_a_stopped_peer_is_failing_connect_refused(daemon_factory: Any) -> None:
    peer = daemon_factory("gone")
    peer.start(port=0)
    peer_url, peer_did = peer.url, did_of(peer.url)
    peer.stop()
    local = daemon_factory("local")
    local.start(port=0)
    here = cli_for(local)
    pair_id = here("fleet", "sync", "add", "--peer-url", peer_url, peer_did, "th_archive", "--poll-interval", "0.2")
    pair_id_text = pair_id.ok().out.strip()

    pulled = until(
        lambda: here("fleet", "sync", "pull"),
        lambda r: "FAILING: CONNECT_REFUSED" in r.out,
        "CONNECT_REFUSED",
    )
    assert pulled.code == 1 and len(pulled.err.splitlines()) == 1
    status = here("status").ok().out
    assert "\nSync pairs (1 pair: 1 failing)\n" in status
    line = rf"^  {pair_id_text[5:13]} ← 127\.0\.0\.1:{peer.port} thread:th_archive FAILING: CONNECT_REFUSED$"
    assert re.search(line, status, re.M), status
    detail = here("fleet", "sync", "status", pair_id_text).ok().out
    assert "state:         failing (CONNECT_REFUSED:" in detail and "last error:    CONNECT_REFUSED:" in detail
    assert "next retry:    20" in detail
    assert pair_state(here, pair_id_text)["last_error"]["code"] == "CONNECT_REFUSED"

    doctor = here("doctor")
    assert doctor.code == 1 and "! federation bind host" not in doctor.out  # the peer is on this machine
    assert f"! federation pair {pair_id_text} FAILING: CONNECT_REFUSED pulling th_archive" in flat(doctor.out)
    assert "federation trust" not in doctor.out


def test_status_and_doctor_on_a_healthy_daemon(cli: Cli, daemon: Any) -> None:
    status = cli("status").ok().out
    assert status.endswith("Sync pairs (none)\n")
    doctor = cli("doctor")
    assert doctor.code == 0, doctor.out
    lines = doctor.out.splitlines()
    names = [line[2:22].strip() for line in lines if not line.startswith(" ")]
    for name in ("home", "identity key", "admin credential", "daemon", "manifest", "store", "auth"):
        assert name in names
    assert all(line.startswith(("✓ ", " ")) for line in lines), doctor.out
    assert "readable: 0 records" in doctor.out or "records (head sequence)" in doctor.out
    assert cli("doctor", "-o", "json").ok().json()["exit_code"] == 0

    credential = daemon.home.admin_token_path
    credential.chmod(0o644)
    try:
        exposed = cli("doctor")
        assert exposed.code == 2 and f"✗ admin credential {credential} has mode 0644" in flat(exposed.out)
        assert f"`chmod 600 {credential}`" in flat(exposed.out)
    finally:
        credential.chmod(0o600)

    nobody = cli("doctor", env={"SPL_SERVE_URL": f"http://127.0.0.1:{free_port()}"})
    assert nobody.code == 2 and "✗ daemon no daemon answers at" in flat(nobody.out)


def test_doctor_warns_about_a_loopback_bind_when_a_peer_is_elsewhere(daemon_factory: Any) -> None:
    local = daemon_factory("local")
    local.start(port=0)
    here = cli_for(local)
    added = here(
        "fleet", "sync", "add", "--peer-url", "http://192.0.2.10:9200", "did:key:zFar", "th_x", "--mode", "on-demand"
    )
    added.ok()
    doctor = here("doctor")
    assert doctor.code == 1 and BIND_WARNING in doctor.out


def test_set_changes_mode_and_interval_and_pull_says_what_was_refused(daemon_factory: Any) -> None:
    peer = FakePeer()
    with peer.running():
        local = daemon_factory("local")
        local.start(port=0)
        here = cli_for(local)
        pair_id = (
            here("fleet", "sync", "add", "--peer-url", peer.url, peer.identity.did, "th_set", "--mode", "on-demand")
            .ok()
            .out.strip()
        )
        changed = here("fleet", "sync", "set", pair_id[:10], "--mode", "polling", "--poll-interval", "2m").ok()
        assert changed.out == f"{pair_id}: polling every 2m\n"
        assert (pair_state(here, pair_id)["mode"], pair_state(here, pair_id)["poll_interval"]) == ("polling", 120.0)
        nothing = here("fleet", "sync", "set", pair_id)
        assert nothing.code == 1 and "give --mode and/or --poll-interval" in nothing.err

        peer.serve(signed(peer.identity, "th_set", 1), signed(peer.identity, "th_elsewhere", 2))
        pulled = here("fleet", "sync", "pull").ok().out
        assert "pulled 1 now" in pulled and "refused 1 (THREAD_MISMATCH 1;" in pulled, pulled


def test_doctor_accepts_a_wildcard_bind(daemon_factory: Any) -> None:
    wide = daemon_factory("wide", insecure=False, extra_args=("--host", "0.0.0.0"))
    wide.start(port=0)
    here = cli_for(wide)
    here("fleet", "sync", "add", "--peer-url", f"http://127.0.0.1:{free_port()}", "did:key:zPeer", "th_x").ok()
    doctor = here("doctor")
    assert "! federation bind host" not in doctor.out
    assert "✓ federation bind host 1 sync pair(s); peers can reach this daemon on " in flat(doctor.out)


def test_parse_duration() -> None:
    assert [parse_duration(text) for text in ("1.5", "30s", "5m", "500ms", "1h", ".5", "2 min")] == [
        1.5,
        30.0,
        300.0,
        0.5,
        3600.0,
        0.5,
        120.0,
    ]
    with pytest.raises(CliError, match="is not a duration"):
        parse_duration("soon")


def test_usage_errors_are_one_line(cli: Cli) -> None:
    did = Identity.generate().did  # some other steward's DID (a pair with this daemon's own is refused)
    cases = {
        ("--peer-url", "http://127.0.0.1:1", did, DEMO, "--poll-interval", "5q"): "is not a duration",
        ("--peer-url", "http://127.0.0.1:1", DEMO): "is not a DID",
        ("--peer-url", "http://127.0.0.1:1", did): "missing the thread",
        ("--peer-url", "http://127.0.0.1:1", did, DEMO, "--mode", "fast"): "is not a mode",
        ("--peer-url", "http://127.0.0.1:1", did, DEMO, "--poll-interval", "0.001"): "INVALID_POLL_INTERVAL",
        ("--peer-url", "ftp://x", did, DEMO): "peer_url must be",
        ("--peer-url", "http://127.0.0.1:1", "--peer-did", did, "--thread", DEMO, "--token", "@/nonexistent"): (
            "--token: cannot read"
        ),
    }
    for args, message in cases.items():
        result = cli("fleet", "sync", "add", *args)
        assert result.code == 1 and result.err.startswith("error: ") and message in result.err, (args, result.err)
        assert len(result.err.splitlines()) == 1 and "Traceback" not in result.err
    for command in ("status", "pause", "resume", "kick", "remove"):
        result = cli("fleet", "sync", command, "nope")
        assert result.code == 1
        assert result.err == "error: no pair matches 'nope'; list pairs with `spl fleet sync list`\n"
    nothing = cli("fleet", "sync", "pull", "--thread", DEMO)
    assert nothing.code == 1 and nothing.err.startswith("error: no sync pairs on thread th_federation_demo")
    assert cli("fleet", "sync", "list").ok().out.startswith("no sync pairs")

    # A peer off loopback while this daemon is bound to 127.0.0.1: the daemon's warning is passed on.
    remote = cli("fleet", "sync", "add", "--peer-url", "http://198.51.100.7:9", did, DEMO, "--mode", "on-demand")
    assert PAIR_ID.match(remote.ok().out.strip())
    warnings = [line for line in remote.err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "bound to 127.0.0.1" in warnings[0] and "--host 0.0.0.0" in warnings[0]
    for command in (("fleet",), ("fleet", "sync"), ("fleet", "sync", "add"), ("fleet", "sync", "pull"), ("doctor",)):
        help_text = cli(*command, "--help").ok().out
        assert "Usage: " in help_text and " ".join(command) in help_text
    # The walk-through's step: mint on the peer, --token here.
    add_help = " ".join(cli("fleet", "sync", "add", "--help").ok().out.replace("│", " ").split())
    assert "spl token mint --scopes federation:sync" in add_help and '--token "$TOKEN"' in add_help, add_help
    assert "--token" in add_help and "needed unless the peer runs with --insecure-localhost" in add_help, add_help
