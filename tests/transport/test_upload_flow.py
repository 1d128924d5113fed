"""An upload's body holds at most its high-water mark in memory: the reader of the socket waits for the route.

Quart's own body takes every message as it arrives, so a bundle uploaded faster than the daemon spools it would
wait in memory (issue 11's 200 MB import budget). ``FlowControlledBody.put`` waits instead.
"""

from __future__ import annotations

import trio
import trio.testing

from spl.transport.app import UPLOAD_HIGH_WATER, FlowControlledBody

MIB = 1024 * 1024


async def test_a_producer_waits_once_the_high_water_mark_is_reached_and_nothing_is_lost() -> None:
    body = FlowControlledBody(None, 1 << 30)
    chunk = b"x" * MIB
    sent = 0

    async def producer() -> None:
        nonlocal sent
        for _ in range(16):
            await body.put(chunk)
            sent += 1
        body.set_complete()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        assert sent == UPLOAD_HIGH_WATER // MIB  # the next put waits: nobody has taken anything yet
        taken = 0
        async for data in body:
            taken += len(data)
            assert len(data) <= UPLOAD_HIGH_WATER + MIB  # never more than the mark plus one message
        assert taken == 16 * MIB and sent == 16


async def test_a_route_that_reads_the_body_whole_gets_all_of_it() -> None:
    """``get_data`` (the snapshot restore) awaits the body whole, within its route's limit: no waiting at the mark."""
    body = FlowControlledBody(None, 1 << 30)

    async def producer() -> None:
        for _ in range(10):
            await body.put(b"z" * MIB)
        body.set_complete()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(5):
            whole = await body
    assert len(whole) == 10 * MIB
