"""What the daemon survives in its store: a full disk and damaged pages.

- Full: writes answer 503 ``STORAGE_FULL`` (naming the fix), reads and ``/health`` keep
  answering, the daemon stays up, the next write after space is freed succeeds, and after
  ``kill -9`` and a restart every acknowledged record is there exactly once. Produced two
  ways: the ``[store] max_bytes`` cap (SQLITE_FULL from ``max_page_count``, everywhere) and
  a real full filesystem (a small tmpfs; skipped where mounting is not permitted).
- Damaged: a read that meets a damaged page fails that request with 500 ``STORE_CORRUPT``
  and nothing hangs, however many of them arrive; the rest keeps serving. A store damaged
  while the daemon was down is refused at start with one line.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import httpx
import pytest
from e2e_support import envelope, run

from spl.daemon.launcher import DaemonProcess

CLIENT_TIMEOUT = 15.0  # a read that has not answered by then is a hang
PAD = "p" * 3000


def set_store_cap(process: DaemonProcess, max_bytes: int) -> None:
    config = process.home.load_config()
    config.store_max_bytes = max_bytes
    process.home.save_config(config)


def error_body(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, f"{response.status_code}: {response.text[:300]}"
    assert response.headers.get("content-type", "").startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["object"] == "error" and body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    return body


async def emit_until_full(http: httpx.AsyncClient, thread: str) -> tuple[list[str], httpx.Response]:
    """Emit padded records one by one until the daemon answers 503; the acknowledged ids and that answer."""
    acknowledged: list[str] = []
    for clock in range(1, 100_000):
        response = await http.post("/v1/records", json=envelope(thread, clock, body={"pad": PAD}))
        if response.status_code != 201:
            return acknowledged, response
        acknowledged.append(response.json()["id"])
    raise AssertionError("the store never filled up")


async def assert_reads_still_work(http: httpx.AsyncClient, thread: str, acknowledged: list[str]) -> None:
    listed = await http.get("/v1/records", params={"limit": 10_000})
    assert listed.status_code == 200, listed.text[:300]
    assert [r["id"] for r in listed.json()["data"] if r["thread"] == thread] == acknowledged
    for path in (f"/v1/threads/{thread}", f"/v1/threads/{thread}/records", f"/v1/records/{acknowledged[-1]}"):
        response = await http.get(path)
        assert response.status_code == 200, f"{path}: {response.status_code} {response.text[:300]}"
    health = await http.get("/health")
    assert health.status_code in (200, 503) and health.json()  # answers (and may say what is degraded)


async def full_batch_is_refused(http: httpx.AsyncClient, thread: str) -> None:
    """Concurrent writes while full: every one answered 503 STORAGE_FULL, none hangs."""
    responses = await asyncio.gather(
        *(http.post("/v1/records", json=envelope(thread, 90_000 + n, body={"pad": PAD})) for n in range(8))
    )
    for response in responses:
        body = error_body(response, 503, "STORAGE_FULL")
        assert "free disk space" in body["message"].lower() and "[store] max_bytes" in body["message"]


def assert_exactly_once_after_restart(process: DaemonProcess, thread: str, acknowledged: list[str]) -> None:
    response = httpx.get(f"{process.url}/v1/records", params={"thread": thread, "limit": 10_000}, timeout=30.0)
    assert response.status_code == 200, response.text[:300]
    ids = Counter(r["id"] for r in response.json()["data"])
    assert set(acknowledged) <= set(ids), f"{len(set(acknowledged) - set(ids))} acknowledged records were lost"
    assert all(count == 1 for count in ids.values())
    after = httpx.post(f"{process.url}/v1/records", json=envelope(thread, 999_999, body={"after": True}), timeout=30)
    assert after.status_code == 201, after.text[:300]


# -- full ------------------------------------------------------------------------------------------


def test_a_store_at_its_max_bytes_answers_503_and_keeps_serving(daemon_factory: type[DaemonProcess]) -> None:
    process = daemon_factory("capped")
    set_store_cap(process, 256 * 1024)  # the fresh store is ~70 KB: room for a few dozen padded records
    process.start(port=0)
    thread = "th_capped"

    async def scenario() -> list[str]:
        async with httpx.AsyncClient(base_url=process.url, timeout=CLIENT_TIMEOUT) as http:
            acknowledged, refusal = await emit_until_full(http, thread)
            assert len(acknowledged) >= 5
            error_body(refusal, 503, "STORAGE_FULL")
            await full_batch_is_refused(http, thread)
            await assert_reads_still_work(http, thread, acknowledged)
            assert process.process is not None and process.process.poll() is None  # still up
            return acknowledged

    acknowledged = run(scenario)
    process.kill()  # kill -9 while full, then raise the cap and come back
    set_store_cap(process, 0)
    process.start()
    assert_exactly_once_after_restart(process, thread, acknowledged)


def _mount_tmpfs(where: Path, size: str) -> str | None:
    """Mount a tmpfs at ``where``; the reason it cannot be done here, or None once mounted."""
    if shutil.which("mount") is None:
        return "no mount command"
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    where.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        return f"mount -t tmpfs is not permitted here: {done.stderr.decode(errors='replace').strip()}"
    return None


@pytest.fixture
def tmpfs_daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    """A daemon whose whole home sits on an 8 MiB tmpfs (killed and unmounted afterwards)."""
    root = tmp_path / "tmpfs-home"
    reason = _mount_tmpfs(root, "8m")
    if reason is not None:
        pytest.skip(reason)
    process: DaemonProcess | None = None
    try:
        process = DaemonProcess(root)
        yield process
    finally:
        if process is not None:
            process.kill()
        subprocess.run(["umount", str(root)], check=False)


def test_a_full_filesystem_answers_503_and_writes_resume_when_space_is_freed(tmpfs_daemon: DaemonProcess) -> None:
    process = tmpfs_daemon
    process.log_path = process.home.root.parent / "tmpfs-daemon.log"  # keep the log off the full volume
    process.start(port=0)
    thread = "th_tmpfs"
    filler = process.home.root / "filler"
    with filler.open("wb") as file:  # leave ~384 KiB: a few dozen padded records
        file.write(b"\0" * (shutil.disk_usage(process.home.root).free - 384 * 1024))

    async def scenario() -> list[str]:
        async with httpx.AsyncClient(base_url=process.url, timeout=CLIENT_TIMEOUT) as http:
            acknowledged, refusal = await emit_until_full(http, thread)
            assert acknowledged
            error_body(refusal, 503, "STORAGE_FULL")
            await full_batch_is_refused(http, thread)
            await assert_reads_still_work(http, thread, acknowledged)
            filler.unlink()  # the operator frees space: no restart needed
            response = await http.post("/v1/records", json=envelope(thread, 500_000, body={"pad": PAD}))
            assert response.status_code == 201, response.text[:300]
            acknowledged.append(response.json()["id"])
            await assert_reads_still_work(http, thread, acknowledged)
            return acknowledged

    acknowledged = run(scenario)
    process.kill()
    process.start()
    assert_exactly_once_after_restart(process, thread, acknowledged)


# -- damaged ---------------------------------------------------------------------------------------


async def _write_threads(url: str, target: int, other: int) -> None:
    """``th_target`` first and ``th_other`` after, so the two live on different leaf pages."""
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:
        for thread, count in (("th_target", target), ("th_other", other)):
            for start in range(1, count + 1, 16):
                responses = await asyncio.gather(
                    *(
                        http.post("/v1/records", json=envelope(thread, clock, body={"pad": "q" * 500}))
                        for clock in range(start, min(start + 16, count + 1))
                    )
                )
                assert all(r.status_code == 201 for r in responses)


def _checkpoint(path: Path) -> None:
    """Move every page from the WAL into hub.db (the daemon may be running) and empty the WAL.

    TRUNCATE waits through the busy handler for the daemon's readers to reach the newest snapshot.
    """
    connection = apsw.Connection(str(path))
    try:
        connection.setbusytimeout(20_000)
        ((busy, _log, _done),) = list(connection.execute("PRAGMA wal_checkpoint(TRUNCATE)"))
        assert busy == 0, "could not checkpoint the WAL"
    finally:
        connection.close()


def _scribble_pages_of(path: Path, thread: str, avoid: str) -> list[int]:
    """Overwrite the middle half of the table pages that hold ``thread``'s records (never page 1)."""
    data = path.read_bytes()
    page_size = int.from_bytes(data[16:18], "big")

    def pages_of(name: str) -> set[int]:
        return {m.start() // page_size + 1 for m in re.finditer(f'"thread":"{name}"'.encode(), data)}

    candidates = sorted(pages_of(thread) - pages_of(avoid) - {1})
    assert len(candidates) >= 8, candidates
    chosen = candidates[len(candidates) // 4 : 3 * len(candidates) // 4]
    with path.open("r+b") as file:
        for page in chosen:
            file.seek((page - 1) * page_size)
            file.write(bytes([0xA5]) * page_size)
    return chosen


def test_reads_that_meet_damaged_pages_fail_alone_and_never_hang(daemon_factory: type[DaemonProcess]) -> None:
    process = daemon_factory("damaged")
    process.start(port=0)
    run(lambda: _write_threads(process.url, target=400, other=40))
    _checkpoint(process.home.db_path)
    _scribble_pages_of(process.home.db_path, "th_target", avoid="th_other")
    # One more commit: every reader sees a changed WAL and drops the pages it cached before.
    posted = httpx.post(f"{process.url}/v1/records", json=envelope("th_other", 1000), timeout=30)
    assert posted.status_code == 201, posted.text

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=process.url, timeout=CLIENT_TIMEOUT) as http:
            for _round in range(2):  # more failed reads than the root's restart intensity
                reads = [http.get("/v1/records", params={"limit": 10_000}) for _ in range(8)]
                reads += [http.get("/v1/threads/th_target") for _ in range(3)]
                reads += [http.get("/v1/threads/th_target/records", params={"limit": 10_000}) for _ in range(2)]
                responses = await asyncio.gather(*reads)  # a hang raises httpx.ReadTimeout here
                for response in responses[:8]:
                    body = error_body(response, 500, "STORE_CORRUPT")
                    assert "backup" in body["message"] and "spl doctor" in body["message"]
                for response in responses[8:11]:
                    # The fold is a projection kept at commit: reading it never replays the damaged records.
                    assert response.status_code == 200 and response.json()["record_count"] == 400, response.text
                for response in responses[11:]:
                    assert response.status_code in (200, 500), response.text[:300]
                    if response.status_code == 500:
                        error_body(response, 500, "STORE_CORRUPT")
            # What is not damaged keeps serving, reads and writes.
            other = await http.get("/v1/threads/th_other/records", params={"limit": 10_000})
            assert other.status_code == 200 and len(other.json()["data"]) == 41
            assert (await http.get("/v1/threads/th_other")).status_code == 200
            written = await http.post("/v1/records", json=envelope("th_other", 1001))
            assert written.status_code == 201, written.text
            health = await http.get("/health")
            assert health.status_code in (200, 503) and health.json()

    run(scenario, timeout=120.0)
    assert process.process is not None and process.process.poll() is None, "the daemon exited"


def test_a_store_damaged_while_stopped_is_refused_at_start_with_one_line(daemon_factory: type[DaemonProcess]) -> None:
    process = daemon_factory("damaged-at-rest")
    process.start(port=0)
    run(lambda: _write_threads(process.url, target=400, other=40))
    assert process.stop() == 0
    _scribble_pages_of(process.home.db_path, "th_target", avoid="th_other")
    log_size = process.log_path.stat().st_size
    with pytest.raises(RuntimeError, match="daemon exited"):
        process.start()
    output = process.log_path.read_text()[log_size:]
    assert "Traceback" not in output, output
    assert any("hub.db" in line and "restore" in line for line in output.splitlines()), output
