"""Acknowledged means durable: ``kill -9`` after (and during) a concurrent write load.

Several SDK clients write at once; once 300 records are acknowledged the daemon is
killed with SIGKILL while the writers are still sending. After a restart on the same
home and port every acknowledged id is stored exactly once, sequences are unique and
increasing (and new ones continue above the old head), and SSE subscribers that resume
with their ``Last-Event-ID`` receive every later record exactly once.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import httpx
from e2e_support import StreamGate, Watch, run
from syncropel import Client, EmitResult, Identity

from spl.daemon.launcher import DaemonProcess

WRITERS = 6
TARGET = 300
SHARED = "d.shared"


def _writer_thread(writer: int) -> str:
    return f"d.writer-{writer}"


async def _fetch_all(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await http.get("/v1/records", params={"limit": 10_000})
    assert response.status_code == 200, response.text
    records = response.json()["data"]
    assert isinstance(records, list)
    return records


async def _thread(http: httpx.AsyncClient, thread: str) -> list[dict[str, Any]]:
    response = await http.get(f"/v1/threads/{thread}/records", params={"limit": 10_000})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert isinstance(data, list)
    return data


def test_acknowledged_records_survive_kill_9(daemon_factory: type[DaemonProcess]) -> None:
    process = daemon_factory("durable")
    process.start(port=0)
    port = process.port

    async def scenario() -> None:
        acked: dict[str, EmitResult] = {}
        enough = asyncio.Event()
        failures: list[str] = []
        records = Watch()
        errors = Watch()
        opens = Watch()

        async def writer(index: int) -> None:
            async with Client(
                endpoint=process.url, identity=Identity.static(f"did:test:writer-{index}"), max_retries=0, timeout=5.0
            ) as client:
                step = 0
                while True:
                    thread = SHARED if step % 2 == 0 else _writer_thread(index)
                    result = await client.emit(
                        act="PUT", kind="x.e2e.durable", body={"writer": index, "step": step}, thread=thread
                    )
                    if not result.success:
                        failures.append(result.error or "")
                        return  # the daemon is gone
                    assert result.record_id is not None
                    acked[result.record_id] = result
                    if len(acked) >= TARGET:
                        enough.set()
                    step += 1

        async with (
            StreamGate(port) as gate,
            Client(endpoint=gate.url, identity=Identity.static("did:test:watcher")) as watcher,
        ):
            # since_clock=0 replays anything committed before the stream registered: nothing is missed.
            subscription = watcher.subscribe(
                SHARED,
                records,
                since_clock=0,
                on_error=errors,
                on_open=opens,
                reconnect_base_s=0.05,
                reconnect_max_s=0.5,
            )
            await opens.wait_for_count(1, 5.0, "on_open")
            writers = [asyncio.create_task(writer(index)) for index in range(WRITERS)]
            await asyncio.wait_for(enough.wait(), 30.0)
            await asyncio.to_thread(process.kill)  # SIGKILL while the writers are still sending
            await asyncio.wait_for(asyncio.gather(*writers), 30.0)
            assert len(failures) == WRITERS and len(acked) >= TARGET
            await errors.wait_for_count(1, 10.0, "the subscriber noticing the kill")
            cursor_at_kill = subscription.cursor
            requests_before_restart = len(gate.requests)

            await asyncio.to_thread(process.start)
            assert process.port == port

            async with httpx.AsyncClient(base_url=process.url, timeout=30.0) as http:
                everything = await _fetch_all(http)
                ids = Counter(record["id"] for record in everything)
                assert set(acked) <= set(ids), f"{len(set(acked) - set(ids))} acknowledged records were lost"
                assert all(count == 1 for count in ids.values())
                ours = [r for r in everything if r["thread"] == SHARED or r["thread"].startswith("d.writer-")]
                unacked = {r["id"] for r in ours} - set(acked)
                assert len(unacked) <= WRITERS  # at most one in-flight request per writer got committed
                sequences = [record["sequence"] for record in everything]
                assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
                listed = []
                for thread in [SHARED, *(_writer_thread(i) for i in range(WRITERS))]:
                    page = await _thread(http, thread)
                    assert [r["sequence"] for r in page] == sorted(r["sequence"] for r in page)
                    listed += [r["id"] for r in page]
                assert Counter(listed) == Counter(r["id"] for r in ours)
                semaphore = asyncio.Semaphore(16)

                async def lookup(rid: str) -> dict[str, Any]:
                    async with semaphore:
                        response = await http.get(f"/v1/records/{rid}")
                    assert response.status_code == 200, rid
                    data = response.json()
                    assert isinstance(data, dict)
                    return data

                fetched = await asyncio.gather(*(lookup(rid) for rid in acked))
                for record in fetched:
                    assert record["id"] in acked and record["clock"] == acked[record["id"]].clock

                # After the restart: new sequences continue above the old head.
                head = max(sequences)
                async with Client(endpoint=process.url, identity=Identity.static("did:test:after")) as client:
                    later = [
                        await client.emit(act="PUT", kind="x.e2e.durable", body={"after": n}, thread=SHARED)
                        for n in range(20)
                    ]
                assert all(result.success for result in later)
                shared = await _thread(http, SHARED)
                by_id = {r["id"]: r for r in shared}
                assert all(by_id[result.record_id]["sequence"] > head for result in later)

                # The subscriber resumed with its Last-Event-ID and got every record on the thread once.
                expected = [r["id"] for r in shared]
                await records.wait_until(
                    lambda items: {r["id"] for r in items} >= set(expected), 20.0, "every shared record"
                )
                delivered = [r["id"] for r in records.items]
                assert delivered == expected, "duplicates, gaps or reordering in the resumed stream"
                resumed = gate.requests.items[requests_before_restart:]
                assert any(head_.headers.get("last-event-id") == cursor_at_kill for head_ in resumed)
                assert all("since_clock" not in head_.target for head_ in resumed)

                # A raw resume from a cursor in the middle replays exactly what follows it, then goes live.
                middle = shared[len(shared) // 2]
                tail = [r["id"] for r in shared if r["sequence"] > middle["sequence"]]
                async with http.stream(
                    "GET", f"/v1/threads/{SHARED}/watch", headers={"last-event-id": str(middle["sequence"])}
                ) as response:
                    assert response.status_code == 200
                    frames: list[str] = []
                    pending = b""
                    live_id: str | None = None
                    async for chunk in response.aiter_raw():
                        pending += chunk
                        while b"\n\n" in pending:
                            frame, pending = pending.split(b"\n\n", 1)
                            if frame.startswith(b"event: record.created"):
                                frames.append(json.loads(frame.split(b"data: ", 1)[1])["id"])
                        if len(frames) == len(tail) and live_id is None:
                            posted = await http.post(
                                "/v1/records",
                                json={
                                    "act": "PUT",
                                    "actor": "did:test:raw",
                                    "body": {"live": True},
                                    "clock": 1,
                                    "thread": SHARED,
                                },
                            )
                            assert posted.status_code == 201, posted.text
                            live_id = posted.json()["id"]
                        if live_id is not None and live_id in frames:
                            break
                assert frames == tail + [live_id]
            subscription.close()

    run(scenario, timeout=90.0)
