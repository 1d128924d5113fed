"""Records, threads and namespaces through the CLI, against a real auth-off daemon."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cli_support import Cli, DaemonLike

from spl.cli import records
from spl.cli.client import DaemonClient
from spl.cli.common import DaemonError
from spl.core.genesis import GENESIS_THREADS

THREAD_ID = re.compile(r"^th_[0-9a-f]{64}$")
RECORD_ID = re.compile(r"^[0-9a-f]{64}$")


def test_identity_show(cli: Cli, daemon: DaemonLike) -> None:
    payload = cli("identity", "show", "-o", "json").ok().json()
    assert payload["did"] == daemon.home.load_config().did
    assert payload["endpoint_url"] == daemon.url
    assert payload["key_fingerprint"] and payload["method"] == "did:key"
    text = cli("identity", "show").ok().out
    assert payload["did"] in text and daemon.url in text


def test_intend_with_and_without_thread(cli: Cli, daemon: DaemonLike) -> None:
    did = daemon.home.load_config().did
    minted = cli("intend", "ship it", "-o", "json").ok().json()
    assert THREAD_ID.match(minted["thread"])
    assert minted["act"] == "INTEND" and minted["actor"] == did and RECORD_ID.match(minted["id"])
    assert minted["body"] == {"goal": "ship it", "kind": "core.intent", "_v": 1}
    assert minted["clock"] > 1_600_000_000_000  # unix milliseconds, as the SDK's auto clock

    other = cli("intend", "again").ok()
    match = re.search(r"thread: (\S+)", other.out)
    assert match and THREAD_ID.match(match.group(1)) and match.group(1) != minted["thread"]
    assert re.match(r"INTEND [0-9a-f]{64}\n", other.out)

    given = cli(
        "intend", "--thread", "th_federation_demo", "--body", '{"priority": 2}', "hello from A", "-o", "json"
    ).ok()
    record = given.json()
    assert record["thread"] == "th_federation_demo"
    assert record["body"] == {"goal": "hello from A", "kind": "core.intent", "_v": 1, "priority": 2}

    by_actor = cli("intend", "-t", "th_federation_demo", "--actor", "did:example:bob", "x", "-o", "json").ok().json()
    assert by_actor["actor"] == "did:example:bob" and by_actor["signer"] == did

    bad = cli("intend", "--thread", "bad thread!", "x")
    assert bad.code == 1 and bad.err.startswith("error: INVALID_THREAD:") and len(bad.err.splitlines()) == 1


def test_emit_body_forms_and_fields(cli: Cli, tmp_path: Path) -> None:
    thread = "th_emit"
    inline = cli("emit", "--act", "do", "--thread", thread, "--body", '{"summary": "inline"}', "-o", "json").ok()
    first = inline.json()
    assert first["act"] == "DO" and first["body"] == {"summary": "inline"} and first["data_type"] == "SCALAR"

    body_file = tmp_path / "body.json"
    body_file.write_text(json.dumps({"summary": "from file", "n": [1, 2]}))
    from_file = cli("emit", "--act", "KNOW", "-t", thread, "--body", f"@{body_file}", "-o", "json").ok().json()
    assert from_file["body"] == {"summary": "from file", "n": [1, 2]}

    from_stdin = cli("emit", "--act", "LEARN", "-t", thread, "--body", "-", "-o", "json", stdin='{"summary": "stdin"}')
    assert from_stdin.ok().json()["body"] == {"summary": "stdin"}

    empty = cli("emit", "--act", "GET", "-t", thread, "-o", "json").ok().json()
    assert empty["body"] == {}

    child = cli(
        "emit",
        *("--act", "MAP", "-t", thread, "--clock", "7", "--data-type", "reference"),
        *("--parent", first["id"], "--parent", from_file["id"], "-o", "json"),
    ).ok()
    record = child.json()
    assert record["clock"] == 7 and record["data_type"] == "REFERENCE"
    assert record["parents"] == sorted([first["id"], from_file["id"]])

    again = cli("emit", "--act", "MAP", "-t", thread, "--clock", "7", "--body", '{"other": 1}')
    assert again.code == 1 and again.err.startswith("error: DUPLICATE_CLOCK:") and len(again.err.splitlines()) == 1

    text = cli("emit", "--act", "CALL", "-t", thread, "--body", '{"summary": "t"}').ok().out
    assert re.match(r"CALL [0-9a-f]{64}\n  thread: th_emit\n  clock:  \d+\n$", text)


def test_convenience_acts_and_thread_state(cli: Cli, daemon: DaemonLike) -> None:
    intent = cli("intend", "write the report", "-o", "json").ok().json()
    thread = intent["thread"]
    shown = cli("thread", "show", thread, "-o", "json").ok().json()
    assert shown["state"] == "open" and shown["record_count"] == 1

    did = cli("do", "drafted it", "--thread", thread, "-o", "json").ok().json()
    assert did["act"] == "DO" and did["body"] == {"summary": "drafted it"}
    assert cli("thread", "show", thread, "-o", "json").ok().json()["state"] == "active"

    learned = cli("learn", "drafts first", "-t", thread, "--body", '{"topic": "style"}', "-o", "json").ok().json()
    assert learned["body"] == {"summary": "drafts first", "topic": "style"}

    known = cli("know", "report sent", "--thread", thread, "--fulfills", intent["id"], "-o", "json").ok().json()
    assert known["body"] == {"summary": "report sent", "fulfills": intent["id"]}
    final = cli("thread", "show", thread, "-o", "json").ok().json()
    assert final["state"] == "done" and final["record_count"] == 4 and final["closed_by"] == known["id"]
    (participant,) = final["participants"]
    assert participant == {"actor": daemon.home.load_config().did, "record_count": 4, "role": "opener"}

    text = cli("thread", "show", thread).ok().out
    assert "state:      done" in text and "opener  4 records" in text

    missing = cli("thread", "show", "th_nothing_here")
    assert missing.code == 1 and missing.err.startswith("error: NOT_FOUND:")


def test_thread_list_and_deterministic_records(cli: Cli) -> None:
    thread = "th_determinism"
    cli("intend", "-t", thread, "goal: ünïcode ✓").ok()
    cli("emit", "--act", "KNOW", "-t", thread, "--clock", "5", "--body", '{"b": 2, "a": [1, {"z": null}]}').ok()
    cli("emit", "--act", "DO", "-t", thread, "--clock", "5", "--actor", "did:example:zed").ok()
    cli("intend", "elsewhere").ok()

    first = cli("thread", "records", thread).ok()
    second = cli("thread", "records", thread).ok()
    assert first.out == second.out and first.err == ""
    lines = first.out.splitlines()
    assert len(lines) == 3
    # sorted by (clock, actor, id): did:example:zed sorts before the instance's did:key
    assert lines[0].split()[1:4] == ["5", "DO", "did:example:zed"]
    assert lines[1].split()[1:3] == ["5", "KNOW"] and lines[1].split()[3].startswith("did:key:")
    assert lines[1].endswith('{"a":[1,{"z":null}],"b":2}')
    assert "INTEND" in lines[2] and "ünïcode ✓" in lines[2]
    for forbidden in ("sequence", "created_at", "signer", "sig"):
        assert forbidden not in first.out

    as_json = cli("thread", "records", thread, "-o", "json").ok().json()["data"]
    assert [r["sequence"] for r in as_json] == sorted(r["sequence"] for r in as_json)
    assert {r["id"] for r in as_json} == {line.split()[0] for line in lines}
    limited = cli("thread", "records", thread, "--limit", "2", "-o", "json").ok().json()["data"]
    assert limited == as_json[:2]
    since = cli("thread", "records", thread, "--since", "5", "-o", "json").ok().json()["data"]
    assert [r["act"] for r in since] == ["INTEND"]

    empty = cli("thread", "records", "th_empty")
    assert empty.ok().out == "" and "no records" in empty.err

    listed = cli("thread", "list", "-o", "json").ok().json()["data"]
    counts = {t["id"]: t["record_count"] for t in listed}
    # Two threads written here; the six reserved threads' genesis records show too (the CLI reads as the admin).
    assert counts[thread] == 3 and len(set(counts) - set(GENESIS_THREADS)) == 2
    first_page = cli("thread", "list", "--limit", "1", "-o", "json").ok().json()
    assert len(first_page["data"]) == 1 and first_page["has_more"] is True
    second_page = cli("thread", "list", "--limit", "1", "--cursor", first_page["next_cursor"], "-o", "json").ok().json()
    assert len(second_page["data"]) == 1 and second_page["data"] != first_page["data"]
    table = cli("thread", "list").ok().out.splitlines()
    assert table[0].split() == ["THREAD", "NAMESPACE", "RECORDS", "LAST_CLOCK", "UPDATED"]
    assert any(line.startswith(thread) for line in table[2:])


def test_thread_records_pages_through_everything(daemon: DaemonLike, monkeypatch: pytest.MonkeyPatch) -> None:
    client = DaemonClient(daemon.url, None)
    ids = [records.emit_record(client, act="DO", thread="th_paged", body={"n": n}, clock=n)[0]["id"] for n in range(7)]
    monkeypatch.setattr(records, "PAGE", 2)
    assert [r.id for r, _ in records.fetch_thread_records(client, "th_paged")] == ids
    assert [r.id for r, _ in records.fetch_thread_records(client, "th_paged", limit=5)] == ids[:5]
    assert [r.id for r, _ in records.fetch_thread_records(client, "th_paged", since=3)] == ids[4:]


def test_auto_clock_steps_past_collisions(daemon: DaemonLike, monkeypatch: pytest.MonkeyPatch) -> None:
    client = DaemonClient(daemon.url, None)
    monkeypatch.setattr(records, "now_ms", lambda: 1_000)
    taken, created = records.emit_record(client, act="DO", thread="th_clock", body={"n": 1})
    assert created and taken["clock"] == 1_000
    # A different record at the same clock: 409 DUPLICATE_CLOCK, retried at 1001.
    other, created = records.emit_record(client, act="DO", thread="th_clock", body={"n": 2})
    assert created and other["clock"] == 1_001
    # The identical record at 1000 already exists: a new call means a new record, at 1001 → 1002.
    again, created = records.emit_record(client, act="DO", thread="th_clock", body={"n": 1})
    assert created and again["clock"] == 1_002 and again["id"] != taken["id"]
    # An explicit clock is never changed.
    with pytest.raises(DaemonError) as caught:
        records.emit_record(client, act="DO", thread="th_clock", body={"n": 3}, clock=1_000)
    assert caught.value.code == "DUPLICATE_CLOCK" and caught.value.status == 409


def test_namespaces(cli: Cli) -> None:
    rejected = cli("emit", "--act", "DO", "-t", "th_ns", "--body", '{"namespace": "acme"}')
    assert rejected.code == 1 and rejected.err.startswith("error: NAMESPACE_REJECTED:")
    assert "spl namespace create acme" in rejected.err and len(rejected.err.splitlines()) == 1

    created = cli("namespace", "create", "acme", "--description", "Acme Corp", "-o", "json").ok().json()
    assert created["id"] == "acme" and created["status"] == "active" and RECORD_ID.match(created["record_id"])
    assert "created namespace acme/ops" in cli("namespace", "create", "acme/ops").ok().out
    duplicate = cli("namespace", "create", "acme")
    assert duplicate.code == 1 and duplicate.err.startswith("error: ALREADY_EXISTS:")
    orphan = cli("namespace", "create", "nope/child")
    assert orphan.code == 1 and orphan.err.startswith("error: PARENT_NAMESPACE_MISSING:")

    listed = {n["id"]: n for n in cli("namespace", "list", "-o", "json").ok().json()["data"]}
    assert set(listed) == {"default", "acme", "acme/ops"} and listed["acme"]["description"] == "Acme Corp"
    text = cli("namespace", "list").ok().out
    assert "acme/ops" in text and "Acme Corp" in text

    accepted = cli("emit", "--act", "DO", "-t", "th_ns", "--namespace", "acme/ops", "-o", "json").ok().json()
    assert accepted["namespace"] == "acme/ops" and accepted["body"] == {"namespace": "acme/ops"}
    assert cli("intend", "-t", "th_ns2", "-n", "acme", "g", "-o", "json").ok().json()["namespace"] == "acme"


def test_status_text_and_json(cli: Cli, daemon: DaemonLike) -> None:
    cli("intend", "count me").ok()
    payload = cli("status", "-o", "json").ok().json()
    assert payload["endpoint_url"] == daemon.url and payload["sequence"] >= 1
    assert payload["instance_did"] == daemon.home.load_config().did and payload["auth_required"] is False
    text = cli("status").ok().out
    assert f"spl daemon at {daemon.url}" in text and payload["instance_did"] in text
