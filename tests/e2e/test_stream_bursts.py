"""A burst larger than one SSE write (COALESCE records) reaches a watcher whole, in order.

Regression: the coalescing loop took one record past its limit and dropped it, so a
continuous pair skipped it for good (found by a 100x soak with pushed batches).
"""

from __future__ import annotations

import json

import httpx
import pytest
import trio
from fed_support import signed

from spl.core.identity import Identity
from spl.daemon.launcher import DaemonProcess
from spl.transport.routes_threads import COALESCE
from spl.transport.sse import SseParser

BURST = COALESCE * 3 + 7


# Leaving an httpx stream early makes httpx's nested async generators warn when collected.
@pytest.mark.filterwarnings("ignore:Async generator 'http:ResourceWarning")
async def test_a_burst_bigger_than_one_write_arrives_whole(daemon: DaemonProcess) -> None:
    identity = Identity.generate()
    records = [signed(identity, "th_burst", clock) for clock in range(1, BURST + 1)]
    received: list[str] = []
    opened = trio.Event()
    with trio.fail_after(60):
        async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as client, trio.open_nursery() as nursery:

            async def watch() -> None:
                parser = SseParser()
                async with client.stream("GET", f"{daemon.url}/v1/threads/th_burst/watch") as response:
                    opened.set()
                    async for chunk in response.aiter_bytes():
                        for event in parser.feed(chunk):
                            if event.event == "record.created":
                                received.append(json.loads(event.data)["id"])
                        if len(received) >= BURST:
                            return

            nursery.start_soon(watch)
            await opened.wait()
            # One push = one commit = one fan-out of BURST records into the watcher's buffer.
            push = await client.post(f"{daemon.url}/v1/sync/records", json={"records": records})
            assert push.status_code == 200 and len(push.json()["accepted"]) == BURST
    assert received == [record["id"] for record in records]
