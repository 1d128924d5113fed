"""Issue 11, "Snapshots": ``spl thread snapshot`` / ``spl thread restore`` between two real daemons with auth on.

One pair of daemons for the whole module (``source`` and ``target``); each test writes its own threads, so
the tests share nothing but the processes. What is checked is what an operator relies on: a restored thread
prints byte-identical ``spl thread records`` on both daemons, a second restore only de-duplicates, reserved
threads (the instance's configuration) are served only to admin and never restored, and a tampered snapshot
is refused whole with nothing written.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_support import Cli, cli_for
from e2e_support import mint_token

from spl.daemon.launcher import DaemonProcess

JSONL = {"content-type": "application/x-ndjson"}


class Pair:
    def __init__(self, root: Path) -> None:
        self.source = DaemonProcess(root / "source", insecure=False)
        self.target = DaemonProcess(root / "target", insecure=False)
        for process in (self.source, self.target):
            process.start(port=0)
        self.on_source: Cli = cli_for(self.source)
        self.on_target: Cli = cli_for(self.target)

    def admin(self, process: DaemonProcess) -> dict[str, str]:
        return {"x-api-key": process.admin_token}

    def emit(self, thread: str, clock: int, **body: Any) -> str:
        record = {
            "act": "PUT",
            "actor": "did:test:snap",
            "thread": thread,
            "clock": clock,
            "body": body or {"n": clock},
        }
        response = httpx.post(
            f"{self.source.url}/v1/records",
            json=record,
            headers={**self.admin(self.source), "content-type": "application/json"},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def restore(self, data: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.post(
            f"{self.target.url}/v1/threads/restore",
            content=data,
            headers={**(headers or self.admin(self.target)), **JSONL},
            timeout=30,
        )


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    both = Pair(tmp_path_factory.mktemp("snapshots"))
    try:
        yield both
    finally:
        both.source.kill()
        both.target.kill()


def test_snapshot_then_restore_prints_the_same_thread_on_both(pair: Pair, tmp_path: Path) -> None:
    ids = {pair.emit("th_snap", clock) for clock in range(1, 6)}
    pair.emit("th_elsewhere", 1)
    out = tmp_path / "snap.snap.jsonl"
    written = pair.on_source("thread", "snapshot", "th_snap", "--out", str(out)).ok()
    assert written.err.strip() == f"wrote 5 records of 1 thread to {out}"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    lines = out.read_bytes().splitlines()
    assert {json.loads(line)["id"] for line in lines[:-1]} == ids
    manifest = json.loads(lines[-1])
    assert (manifest["object"], manifest["threads"], manifest["record_count"]) == ("thread_snapshot", ["th_snap"], 5)
    streamed = pair.on_source("thread", "snapshot", "th_snap").ok().out.encode().splitlines()
    assert streamed[:-1] == lines[:-1]

    restored = pair.on_target("thread", "restore", str(out), "-o", "json").ok().json()
    assert restored == {
        "object": "restore_summary",
        "records_inspected": 5,
        "records_inserted": 5,
        "records_deduplicated": 0,
        "records_failed": 0,
        "refusals_by_reason": {},
        "threads": ["th_snap"],
    }
    again = pair.on_target("thread", "restore", str(out)).ok().out
    assert "inserted:     0" in again and "deduplicated: 5" in again
    source_text = pair.on_source("thread", "records", "th_snap").ok().out
    assert source_text and source_text == pair.on_target("thread", "records", "th_snap").ok().out
    assert pair.on_target("thread", "records", "th_elsewhere").ok().out == ""


def test_reserved_threads_are_admin_only_and_never_restored(pair: Pair) -> None:
    reader = mint_token(pair.source, ["records:read"], "snapshot-reader")
    url = f"{pair.source.url}/v1/threads/snapshot"
    refused = httpx.get(url, params={"threads": "th_snap,th_federation_pairs"}, headers={"x-api-key": reader})
    assert refused.status_code == 403 and refused.json()["code"] == "SCOPE_FORBIDDEN"
    assert "th_federation_pairs is a reserved thread" in refused.json()["message"]
    plain = httpx.get(url, params={"threads": "th_nothing_here"}, headers={"x-api-key": reader})
    assert plain.status_code == 200 and json.loads(plain.text.splitlines()[-1])["record_count"] == 0

    as_admin = httpx.get(url, params={"threads": "th_namespace_registry"}, headers=pair.admin(pair.source))
    assert as_admin.status_code == 200, as_admin.text
    manifest = json.loads(as_admin.text.splitlines()[-1])
    assert manifest["threads"] == ["th_namespace_registry"] and manifest["source_did"].startswith("did:key:")
    answer = pair.restore(as_admin.content)
    assert answer.status_code == 403 and answer.json()["code"] == "RESERVED_THREAD"
    assert "spl import" in answer.json()["message"]

    not_admin = mint_token(pair.target, ["records:read", "records:write"], "not-admin")
    assert pair.restore(as_admin.content, {"x-api-key": not_admin}).status_code == 403


def _flip_signature(data: bytes) -> bytes:
    """One character of the last record's signature changed (base64url, so still a well-formed signature)."""
    at = data.rindex(b'"sig":"') + len(b'"sig":"') + 5
    return data[:at] + (b"A" if data[at : at + 1] != b"A" else b"B") + data[at + 1 :]


@pytest.mark.parametrize(
    ("tamper", "code", "says"),
    [
        (lambda data: data.replace(b'"n":3', b'"n":4'), "SNAPSHOT_MALFORMED", "ID_MISMATCH"),  # the body changed
        (_flip_signature, "SIGNATURE_INVALID", "signature verification failed"),
        (lambda data: data.replace(b'"record_count":3', b'"record_count":2'), "SNAPSHOT_MALFORMED", "counts 2"),
    ],
)
def test_a_tampered_snapshot_is_refused_and_nothing_is_written(
    pair: Pair, tamper: Callable[[bytes], bytes], code: str, says: str
) -> None:
    thread = f"th_tamper_{says.split()[0].lower()}"
    for clock in range(1, 4):
        pair.emit(thread, clock)
    taken = httpx.get(
        f"{pair.source.url}/v1/threads/snapshot", params={"threads": thread}, headers=pair.admin(pair.source)
    )
    assert taken.status_code == 200
    changed = tamper(taken.content)
    assert changed != taken.content
    answer = pair.restore(changed)
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert (error["object"], error["code"]) == ("error", code)
    assert "line " in error["message"] and says in error["message"]
    assert pair.on_target("thread", "records", thread).ok().out == ""
    assert pair.restore(taken.content).json()["records_inserted"] == 3  # the untouched file still restores
